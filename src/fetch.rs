//! Brings one object from the store into the mirror: the one write path shared by
//! prefetch and the filesystem. Large objects come in ranged parts in parallel,
//! every part pinned to the ETag of the first response; interrupted bodies resume
//! where they stopped; a stalled body is timed out; nothing is committed unless
//! every byte of one version arrived.

use std::hash::BuildHasher;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::mirror::{LocalStatus, Mirror, MirrorError, Record, TempFile};
use crate::store::{ETag, GetRequest, Key, ObjectStore, StoreError};

/// Times one object is fetched from the start when it changes mid-download or its
/// bytes contradict its MD5 ETag or the checksum sent with them, before the key fails.
pub const WHOLE_ATTEMPTS: u32 = 3;

/// Tuning of downloads.
#[derive(Clone, Debug)]
pub struct FetchConfig {
    /// Smallest ranged part; objects larger than this are fetched in parts.
    pub part_size: u64,
    /// Largest ranged part.
    pub max_part_size: u64,
    /// Parts an object is split into when that keeps them between the two sizes:
    /// enough streams in parallel for throughput, few requests per object (each
    /// request costs a round trip, and on some servers a pass over the object).
    pub parts_per_object: u64,
    /// Attempts per part when the body fails (reset, cut short, stalled); a request
    /// that fails before its body is retried by the store itself (`--max-attempts`).
    pub max_attempts: u32,
    /// Longest wait for the next chunk of a body before it counts as stalled.
    pub stall_timeout: Duration,
    /// Requests in flight at once, across all objects.
    pub max_requests: usize,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            part_size: 8 << 20,
            max_part_size: 64 << 20,
            parts_per_object: 4,
            max_attempts: 3,
            stall_timeout: Duration::from_secs(30),
            max_requests: 64,
        }
    }
}

/// Failures of one download.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error("the download was dropped: the process is shutting down")]
    ShuttingDown,
    #[error("{key}: the object kept changing during the download")]
    Unstable { key: Key },
    #[error("{key}: the bytes received do not match the object's ETag {etag} (MD5 {md5})")]
    Corrupt { key: Key, etag: ETag, md5: String },
}

/// What `Fetcher::ensure` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The mirror already held this version (perhaps fetched meanwhile by another process).
    Current,
    /// Downloaded and committed.
    Downloaded { etag: ETag, size: u64 },
}

/// Watches a download as it goes, so a reader can be served before it ends.
pub trait Observer: Send + Sync {
    /// An attempt started writing into this file (a handle on the temp file, which
    /// becomes the mirrored file on commit).
    fn started(&self, file: std::fs::File);
    /// Bytes `offset..offset + len` of the object are now in that file.
    fn filled(&self, offset: u64, len: u64);
}

/// The version of an object that a download is pinned to.
#[derive(Clone, Debug)]
struct Version {
    etag: ETag,
    size: u64,
    last_modified: SystemTime,
    /// Whether the ETag is the MD5 of the bytes, so a download can be checked against it.
    etag_is_md5: bool,
}

/// Downloads objects into a mirror, sharing one budget of requests. Cheap to clone.
#[derive(Clone)]
pub struct Fetcher {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    mirror: Arc<Mirror>,
    config: FetchConfig,
    requests: Semaphore,
    bytes: AtomicU64,
}

impl Fetcher {
    pub fn new(store: Arc<dyn ObjectStore>, mirror: Arc<Mirror>, config: FetchConfig) -> Fetcher {
        let requests = Semaphore::new(config.max_requests.max(1));
        Fetcher {
            inner: Arc::new(Inner {
                store,
                mirror,
                config,
                requests,
                bytes: AtomicU64::new(0),
            }),
        }
    }

    /// Bytes received so far, across all downloads.
    pub fn bytes_received(&self) -> u64 {
        self.inner.bytes.load(Ordering::Relaxed)
    }

    pub fn mirror(&self) -> &Arc<Mirror> {
        &self.inner.mirror
    }

    /// The tuning this fetcher was made with.
    pub fn config(&self) -> &FetchConfig {
        &self.inner.config
    }

    /// Makes the mirror hold `key` at `rel` at the listed ETag, downloading it unless
    /// the file there is already that version. Holds the path's cross-process lock,
    /// so a mount and a prefetch never download the same object at once.
    pub async fn ensure(
        &self,
        key: &Key,
        etag: &ETag,
        size: u64,
        rel: &Path,
    ) -> Result<Outcome, FetchError> {
        self.ensure_observed(key, etag, size, rel, None).await
    }

