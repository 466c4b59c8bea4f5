//! Brings one object from the store into the mirror: the one write path shared by
//! prefetch and the filesystem. Large objects come in ranged parts in parallel,
//! every part pinned to the ETag of the first response; interrupted bodies resume
//! where they stopped; a stalled body is timed out; nothing is committed unless
//! every byte of one version arrived.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::mirror::{LocalStatus, Mirror, MirrorError, PrefixMd5, Record, TempFile};
use crate::store::{Body, BodyError, ETag, GetRequest, GetResponse, Key, ObjectStore, StoreError};

/// Times one object is fetched from the start when it changes mid-download or its
/// bytes contradict its MD5 ETag or the checksum sent with them, before the key fails.
pub const WHOLE_ATTEMPTS: u32 = 3;
/// The other parts of a large object start once this much of the first has
/// arrived: the kernel's first read of a file (it reads ahead at most 1 MiB)
/// is then served before the server has anything else to send. On S3 it costs
/// the other parts about 10 ms.
const FIRST_BYTES: u64 = 1 << 20;
/// Times one part of a large object is asked for again after it failed for a
/// passing reason (a timeout, a refused connection, throttling) while the server
/// went on answering the object's other parts: the parts in flight were more
/// than it could serve in time, not a server gone.
pub const PART_TRIES_AGAIN: u32 = 3;
/// Parts in flight are halved at most this often, so that one burst of failures
/// (every part waiting on an overloaded server) counts as one signal.
const CUT_EVERY: Duration = Duration::from_secs(1);

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
    /// Parts of one object in flight at once: S3 gives each connection ~90 MiB/s,
    /// so a large object comes at the host's rate only over many of them.
    pub parts_at_once: usize,
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
            max_part_size: 16 << 20,
            parts_per_object: 16,
            parts_at_once: 16,
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
        if mirror.status(rel, key, etag, size) == LocalStatus::Current {
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
                Ok(Filled { version, md5 }) => {
                    let tmp = Arc::try_unwrap(tmp).expect("all part tasks are finished");
                    match self.check_and_commit(tmp, key, rel, &version, md5).await? {
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
                Err(FetchError::Store(e @ StoreError::Mismatch { .. })) => {
                    tracing::warn!(%key, "{e}; fetching again");
                    last = FetchError::Store(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Hashes the filled temp file (unless its `md5` is known already) and commits
    /// it with its record, unless its MD5 contradicts an MD5 ETag: then the temp file
    /// is dropped (removed) and the MD5 that was found is returned.
    async fn check_and_commit(
        &self,
        tmp: TempFile,
        key: &Key,
        rel: &Path,
        version: &Version,
        md5: Option<String>,
    ) -> Result<Option<String>, FetchError> {
        let mirror = Arc::clone(&self.inner.mirror);
        let rel: PathBuf = rel.to_path_buf();
        let version = version.clone();
        let key = key.clone();
        let result = tokio::task::spawn_blocking(move || {
            let md5 = match md5 {
                Some(md5) => md5,
                None => tmp.md5()?,
            };
            if version.etag_is_md5 && !etag_is(&version.etag, &md5) {
                return Ok(Some(md5));
            }
            let record = Record {
                key,
                etag: version.etag,
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
    /// as the first response has fixed the version and brought its first MiB
    /// (so the first read never waits behind them), not after the first part, in
    /// order, `parts_at_once` at a time; the run of finished parts from the first
    /// byte is hashed meanwhile.
    async fn fill(
        &self,
        tmp: &Arc<TempFile>,
        key: &Key,
        listed_size: u64,
        pin: Option<ETag>,
        observer: &Option<Arc<dyn Observer>>,
    ) -> Result<Filled, FetchError> {
        let min = self.inner.config.part_size.max(1);
        if listed_size <= min {
            let mut sink = self.to_temp(tmp, observer);
            let version = self.read_range(&mut sink, key, None, pin, None).await?;
            return Ok(Filled { version, md5: None });
        }
        let part = self.part_size_for(listed_size);
        let (found, version_known) = tokio::sync::oneshot::channel();
        let mut parts = JoinSet::new();
        parts.spawn(self.part(tmp, key, 0..part, pin, observer, Some(found)));
        let version = match version_known.await {
            Ok(version) => version,
            // The first part failed before any byte came: its error says why.
            Err(_) => {
                let failed = parts.join_next().await.expect("the first part was spawned");
                return Err(failed
                    .expect("part task does not panic")
                    .got
                    .expect_err("a part that found no version failed"));
            }
        };
        if version.size > part {
            tmp.preallocate(version.size)?;
        }
        let mut hash = InOrderMd5::new(Arc::clone(tmp), part, version.size);
        let mut next = part;
        let mut flow = PartFlow::new(self.inner.config.parts_at_once);
        // The first part counts as started before anything arrived.
        flow.started(0, 0);
        let done = loop {
            while parts.len() < flow.at_once {
                let range = match flow.again.pop_front() {
                    Some(range) => range,
                    None if next < version.size => {
                        let start = next;
                        next = (next + part).min(version.size);
                        start..next
                    }
                    None => break,
                };
                flow.started(range.start, tmp.written());
                let etag = Some(version.etag.clone());
                parts.spawn(self.part(tmp, key, range, etag, observer, None));
            }
            hash.go_on();
            tokio::select! {
                done = parts.join_next(), if !parts.is_empty() => {
                    match done.expect("parts is not empty").expect("part task does not panic") {
                        Part { range, got: Ok(got), .. } => {
                            flow.finished(range.start);
                            hash.finished(got);
                        }
                        Part { range, own, got: Err(e) } => {
                            let written = tmp.written();
                            if !flow.try_again(range.clone(), &e, parts.len(), written, own) {
                                break Err(e);
                            }
                            tracing::info!(%key, part = range.start, at_once = flow.at_once, error = %e,
                                "part failed while the others arrived; asked for again, fewer at once");
                        }
                    }
                }
                hashed = hash.step(), if hash.hashing() => {
                    if let Err(e) = hashed {
                        break Err(e);
                    }
                }
                else => break Ok(()),
            }
        };
        if let Err(e) = done {
            // Nothing of the attempt may outlive it: its temp file goes with it.
            parts.abort_all();
            while parts.join_next().await.is_some() {}
            hash.settle().await;
            return Err(e);
        }
        let md5 = hash.finish();
        Ok(Filled { version, md5 })
    }

    /// The task that reads one part of a large object into `tmp`.
    fn part(
        &self,
        tmp: &Arc<TempFile>,
        key: &Key,
        range: Range<u64>,
        pinned: Option<ETag>,
        observer: &Option<Arc<dyn Observer>>,
        found: Option<tokio::sync::oneshot::Sender<Version>>,
    ) -> impl Future<Output = Part> + Send + 'static {
        let (this, tmp, key, observer) =
            (self.clone(), Arc::clone(tmp), key.clone(), observer.clone());
        async move {
            let mut sink = this.to_temp(&tmp, &observer);
            let read = this
                .read_range(&mut sink, &key, Some(range.clone()), pinned, found)
                .await;
            let got = read.map(|version| range.start..range.end.min(version.size));
            Part {
                range,
                own: sink.written,
                got,
            }
        }
    }

    /// Where a download's bytes go: `tmp`, telling `observer`.
    fn to_temp<'a>(
        &'a self,
        tmp: &'a TempFile,
        observer: &'a Option<Arc<dyn Observer>>,
    ) -> ToTemp<'a> {
        ToTemp {
            tmp,
            observer,
            bytes: &self.inner.bytes,
            written: 0,
        }
    }

    /// Reads `range` (the whole object if `None`) into `sink`'s temp file at the
    /// same offsets; a finished part of a large object goes to disk while the
    /// others arrive. `found` hears the version as soon as the first MiB of the
    /// first response accepted is in.
    async fn read_range(
        &self,
        sink: &mut ToTemp<'_>,
        key: &Key,
        range: Option<Range<u64>>,
        pinned: Option<ETag>,
        found: Option<tokio::sync::oneshot::Sender<Version>>,
    ) -> Result<Version, FetchError> {
        let version = self
            .ranged(key, range.clone(), pinned, Some(&self.inner.requests))
            .read(sink, found)
            .await?;
        if let Some(part) = range {
            sink.tmp
                .start_writeback(part.start..part.end.min(version.size));
        }
        Ok(version)
    }

    /// Reads `range` of the `etag` version of `key` into memory, with the same
    /// resumes and stall timeout as a download but outside its request budget: a
    /// reader far ahead of a download (or of one that cannot be persisted) must not
    /// queue behind it.
    pub async fn read_pinned(
        &self,
        key: &Key,
        etag: &ETag,
        range: Range<u64>,
    ) -> Result<Vec<u8>, FetchError> {
        let mut sink = ToVec {
            base: range.start,
            buf: Vec::with_capacity((range.end - range.start) as usize),
        };
        self.ranged(key, Some(range), Some(etag.clone()), None)
            .read(&mut sink, None)
            .await?;
        Ok(sink.buf)
    }

    /// A ranged read with this fetcher's store and tuning; with `permits`, each
    /// request waits for one.
    fn ranged<'a>(
        &'a self,
        key: &'a Key,
        range: Option<Range<u64>>,
        pinned: Option<ETag>,
        permits: Option<&'a Semaphore>,
    ) -> RangedRead<'a> {
        let config = &self.inner.config;
        RangedRead {
            store: self.inner.store.as_ref(),
            key,
            pos: range.as_ref().map_or(0, |r| r.start),
            end: range.as_ref().map(|r| r.end),
            range,
            pinned,
            version: None,
            permits,
            stall_timeout: config.stall_timeout,
            max_attempts: config.max_attempts,
        }
    }
}

/// How many parts of one object are in flight, and which to ask for again. A
/// part that fails for a passing reason while the server goes on answering the
/// others is asked for again (at most `PART_TRIES_AGAIN` times) and the parts in
/// flight are halved: the server could not serve that many in time. One more
/// part is let in per round of parts that arrive, up to the configured number.
/// A part that fails while nothing else arrives fails the download, as before:
/// a server that answers nothing is not waited on longer for it.
///
/// "The others arrived" means: another part finished since the failed one
/// started, or bytes of the object other than the failed part's own were
/// written meanwhile (a first part still streaming counts, though it has not
/// finished).
struct PartFlow {
    at_once: usize,
    most: usize,
    /// Ranges to ask for again, before the parts not asked for yet.
    again: VecDeque<Range<u64>>,
    /// Parts finished so far.
    finished: u64,
    /// For each part in flight (by its first byte): `finished`, and the bytes of
    /// the object written, when it started.
    started_at: HashMap<u64, (u64, u64)>,
    /// Times each part (by its first byte) was asked for again.
    tries: HashMap<u64, u32>,
    /// Parts finished since `at_once` last changed.
    grown: usize,
    last_cut: Option<tokio::time::Instant>,
}

impl PartFlow {
    fn new(most: usize) -> PartFlow {
        let most = most.max(1);
        PartFlow {
            at_once: most,
            most,
            again: VecDeque::new(),
            finished: 0,
            started_at: HashMap::new(),
            tries: HashMap::new(),
            grown: 0,
            last_cut: None,
        }
    }

    /// The part at `start` was asked for, `written` bytes of the object in.
    fn started(&mut self, start: u64, written: u64) {
        self.started_at.insert(start, (self.finished, written));
    }

    fn finished(&mut self, start: u64) {
        self.started_at.remove(&start);
        self.finished += 1;
        self.grown += 1;
        if self.at_once < self.most && self.grown >= self.at_once {
            self.at_once += 1;
            self.grown = 0;
        }
    }

    /// Whether `range`, which failed with `e` while `in_flight` other parts run,
    /// is to be asked for again (it is then queued, and fewer parts let in).
    /// `written` bytes of the object are in, `own` of them written by the part.
    fn try_again(
        &mut self,
        range: Range<u64>,
        e: &FetchError,
        in_flight: usize,
        written: u64,
        own: u64,
    ) -> bool {
        let (finished_then, written_then) = self
            .started_at
            .remove(&range.start)
            .unwrap_or((self.finished, written));
        let passing = matches!(e, FetchError::Store(e) if e.is_transient());
        let others_wrote = written.saturating_sub(written_then).saturating_sub(own);
        let others_arrived = self.finished > finished_then || others_wrote > 0;
        let tries = self.tries.entry(range.start).or_insert(0);
        if !passing || !others_arrived || *tries >= PART_TRIES_AGAIN {
            return false;
        }
        *tries += 1;
        let now = tokio::time::Instant::now();
        if self.last_cut.is_none_or(|at| now - at >= CUT_EVERY) {
            self.at_once = in_flight.div_ceil(2).max(1);
            self.grown = 0;
            self.last_cut = Some(now);
        }
        self.again.push_back(range);
        true
    }
}

/// Where the bytes of a ranged read go, at their offset in the object. After a
/// failed body the read resumes at the last byte put, or starts its range over.
trait Sink: Send {
    fn put(&mut self, offset: u64, bytes: &[u8]) -> Result<(), FetchError>;
}

/// A download's sink: the temp file at the same offsets.
struct ToTemp<'a> {
    tmp: &'a TempFile,
    observer: &'a Option<Arc<dyn Observer>>,
    /// Every download's bytes.
    bytes: &'a AtomicU64,
    /// Bytes this sink wrote (a range started over counts again).
    written: u64,
}

impl Sink for ToTemp<'_> {
    fn put(&mut self, offset: u64, bytes: &[u8]) -> Result<(), FetchError> {
        self.tmp.write_at(bytes, offset)?;
        if let Some(observer) = self.observer {
            observer.filled(offset, bytes.len() as u64);
        }
        self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.written += bytes.len() as u64;
        Ok(())
    }
}

/// How one part of a large object ended: the range asked for, the bytes its
/// reads wrote, and the bytes of the object it holds.
struct Part {
    range: Range<u64>,
    own: u64,
    got: Result<Range<u64>, FetchError>,
}

/// A reader's sink: a buffer holding the range from `base`.
struct ToVec {
    base: u64,
    buf: Vec<u8>,
}

impl Sink for ToVec {
    fn put(&mut self, offset: u64, bytes: &[u8]) -> Result<(), FetchError> {
        // A range that starts over overwrites what it had.
        self.buf.truncate((offset - self.base) as usize);
        self.buf.extend_from_slice(bytes);
        Ok(())
    }
}

/// One ranged read of one version: the first response pins the ETag, a body that
/// breaks off or stalls resumes from its last byte after a backoff, a bounded
/// number of times. A request that fails before any response is not tried again
/// here: the store already retried it, and trying again would multiply attempts.
struct RangedRead<'a> {
    store: &'a dyn ObjectStore,
    key: &'a Key,
    /// `None`: the whole object, whatever its size turns out to be.
    range: Option<Range<u64>>,
    pinned: Option<ETag>,
    /// The next byte wanted, and where the range ends once that is known.
    pos: u64,
    end: Option<u64>,
    version: Option<Version>,
    permits: Option<&'a Semaphore>,
    stall_timeout: Duration,
    max_attempts: u32,
}