    /// `ensure`, telling `observer` where the bytes land as they arrive. With an
    /// observer the download is pinned to `etag`: a reader that opened one version
    /// never gets another (a changed object fails with `StoreError::Changed`).
    pub async fn ensure_observed(
        &self,
        key: &Key,
        etag: &ETag,
        size: u64,
        rel: &Path,
        observer: Option<Arc<dyn Observer>>,
    ) -> Result<Outcome, FetchError> {
        let mirror = &self.inner.mirror;
        let _lock = match mirror.try_lock_path(rel)? {
            Some(lock) => lock,
            None => {
                let mirror = Arc::clone(mirror);
                let rel = rel.to_path_buf();
                tokio::task::spawn_blocking(move || mirror.lock_path(&rel))
                    .await
                    .map_err(joined)??
            }
        };
        if mirror.status(rel, key.as_str(), etag.as_str(), size) == LocalStatus::Current {
            return Ok(Outcome::Current);
        }
        let pin = observer.as_ref().map(|_| etag.clone());
        let version = self.download(key, size, rel, pin, observer).await?;
        Ok(Outcome::Downloaded {
            etag: version.etag,
            size: version.size,
        })
    }

    /// Downloads the current version of `key` (or the `pin`ned one) and commits it
    /// at `rel`. An unpinned object that changes mid-download is started over, and
    /// so is a download whose bytes do not match an MD5 ETag, a bounded number of
    /// times.
    async fn download(
        &self,
        key: &Key,
        listed_size: u64,
        rel: &Path,
        pin: Option<ETag>,
        observer: Option<Arc<dyn Observer>>,
    ) -> Result<Version, FetchError> {
        let mut last = FetchError::Unstable { key: key.clone() };
        for _ in 0..WHOLE_ATTEMPTS {
            let tmp = Arc::new(self.inner.mirror.create_temp()?);
            if let Some(observer) = &observer {
                observer.started(tmp.reopen()?);
            }
            match self
                .fill(&tmp, key, listed_size, pin.clone(), &observer)
                .await
            {
                Ok(version) => {
                    let tmp = Arc::try_unwrap(tmp).expect("all part tasks are finished");
                    match self.check_and_commit(tmp, key, rel, &version).await? {
                        None => return Ok(version),
                        Some(md5) => {
                            tracing::warn!(%key, etag = %version.etag, md5, "body does not match its ETag; fetching again");
                            last = FetchError::Corrupt {
                                key: key.clone(),
                                etag: version.etag,
                                md5,
                            };
                        }
                    }
                }
                Err(FetchError::Store(StoreError::Changed { .. })) if pin.is_none() => {
                    tracing::info!(%key, "object changed during download; starting over");
                    last = FetchError::Unstable { key: key.clone() };
                }
                // Some bytes already written are wrong, and nobody knows which: resuming
                // would keep them, so the whole object is fetched again.
                Err(FetchError::Store(e @ StoreError::Mismatch(_))) => {
                    tracing::warn!(%key, "{e}; fetching again");
                    last = FetchError::Store(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Hashes the filled temp file and commits it with its record, unless its MD5
    /// contradicts an MD5 ETag: then the temp file is dropped (removed) and the MD5
    /// that was found is returned.
    async fn check_and_commit(
        &self,
        tmp: TempFile,
        key: &Key,
        rel: &Path,
        version: &Version,
    ) -> Result<Option<String>, FetchError> {
        let mirror = Arc::clone(&self.inner.mirror);
        let rel: PathBuf = rel.to_path_buf();
        let version = version.clone();
        let key = key.as_str().to_string();
        let result = tokio::task::spawn_blocking(move || {
            let md5 = tmp.md5()?;
            if version.etag_is_md5 && !etag_is(&version.etag, &md5) {
                return Ok(Some(md5));
            }
            let record = Record {
                key,
                etag: version.etag.as_str().to_string(),
                size: version.size,
                md5: Some(md5),
                corrupt: false,
            };
            mirror
                .commit(tmp, &rel, &record, version.last_modified)
                .map(|()| None)
        })
        .await
        .map_err(joined)??;
        Ok(result)
    }

    /// The size of the ranged parts of an object of `size` bytes.
    fn part_size_for(&self, size: u64) -> u64 {
        let config = &self.inner.config;
        let min = config.part_size.max(1);
        let part = size
            .div_ceil(config.parts_per_object.max(1))
            .clamp(min, config.max_part_size.max(min));
        // Whole MiB, so parts line up with the kernel's and the disk's blocks.
        if part >= 1 << 20 {
            part.div_ceil(1 << 20) << 20
        } else {
            part
        }
    }

    /// Fills `tmp` with one version of the object. The other parts start as soon
    /// as the first response has fixed the version, not after the first part.
    async fn fill(
        &self,
        tmp: &Arc<TempFile>,
        key: &Key,
        listed_size: u64,
        pin: Option<ETag>,
        observer: &Option<Arc<dyn Observer>>,
    ) -> Result<Version, FetchError> {
        let min = self.inner.config.part_size.max(1);
        if listed_size <= min {
            return self.read_range(tmp, key, None, pin, observer, None).await;
        }
        let part = self.part_size_for(listed_size);
        let (found, version_known) = tokio::sync::oneshot::channel();
        let mut parts = JoinSet::new();
        {
            let (this, tmp, key, observer) =
                (self.clone(), Arc::clone(tmp), key.clone(), observer.clone());
            parts.spawn(async move {
                this.read_range(&tmp, &key, Some(0..part), pin, &observer, Some(found))
                    .await
            });
        }
        let version = match version_known.await {
            Ok(version) => version,
            // The first part failed before any response: its error says why.
            Err(_) => {
                return parts
                    .join_next()
                    .await
                    .expect("the first part was spawned")
                    .expect("part task does not panic");
            }
        };
        if version.size > part {
            tmp.set_len(version.size)?;
        }
        let mut start = part;
        while start < version.size {
            let end = (start + part).min(version.size);
            let (this, tmp, key, etag) = (
                self.clone(),
                Arc::clone(tmp),
                key.clone(),
                version.etag.clone(),
            );
            let observer = observer.clone();
            parts.spawn(async move {
                this.read_range(&tmp, &key, Some(start..end), Some(etag), &observer, None)
                    .await
            });
            start = end;
        }
        while let Some(result) = parts.join_next().await {
            if let Err(e) = result.expect("part task does not panic") {
                parts.abort_all();
                while parts.join_next().await.is_some() {}
                return Err(e);
            }
        }
        Ok(version)
    }

    /// Reads `range` (the whole object if `None`) into `tmp` at the same offsets,
    /// resuming after a failed body from the last byte written, pinned to one ETag.
    /// `found` hears the version as soon as the first response is accepted.
    async fn read_range(
        &self,
        tmp: &TempFile,
        key: &Key,
        range: Option<Range<u64>>,
        pinned: Option<ETag>,
        observer: &Option<Arc<dyn Observer>>,
        mut found: Option<tokio::sync::oneshot::Sender<Version>>,
    ) -> Result<Version, FetchError> {
        let config = &self.inner.config;
        let mut pos = range.as_ref().map_or(0, |r| r.start);
        let mut end = range.as_ref().map(|r| r.end);
        let mut version: Option<Version> = None;
        let mut pinned = pinned;
        let mut attempt = 1;
        loop {
            // Whether the server answered, so a failure came from the body.
            let mut answered = false;
            if end.is_some_and(|end| pos >= end) {
                // Everything arrived and then the body failed: its bytes are suspect, and
                // an empty range cannot be asked for, so the range starts over.
                pos = range.as_ref().map_or(0, |r| r.start);
            }
            let request = GetRequest {
                key: key.clone(),
                // Only the very first request of an unranged read goes without a range.
                range: if range.is_none() && version.is_none() {
                    None
                } else {
                    Some(pos..end.expect("end is known once a response arrived"))
                },
                if_match: pinned.clone(),
            };
            let result = async {
                let _permit = self
                    .inner
                    .requests
                    .acquire()
                    .await
                    .expect("semaphore is never closed");
                let mut response = self.inner.store.get(request).await?;
                answered = true;
                let v = version.get_or_insert_with(|| Version {
                    etag: response.etag.clone(),
                    size: response.object_size,
                    last_modified: response.last_modified,
                    etag_is_md5: response.etag_is_md5,
                });
                if response.etag != v.etag {
                    return Err(FetchError::Store(StoreError::Changed {
                        bucket: self.inner.store.bucket().to_string(),
                        key: key.as_str().to_string(),
                    }));
                }
                pinned = Some(v.etag.clone());
                let stop =
                    *end.get_or_insert(v.size.min(range.as_ref().map_or(u64::MAX, |r| r.end)));
                if response.start != pos || response.content_length != stop - pos {
                    return Err(StoreError::Body(format!(
                        "asked for bytes {pos}..{stop}, got {} bytes at {}",
                        response.content_length, response.start
                    ))
                    .into());
                }
                if let Some(found) = found.take() {
                    let _ = found.send(v.clone());
                }
                loop {
                    let next =
                        tokio::time::timeout(config.stall_timeout, response.body.next_chunk())
                            .await;
                    let chunk = match next {
                        Err(_) => {
                            return Err(StoreError::Body(format!(
                                "stalled: no data for {:?} at byte {pos}",
                                config.stall_timeout
                            ))
                            .into());
                        }
                        Ok(chunk) => chunk?,
                    };
                    let Some(chunk) = chunk else { break };
                    if pos + chunk.len() as u64 > stop {
                        return Err(StoreError::Body(format!(
                            "body longer than the {stop} bytes promised"
                        ))
                        .into());
                    }
                    tmp.write_at(&chunk, pos)?;
                    if let Some(observer) = observer {
                        observer.filled(pos, chunk.len() as u64);
                    }
                    pos += chunk.len() as u64;
                    self.inner
                        .bytes
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
                if pos != stop {
                    return Err(
                        StoreError::Body(format!("body ended at byte {pos} of {stop}")).into(),
                    );
                }
                // A finished part of a large object goes to disk while the others arrive.
                if let Some(part) = &range {
                    tmp.start_writeback(part.start..stop);
                }
                Ok(())
            }
            .await;
            match result {
                Ok(()) => return Ok(version.expect("set by the response")),
                // A failed request was already retried by the store (the SDK's retry);
                // trying it again here would multiply the attempts.
                Err(FetchError::Store(e))
                    if answered && e.is_transient() && attempt < config.max_attempts =>
                {
                    tracing::info!(%key, attempt, at = pos, error = %e, "body failed; resuming");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(FetchError::Store(StoreError::Body(e))) if answered => {
                    return Err(StoreError::Body(format!("{e} (after {attempt} attempts)")).into());
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A blocking task that did not finish: a panic goes on up; a task the runtime
/// dropped at shutdown before it ran (its temp file is then removed) ends the
/// download.
fn joined(err: tokio::task::JoinError) -> FetchError {
    match err.try_into_panic() {
        Ok(panic) => std::panic::resume_unwind(panic),
        Err(_) => FetchError::ShuttingDown,
    }
}

/// Whether `etag` is the quoted hex `md5`.
fn etag_is(etag: &ETag, md5: &str) -> bool {
    etag.as_str().trim_matches('"').eq_ignore_ascii_case(md5)
}

/// Exponential backoff with full jitter: up to 200 ms, 400 ms, ... capped at 5 s.
pub fn backoff(attempt: u32) -> Duration {
    let cap = (200u64 << attempt.min(5)).min(5000);
    let jitter = std::collections::hash_map::RandomState::new().hash_one(attempt) % cap.max(1);
    Duration::from_millis(jitter.max(cap / 4))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    fn fetcher(config: FetchConfig) -> (Fetcher, Arc<MemoryStore>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MemoryStore::new("b"));
        let mirror = Arc::new(Mirror::open(dir.path(), "b").unwrap());
        let fetcher = Fetcher::new(Arc::clone(&store) as Arc<dyn ObjectStore>, mirror, config);
        (fetcher, store, dir)
    }

    #[test]
    fn parts_are_a_quarter_of_the_object_within_bounds() {
        let (f, _, _dir) = fetcher(FetchConfig::default());
        const MIB: u64 = 1 << 20;
        assert_eq!(f.part_size_for(9 * MIB), 8 * MIB);
        assert_eq!(f.part_size_for(40 * MIB), 10 * MIB);
        assert_eq!(f.part_size_for(41 * MIB), 11 * MIB, "whole MiB");
        assert_eq!(f.part_size_for(256 * MIB), 64 * MIB);
        assert_eq!(f.part_size_for(1 << 40), 64 * MIB);
    }

    #[tokio::test]
    async fn a_large_object_arrives_whole_in_parts() {
        let config = FetchConfig {
            part_size: 1000,
            max_part_size: 3000,
            ..FetchConfig::default()
        };
        let (f, store, dir) = fetcher(config);
        let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let etag = store.put("big", data.clone());
        let key = Key::new("big").unwrap();
        let outcome = f
            .ensure(&key, &etag, data.len() as u64, Path::new("big"))
            .await
            .unwrap();
        assert_eq!(
            outcome,
            Outcome::Downloaded {
                etag: etag.clone(),
                size: data.len() as u64
            }
        );
        assert!(std::fs::read(dir.path().join("big")).unwrap() == data);
        let again = f.ensure(&key, &etag, data.len() as u64, Path::new("big"));
        assert_eq!(again.await.unwrap(), Outcome::Current);
    }
}