impl RangedRead<'_> {
    async fn read(
        mut self,
        sink: &mut impl Sink,
        mut found: Option<tokio::sync::oneshot::Sender<Version>>,
    ) -> Result<Version, FetchError> {
        let mut attempt = 1;
        loop {
            // Whether the server answered, so a failure came from the body.
            let mut answered = false;
            let result = self.attempt(sink, &mut found, &mut answered).await;
            match result {
                Ok(()) => return Ok(self.version.expect("set by the response")),
                Err(FetchError::Store(e))
                    if answered && e.is_transient() && attempt < self.max_attempts =>
                {
                    tracing::info!(key = %self.key, attempt, at = self.pos, error = %e, "body failed; resuming");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(FetchError::Store(StoreError::Body(last))) if answered => {
                    let gave_up = BodyError::GaveUp {
                        attempts: attempt,
                        last: Box::new(last),
                    };
                    return Err(StoreError::Body(gave_up).into());
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One request and its body, from `pos` on.
    async fn attempt(
        &mut self,
        sink: &mut impl Sink,
        found: &mut Option<tokio::sync::oneshot::Sender<Version>>,
        answered: &mut bool,
    ) -> Result<(), FetchError> {
        let request = self.next_request();
        let _permit = match self.permits {
            Some(permits) => Some(permits.acquire().await.expect("semaphore is never closed")),
            None => None,
        };
        let mut response = self.store.get(request).await?;
        *answered = true;
        let stop = self.accept(&response)?;
        self.drain(response.body.as_mut(), stop, sink, found).await
    }

    /// Tells `found` the version, once: called when `FIRST_BYTES` are in (or
    /// the whole body), not when the headers are, so the requests it lets
    /// start (the other parts) never hold back the bytes a reader's first read
    /// waits for on a busy server.
    fn announce(&self, found: &mut Option<tokio::sync::oneshot::Sender<Version>>) {
        if let Some(found) = found.take() {
            let _ = found.send(self.version.clone().expect("set by accept"));
        }
    }

    /// The request for the bytes still missing.
    fn next_request(&mut self) -> GetRequest {
        if self.end.is_some_and(|end| self.pos >= end) {
            // Everything arrived and then the body failed: its bytes are suspect, and
            // an empty range cannot be asked for, so the range starts over.
            self.pos = self.range.as_ref().map_or(0, |r| r.start);
        }
        GetRequest {
            key: self.key.clone(),
            // An unranged read asks for the whole object again while it has no byte
            // yet (pinned to the version once known): an empty object has no range
            // to ask for.
            range: if self.range.is_none() && self.pos == 0 {
                None
            } else {
                Some(self.pos..self.end.expect("end is known once a response arrived"))
            },
            if_match: self.pinned.clone(),
        }
    }

    /// Checks a response against the version and the bytes asked for, pinning the
    /// version on the first one; returns where its body must end.
    fn accept(&mut self, response: &GetResponse) -> Result<u64, FetchError> {
        let v = self.version.get_or_insert_with(|| Version {
            etag: response.etag.clone(),
            size: response.object_size,
            last_modified: response.last_modified,
            etag_is_md5: response.etag_is_md5,
        });
        if response.etag != v.etag {
            return Err(FetchError::Store(StoreError::Changed {
                bucket: self.store.bucket().to_string(),
                key: self.key.as_str().to_string(),
            }));
        }
        self.pinned = Some(v.etag.clone());
        let limit = self.range.as_ref().map_or(u64::MAX, |r| r.end);
        let stop = *self.end.get_or_insert(v.size.min(limit));
        let pos = self.pos;
        if response.start != pos || response.content_length != stop - pos {
            let wrong = BodyError::WrongRange {
                asked: pos..stop,
                start: response.start,
                len: response.content_length,
            };
            return Err(StoreError::Body(wrong).into());
        }
        Ok(stop)
    }

    /// Puts the body's chunks into `sink` up to `stop`, failing a body that stalls
    /// for longer than the timeout, runs long or ends short.
    async fn drain(
        &mut self,
        body: &mut dyn Body,
        stop: u64,
        sink: &mut impl Sink,
        found: &mut Option<tokio::sync::oneshot::Sender<Version>>,
    ) -> Result<(), FetchError> {
        loop {
            let next = tokio::time::timeout(self.stall_timeout, body.next_chunk()).await;
            let Ok(chunk) = next else {
                let stalled = BodyError::Stalled {
                    after: self.stall_timeout,
                    at: self.pos,
                };
                return Err(StoreError::Body(stalled).into());
            };
            let Some(chunk) = chunk? else { break };
            if self.pos + chunk.len() as u64 > stop {
                let too_long = BodyError::TooLong { promised: stop };
                return Err(StoreError::Body(too_long).into());
            }
            sink.put(self.pos, &chunk)?;
            self.pos += chunk.len() as u64;
            let first = self.range.as_ref().map_or(0, |r| r.start);
            if self.pos - first >= FIRST_BYTES {
                self.announce(found);
            }
        }
        if self.pos != stop {
            let short = BodyError::EndedEarly {
                at: self.pos,
                end: stop,
            };
            return Err(StoreError::Body(short).into());
        }
        self.announce(found);
        Ok(())
    }
}

/// A filled temp file: the version it holds, and the MD5 of its bytes when it
/// was hashed while the parts arrived.
struct Filled {
    version: Version,
    md5: Option<String>,
}

/// Hashes a download in parts in order while the parts arrive: the run of
/// finished parts from the first byte is hashed on the blocking pool, a part at a
/// time (so a failed download leaves at most one part's hashing behind it).
struct InOrderMd5 {
    tmp: Arc<TempFile>,
    part: u64,
    size: u64,
    /// Whether each part (by index) is wholly in the file.
    finished: Vec<bool>,
    /// The hash, while no step is running.
    idle: Option<PrefixMd5>,
    running: Option<tokio::task::JoinHandle<Result<PrefixMd5, MirrorError>>>,
}

impl InOrderMd5 {
    fn new(tmp: Arc<TempFile>, part: u64, size: u64) -> InOrderMd5 {
        InOrderMd5 {
            tmp,
            part,
            size,
            finished: vec![false; size.div_ceil(part).max(1) as usize],
            idle: Some(PrefixMd5::default()),
            running: None,
        }
    }

    /// Part `range` is wholly in the file.
    fn finished(&mut self, range: Range<u64>) {
        self.finished[(range.start / self.part) as usize] = true;
    }

    /// Where the run of finished parts from the first byte ends.
    fn ready(&self) -> u64 {
        let parts = self.finished.iter().take_while(|done| **done).count() as u64;
        (parts * self.part).min(self.size)
    }

    /// Starts hashing the next finished part, unless a step is running.
    fn go_on(&mut self) {
        let ready = self.ready();
        let Some(mut md5) = self.idle.take_if(|md5| md5.len() < ready) else {
            return;
        };
        let end = ready.min(md5.len() + self.part);
        let tmp = Arc::clone(&self.tmp);
        self.running = Some(tokio::task::spawn_blocking(move || {
            tmp.hash(&mut md5, end).map(|()| md5)
        }));
    }

    fn hashing(&self) -> bool {
        self.running.is_some()
    }

    /// Waits for the running step.
    async fn step(&mut self) -> Result<(), FetchError> {
        let running = self.running.as_mut().expect("a step is running");
        let hashed = running.await.map_err(joined)?;
        self.running = None;
        self.idle = Some(hashed?);
        Ok(())
    }

    /// Waits for the running step, if any, whatever its outcome.
    async fn settle(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.await;
        }
    }

    /// The MD5 of the whole object, once every byte is hashed.
    fn finish(mut self) -> Option<String> {
        self.idle
            .take()
            .filter(|md5| md5.len() == self.size)
            .map(PrefixMd5::finish)
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
    use crate::store::failing::{FailingStore, GetFault};
    use crate::store::memory::MemoryStore;

    fn fetcher(config: FetchConfig) -> (Fetcher, Arc<MemoryStore>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MemoryStore::new("b"));
        let mirror = Arc::new(Mirror::open(dir.path(), "b").unwrap());
        let fetcher = Fetcher::new(Arc::clone(&store) as Arc<dyn ObjectStore>, mirror, config);
        (fetcher, store, dir)
    }

    /// A fetcher over a store that fails the GETs named by `faults` (from 1).
    fn flaky(
        faults: Vec<(u64, GetFault)>,
        config: FetchConfig,
    ) -> (Fetcher, Arc<FailingStore<MemoryStore>>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FailingStore::new(MemoryStore::new("b")));
        for (n, fault) in faults {
            store.on_get(n, fault);
        }
        let mirror = Arc::new(Mirror::open(dir.path(), "b").unwrap());
        let fetcher = Fetcher::new(Arc::clone(&store) as Arc<dyn ObjectStore>, mirror, config);
        (fetcher, store, dir)
    }

    /// The ranges the store was asked for, in order.
    fn asked(store: &FailingStore<MemoryStore>) -> Vec<Option<Range<u64>>> {
        store.requests().into_iter().map(|r| r.range).collect()
    }

    fn sample(n: u32) -> Vec<u8> {
        (0..n).map(|i| (i * 13 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn a_broken_body_resumes_from_its_last_byte() {
        let (f, store, _dir) = flaky(vec![(1, GetFault::CutAfter(30))], FetchConfig::default());
        let data = sample(100);
        let etag = store.inner().put("k", data.clone());
        let key = Key::new("k").unwrap();
        let got = f.read_pinned(&key, &etag, 10..100).await.unwrap();
        assert!(got == data[10..100]);
        assert_eq!(asked(&store), vec![Some(10..100), Some(40..100)]);
    }

    #[tokio::test]
    async fn a_stalled_body_times_out_and_resumes() {
        let config = FetchConfig {
            stall_timeout: Duration::from_millis(50),
            ..FetchConfig::default()
        };
        let (f, store, _dir) = flaky(vec![(1, GetFault::StallAfter(7))], config);
        let data = sample(20);
        let etag = store.inner().put("k", data.clone());
        let key = Key::new("k").unwrap();
        assert!(f.read_pinned(&key, &etag, 0..20).await.unwrap() == data);
        assert_eq!(asked(&store), vec![Some(0..20), Some(7..20)]);
    }

    #[tokio::test]
    async fn a_request_the_store_gave_up_on_is_not_tried_again() {
        let refused = StoreError::Unreachable {
            endpoint: "memory".to_string(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
        };
        let (f, store, _dir) = flaky(vec![(1, GetFault::Fail(refused))], FetchConfig::default());
        let etag = store.inner().put("k", sample(20));
        let key = Key::new("k").unwrap();
        let err = f.read_pinned(&key, &etag, 0..20).await.unwrap_err();
        assert!(matches!(
            err,
            FetchError::Store(StoreError::Unreachable { .. })
        ));
        assert_eq!(store.gets(), 1);
    }

    #[tokio::test]
    async fn body_failures_stop_after_the_bounded_attempts() {
        let cuts = (1..=5).map(|n| (n, GetFault::CutAfter(1))).collect();
        let (f, store, _dir) = flaky(cuts, FetchConfig::default());
        let etag = store.inner().put("k", sample(20));
        let key = Key::new("k").unwrap();
        let err = f.read_pinned(&key, &etag, 0..20).await.unwrap_err();
        assert!(err.to_string().contains("after 3 attempts"), "{err}");
        assert_eq!(store.gets(), 3);
    }

    #[tokio::test]
    async fn a_read_of_another_version_fails_as_changed() {
        let (f, store, _dir) = flaky(Vec::new(), FetchConfig::default());
        let old = store.inner().put("k", sample(20));
        store.inner().put("k", sample(21));
        let key = Key::new("k").unwrap();
        let err = f.read_pinned(&key, &old, 0..20).await.unwrap_err();
        assert!(matches!(err, FetchError::Store(StoreError::Changed { .. })));
    }

    #[tokio::test]
    async fn a_download_resumes_into_its_temp_file_and_counts_each_byte_once() {
        let (f, store, dir) = flaky(vec![(1, GetFault::CutAfter(400))], FetchConfig::default());
        let data = sample(1000);
        let etag = store.inner().put("k", data.clone());
        let key = Key::new("k").unwrap();
        f.ensure(&key, &etag, 1000, Path::new("k")).await.unwrap();
        assert!(std::fs::read(dir.path().join("k")).unwrap() == data);
        assert_eq!(asked(&store), vec![None, Some(400..1000)]);
        assert_eq!(f.bytes_received(), 1000);
    }

    #[test]
    fn parts_are_a_sixteenth_of_the_object_within_bounds() {
        let (f, _, _dir) = fetcher(FetchConfig::default());
        const MIB: u64 = 1 << 20;
        assert_eq!(f.part_size_for(9 * MIB), 8 * MIB);
        assert_eq!(f.part_size_for(160 * MIB), 10 * MIB);
        assert_eq!(f.part_size_for(161 * MIB), 11 * MIB, "whole MiB");
        assert_eq!(f.part_size_for(256 * MIB), 16 * MIB);
        assert_eq!(f.part_size_for(1 << 40), 16 * MIB);
    }

    /// Stores `data` under an ETag that is its MD5, as S3 gives a single-part object.
    fn put_md5(store: &FailingStore<MemoryStore>, key: &str, data: &[u8]) -> ETag {
        use md5::Digest;
        let etag = ETag::new(&format!("\"{:x}\"", md5::Md5::digest(data)));
        store
            .inner()
            .put_with_etag(key, data.to_vec(), etag.clone());
        store.claim_md5_etags(true);
        etag
    }

    /// A config of small parts, `at_once` of them in flight.
    fn small_parts(at_once: usize) -> FetchConfig {
        FetchConfig {
            part_size: 1000,
            max_part_size: 1000,
            parts_at_once: at_once,
            ..FetchConfig::default()
        }
    }

    #[tokio::test]
    async fn parts_are_asked_for_in_order_pinned_and_hashed_as_they_come() {
        let (f, store, dir) = flaky(Vec::new(), small_parts(3));
        let data = sample(10_500);
        let etag = put_md5(&store, "k", &data);
        let key = Key::new("k").unwrap();
        f.ensure(&key, &etag, 10_500, Path::new("k")).await.unwrap();
        assert!(std::fs::read(dir.path().join("k")).unwrap() == data);
        let starts: Vec<u64> = asked(&store)
            .into_iter()
            .map(|r| r.unwrap().start)
            .collect();
        assert_eq!(starts, (0..11).map(|i| i * 1000).collect::<Vec<_>>());
        let requests = store.requests();
        assert!(
            requests[0].if_match.is_none(),
            "the first finds the version"
        );
        assert!(
            requests[1..]
                .iter()
                .all(|r| r.if_match.as_ref() == Some(&etag))
        );
        let record = crate::mirror::read_record(&dir.path().join("k")).unwrap();
        let md5 = crate::mirror::md5_file(&std::fs::File::open(dir.path().join("k")).unwrap());
        assert_eq!(record.md5, Some(md5.unwrap()));
    }

    #[tokio::test]
    async fn a_corrupt_part_fails_the_in_order_hash_and_the_object_comes_again() {
        let (f, store, dir) = flaky(vec![(4, GetFault::Corrupt)], small_parts(2));
        let data = sample(5_000);
        let etag = put_md5(&store, "k", &data);
        let key = Key::new("k").unwrap();
        f.ensure(&key, &etag, 5_000, Path::new("k")).await.unwrap();
        assert!(std::fs::read(dir.path().join("k")).unwrap() == data);
        assert_eq!(store.gets(), 10, "every part twice");
    }

    #[tokio::test]
    async fn a_part_that_keeps_failing_fails_the_download_and_leaves_nothing() {
        let cuts = (3..=5).map(|n| (n, GetFault::CutAfter(10))).collect();
        let (f, store, dir) = flaky(cuts, small_parts(1));
        let etag = store.inner().put("k", sample(5_000));
        let key = Key::new("k").unwrap();
        let err = f.ensure(&key, &etag, 5_000, Path::new("k")).await;
        assert!(err.unwrap_err().to_string().contains("after 3 attempts"));
        assert!(!dir.path().join("k").exists());
        let tmp = std::fs::read_dir(dir.path().join(".s3mirrorfs/tmp")).unwrap();
        assert_eq!(tmp.count(), 0, "no temp file left");
        assert_eq!(store.gets(), 5, "no part after the one that failed");
    }

    fn timed_out() -> StoreError {
        StoreError::Timeout {
            endpoint: "memory".to_string(),
            source: std::io::Error::from(std::io::ErrorKind::TimedOut).into(),
        }
    }

    #[tokio::test]
    async fn a_part_that_times_out_while_the_others_arrive_is_asked_for_again() {
        // GETs 1-4: the first part, then parts 1-3 at once; the 4th (part 3)
        // times out after parts 0-2 have arrived, as on a server that cannot
        // serve them all in time.
        let (f, store, dir) = flaky(vec![(4, GetFault::Fail(timed_out()))], small_parts(4));
        let data = sample(10_000);
        let etag = put_md5(&store, "k", &data);
        let key = Key::new("k").unwrap();
        f.ensure(&key, &etag, 10_000, Path::new("k")).await.unwrap();
        assert!(std::fs::read(dir.path().join("k")).unwrap() == data);
        let part3: Vec<_> = store
            .requests()
            .into_iter()
            .filter(|r| r.range == Some(3000..4000))
            .collect();
        assert_eq!(part3.len(), 2, "asked for again");
        assert!(part3.iter().all(|r| r.if_match.as_ref() == Some(&etag)));
        assert_eq!(store.gets(), 11);
        let record = crate::mirror::read_record(&dir.path().join("k")).unwrap();
        let md5 = crate::mirror::md5_file(&std::fs::File::open(dir.path().join("k")).unwrap());
        assert_eq!(
            record.md5,
            Some(md5.unwrap()),
            "hashed in order all the same"
        );
    }

    #[tokio::test]
    async fn parts_that_fail_while_nothing_arrives_fail_the_download() {
        // Every GET after the first is refused: the parts asked for again fail
        // with nothing arriving meanwhile, and the download fails.
        let refused = || StoreError::Unreachable {
            endpoint: "memory".to_string(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
        };
        let faults = (2..=40).map(|n| (n, GetFault::Fail(refused()))).collect();
        let (f, store, dir) = flaky(faults, small_parts(4));
        let etag = put_md5(&store, "k", &sample(10_000));
        let key = Key::new("k").unwrap();
        let err = f.ensure(&key, &etag, 10_000, Path::new("k")).await;
        assert!(matches!(
            err.unwrap_err(),
            FetchError::Store(StoreError::Unreachable { .. })
        ));
        assert!(store.gets() < 10, "{} GETs", store.gets());
        assert!(!dir.path().join("k").exists());
        let tmp = std::fs::read_dir(dir.path().join(".s3mirrorfs/tmp")).unwrap();
        assert_eq!(tmp.count(), 0, "no temp file left");
    }

    #[test]
    fn parts_in_flight_halve_once_per_burst_and_grow_back_a_round_at_a_time() {
        let mut flow = PartFlow::new(16);
        let timeout = FetchError::Store(timed_out());
        for i in 0..16 {
            flow.started(i * 10, 0);
        }
        flow.finished(0);
        assert!(flow.try_again(10..20, &timeout, 14, 10, 0));
        assert_eq!(
            flow.at_once, 7,
            "half of what is still in flight, rounded up"
        );
        assert!(flow.try_again(20..30, &timeout, 13, 10, 0));
        assert_eq!(flow.at_once, 7, "one burst, one cut");
        assert_eq!(flow.again, [10..20, 20..30]);
        let disk = FetchError::Mirror(MirrorError::Io {
            path: PathBuf::from("x"),
            err: std::io::Error::other("disk"),
        });
        assert!(
            !flow.try_again(30..40, &disk, 12, 10, 0),
            "not a passing failure"
        );
        for i in 4..11 {
            flow.finished(i * 10);
        }
        assert_eq!(flow.at_once, 8, "one more after a round of 7");
        // A part started after the last one finished: nothing arrived meanwhile.
        flow.started(200, 80);
        assert!(!flow.try_again(200..210, &timeout, 3, 80, 0));
        // A part is asked for again at most PART_TRIES_AGAIN times.
        for _ in 0..PART_TRIES_AGAIN {
            flow.started(500, 80);
            flow.finished(999);
            assert!(flow.try_again(500..510, &timeout, 3, 80, 0));
        }
        flow.started(500, 80);
        flow.finished(999);
        assert!(!flow.try_again(500..510, &timeout, 3, 80, 0));
    }

    #[test]
    fn bytes_of_the_others_count_as_arriving_though_no_part_finished() {
        let mut flow = PartFlow::new(4);
        let timeout = FetchError::Store(timed_out());
        // The first part streams; parts 1-3 start with 100 bytes of it in.
        flow.started(0, 0);
        for start in [1000, 2000, 3000] {
            flow.started(start, 100);
        }
        // Part 1 fails; every byte written since it started was its own (its
        // range started over twice and a half): nothing else arrived.
        assert!(!flow.try_again(1000..2000, &timeout, 3, 2600, 2500));
        // Part 2 fails having written nothing, while 1 byte of another came.
        assert!(flow.try_again(2000..3000, &timeout, 2, 2601, 0));
        assert_eq!(flow.again.front(), Some(&(2000..3000)));
        assert_eq!(flow.again.len(), 1);
        assert_eq!(flow.at_once, 1);
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
