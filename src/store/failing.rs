//! A store wrapper that fails on purpose: the Nth list or GET fails, a body is
//! cut, stalls, is corrupted, or the object changes between requests. Lets the
//! download's resume and retry paths be unit-tested in milliseconds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;

use super::{
    Body, BodyError, BoxFuture, ETag, GetRequest, GetResponse, Key, ListPage, ObjectStore,
    RestoreAnswer, RestoreRequest, RestoreState, ServerFailure, StoreError,
};

/// What happens to one GET.
#[derive(Debug)]
pub enum GetFault {
    /// The request fails with this error before any response.
    Fail(StoreError),
    /// The body fails with `BodyError::Transport` after this many bytes, as a reset connection does.
    CutAfter(u64),
    /// The body delivers this many bytes and then never another.
    StallAfter(u64),
    /// The object now has this ETag: a GET pinned to another one fails with
    /// `StoreError::Changed`, as S3 answers `If-Match`; an unpinned one is answered with it.
    ETag(ETag),
    /// The first byte of the body is flipped, so it contradicts the object's MD5.
    Corrupt,
}

/// Wraps a store and injects the faults set for given calls (numbered from 1, per
/// operation). Calls without a rule pass through.
pub struct FailingStore<S: ObjectStore> {
    inner: S,
    list_faults: Mutex<HashMap<u64, StoreError>>,
    get_faults: Mutex<HashMap<u64, GetFault>>,
    md5_etags: AtomicBool,
    lists: AtomicU64,
    gets: AtomicU64,
    requests: Mutex<Vec<GetRequest>>,
}

impl<S: ObjectStore> FailingStore<S> {
    pub fn new(inner: S) -> FailingStore<S> {
        FailingStore {
            inner,
            list_faults: Mutex::new(HashMap::new()),
            get_faults: Mutex::new(HashMap::new()),
            md5_etags: AtomicBool::new(false),
            lists: AtomicU64::new(0),
            gets: AtomicU64::new(0),
            requests: Mutex::new(Vec::new()),
        }
    }

    /// The wrapped store, to put and change objects.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Makes the `n`th list call (from 1) fail with `error`.
    pub fn fail_list(&self, n: u64, error: StoreError) {
        self.list_faults.lock().insert(n, error);
    }

    /// Applies `fault` to the `n`th GET (from 1).
    pub fn on_get(&self, n: u64, fault: GetFault) {
        self.get_faults.lock().insert(n, fault);
    }

    /// Makes every response say its ETag is the object's MD5, for a wrapped store
    /// whose ETags were set to real MD5s (the in-memory store's are counters).
    pub fn claim_md5_etags(&self, claim: bool) {
        self.md5_etags.store(claim, Ordering::Relaxed);
    }

    /// List calls so far.
    pub fn lists(&self) -> u64 {
        self.lists.load(Ordering::Relaxed)
    }

    /// GET calls so far.
    pub fn gets(&self) -> u64 {
        self.gets.load(Ordering::Relaxed)
    }

    /// Every GET so far, in order, as it was asked.
    pub fn requests(&self) -> Vec<GetRequest> {
        self.requests.lock().clone()
    }

    fn changed(&self, request: &GetRequest) -> StoreError {
        StoreError::Changed {
            bucket: self.inner.bucket().to_string(),
            key: request.key.as_str().to_string(),
        }
    }
}

/// What a request S3 kept answering with HTTP 503 `SlowDown` fails with, once its
/// attempts are used up.
pub fn slow_down(action: &'static str, resource: &str) -> StoreError {
    ServerFailure {
        endpoint: "memory".to_string(),
        action,
        resource: resource.to_string(),
        status: 503,
        code: Some("SlowDown".to_string()),
        attempts: 1,
        source: "Please reduce your request rate.".into(),
    }
    .into()
}

/// What a request that got no answer in time fails with.
pub fn timed_out() -> StoreError {
    StoreError::Timeout {
        endpoint: "memory".to_string(),
        source: std::io::Error::new(std::io::ErrorKind::TimedOut, "read timed out").into(),
    }
}

impl<S: ObjectStore> ObjectStore for FailingStore<S> {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }

    fn list_page(
        &self,
        prefix: &str,
        delimited: bool,
        token: Option<String>,
    ) -> BoxFuture<'_, Result<ListPage, StoreError>> {
        let n = self.lists.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(error) = self.list_faults.lock().remove(&n) {
            return Box::pin(async move { Err(error) });
        }
        self.inner.list_page(prefix, delimited, token)
    }

    fn list_after(
        &self,
        prefix: &str,
        start_after: &str,
        max_keys: u32,
    ) -> BoxFuture<'_, Result<ListPage, StoreError>> {
        let n = self.lists.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(error) = self.list_faults.lock().remove(&n) {
            return Box::pin(async move { Err(error) });
        }
        self.inner.list_after(prefix, start_after, max_keys)
    }

    fn get(&self, mut request: GetRequest) -> BoxFuture<'_, Result<GetResponse, StoreError>> {
        let n = self.gets.fetch_add(1, Ordering::Relaxed) + 1;
        self.requests.lock().push(request.clone());
        let fault = self.get_faults.lock().remove(&n);
        Box::pin(async move {
            let mut body_fault = BodyFault::None;
            let mut new_etag = None;
            match fault {
                None => {}
                Some(GetFault::Fail(error)) => return Err(error),
                Some(GetFault::ETag(etag)) => {
                    if request.if_match.as_ref().is_some_and(|e| e != &etag) {
                        return Err(self.changed(&request));
                    }
                    // The wrapped store still holds the old ETag and would refuse the pin.
                    request.if_match = None;
                    new_etag = Some(etag);
                }
                Some(GetFault::CutAfter(n)) => body_fault = BodyFault::Cut(n),
                Some(GetFault::StallAfter(n)) => body_fault = BodyFault::Stall(n),
                Some(GetFault::Corrupt) => body_fault = BodyFault::Corrupt,
            }
            let mut response = self.inner.get(request).await?;
            if let Some(etag) = new_etag {
                response.etag = etag;
            }
            if self.md5_etags.load(Ordering::Relaxed) {
                response.etag_is_md5 = true;
            }
            if !matches!(body_fault, BodyFault::None) {
                response.body = Box::new(FaultyBody {
                    inner: response.body,
                    fault: body_fault,
                    delivered: 0,
                });
            }
            Ok(response)
        })
    }

    fn restore_state(&self, key: &Key) -> BoxFuture<'_, Result<RestoreState, StoreError>> {
        self.inner.restore_state(key)
    }

    fn request_restore(
        &self,
        key: &Key,
        request: &RestoreRequest,
    ) -> BoxFuture<'_, Result<RestoreAnswer, StoreError>> {
        self.inner.request_restore(key, request)
    }
}

enum BodyFault {
    None,
    Cut(u64),
    Stall(u64),
    Corrupt,
}

/// A body that breaks as its fault says.
struct FaultyBody {
    inner: Box<dyn Body>,
    fault: BodyFault,
    delivered: u64,
}

impl Body for FaultyBody {
    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Option<Bytes>, StoreError>> {
        Box::pin(async move {
            let limit = match self.fault {
                BodyFault::Cut(limit) | BodyFault::Stall(limit) => Some(limit),
                BodyFault::None | BodyFault::Corrupt => None,
            };
            if limit.is_some_and(|limit| self.delivered >= limit) {
                if matches!(self.fault, BodyFault::Stall(_)) {
                    std::future::pending::<()>().await;
                }
                let reset = std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    format!("connection reset after {} bytes", self.delivered),
                );
                return Err(BodyError::Transport(reset.into()).into());
            }
            let Some(mut chunk) = self.inner.next_chunk().await? else {
                return Ok(None);
            };
            if let Some(limit) = limit {
                // The rest of this chunk is lost with the connection.
                chunk.truncate((limit - self.delivered).min(chunk.len() as u64) as usize);
            }
            if matches!(self.fault, BodyFault::Corrupt) && !chunk.is_empty() {
                let mut bytes = chunk.to_vec();
                bytes[0] ^= 0xff;
                chunk = Bytes::from(bytes);
                self.fault = BodyFault::None;
            }
            self.delivered += chunk.len() as u64;
            Ok(Some(chunk))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, Instant, SystemTime};

    use md5::{Digest, Md5};

    use super::*;
    use crate::fetch::{FetchConfig, FetchError, Fetcher, Observer, Outcome, WHOLE_ATTEMPTS};
    use crate::mirror::{Mirror, Record, read_record};
    use crate::store::memory::MemoryStore;
    use crate::store::{Key, list_all};

    /// Objects up to this size come in one GET; larger ones in parts of this size.
    const PART: u64 = 4096;
    const STALL: Duration = Duration::from_millis(100);

    struct Fixture {
        store: Arc<FailingStore<MemoryStore>>,
        fetcher: Fetcher,
        mirror: Arc<Mirror>,
        _dir: tempfile::TempDir,
    }

    fn fixture(config: FetchConfig) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FailingStore::new(MemoryStore::new("b")));
        let mirror = Arc::new(Mirror::open(dir.path(), "b").unwrap());
        let fetcher = Fetcher::new(
            Arc::clone(&store) as Arc<dyn ObjectStore>,
            Arc::clone(&mirror),
            config,
        );
        Fixture {
            store,
            fetcher,
            mirror,
            _dir: dir,
        }
    }

    fn config() -> FetchConfig {
        FetchConfig {
            part_size: PART,
            max_part_size: PART,
            stall_timeout: STALL,
            ..FetchConfig::default()
        }
    }

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32 * 31 + seed as u32) as u8)
            .collect()
    }

    fn md5_of(data: &[u8]) -> String {
        format!("{:x}", Md5::digest(data))
    }

    fn key(name: &str) -> Key {
        Key::new(name).unwrap()
    }

    impl Fixture {
        async fn ensure(
            &self,
            name: &str,
            etag: &ETag,
            size: usize,
        ) -> Result<Outcome, FetchError> {
            self.fetcher
                .ensure(&key(name), etag, size as u64, Path::new(name))
                .await
        }

        /// Commits `data` as a previous version of `name`, without the store; returns its ETag.
        fn commit_previous(&self, name: &str, data: &[u8]) -> ETag {
            let tmp = self.mirror.create_temp().unwrap();
            tmp.write_at(data, 0).unwrap();
            let record = Record {
                key: key(name),
                etag: ETag::new(&md5_of(data)),
                size: data.len() as u64,
                md5: Some(md5_of(data)),
                corrupt: false,
            };
            let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
            self.mirror
                .commit(tmp, Path::new(name), &record, mtime)
                .unwrap();
            record.etag
        }

        /// The mirror holds exactly `data` at `name`, recorded as `etag`.
        fn assert_holds(&self, name: &str, data: &[u8], etag: &ETag) {
            let path = self.mirror.root().join(name);
            assert!(
                std::fs::read(&path).unwrap() == data,
                "{name}: bytes differ"
            );
            let record = read_record(&path).expect("a committed file has a record");
            assert_eq!(record.etag, *etag);
            assert_eq!(record.size, data.len() as u64);
            assert_eq!(record.md5.as_deref(), Some(md5_of(data).as_str()));
        }

        fn assert_no_temp_files(&self) {
            let tmp = self.mirror.state_dir().join("tmp");
            let left: Vec<_> = std::fs::read_dir(tmp).unwrap().collect();
            assert!(left.is_empty(), "temp files left: {left:?}");
        }

        fn ranges(&self) -> Vec<Option<std::ops::Range<u64>>> {
            self.store.requests().into_iter().map(|r| r.range).collect()
        }
    }

    /// Counts the attempts a reader would see start.
    #[derive(Default)]
    struct Watch {
        started: AtomicU64,
    }

    impl Observer for Watch {
        fn started(&self, _file: std::fs::File) {
            self.started.fetch_add(1, Ordering::Relaxed);
        }
        fn filled(&self, _offset: u64, _len: u64) {}
    }

    #[tokio::test]
    async fn faults_hit_only_the_calls_they_name() {
        let store = FailingStore::new(MemoryStore::new("b").with_page_size(2));
        for i in 0..5 {
            store.inner().put(&format!("k{i}"), "x");
        }
        store.fail_list(2, slow_down("ListObjectsV2", "s3://b/"));
        let err = list_all(&store, "").await.unwrap_err();
        assert!(
            matches!(&err, StoreError::ServerError(f) if f.status == 503),
            "{err}"
        );
        assert_eq!(store.lists(), 2);
        assert_eq!(list_all(&store, "").await.unwrap().len(), 5);
        assert_eq!(store.lists(), 5);

        let etag = store.inner().put("o", "hello");
        let other = ETag::new("other");
        let get = |if_match: Option<ETag>| GetRequest {
            key: key("o"),
            range: None,
            if_match,
        };
        store.on_get(1, GetFault::ETag(other.clone()));
        store.on_get(2, GetFault::ETag(other.clone()));
        store.on_get(4, GetFault::Corrupt);
        assert_eq!(store.get(get(None)).await.unwrap().etag, other);
        let pinned = store.get(get(Some(etag.clone()))).await;
        assert!(matches!(pinned, Err(StoreError::Changed { .. })));
        let mut plain = store.get(get(Some(etag.clone()))).await.unwrap();
        assert_eq!(plain.etag, etag);
        assert!(!plain.etag_is_md5);
        assert_eq!(plain.body.next_chunk().await.unwrap().unwrap(), "hello");
        let mut corrupt = store.get(get(None)).await.unwrap();
        let chunk = corrupt.body.next_chunk().await.unwrap().unwrap();
        assert_eq!(chunk[..], [b'h' ^ 0xff, b'e', b'l', b'l', b'o']);
        assert_eq!(store.gets(), 4);
    }

    #[tokio::test]
    async fn a_cut_body_resumes_from_the_last_byte_written() {
        let f = fixture(config());
        let bytes = data(3000, 1);
        let etag = f.store.inner().put("o", bytes.clone());
        f.store.on_get(1, GetFault::CutAfter(1000));
        let outcome = f.ensure("o", &etag, bytes.len()).await.unwrap();
        assert_eq!(
            outcome,
            Outcome::Downloaded {
                etag: etag.clone(),
                size: 3000
            }
        );
        // Resumed: one more GET, for the missing bytes only, pinned to the version.
        assert_eq!(f.store.gets(), 2);
        assert_eq!(f.ranges(), [None, Some(1000..3000)]);
        assert_eq!(f.store.requests()[1].if_match, Some(etag.clone()));
        f.assert_holds("o", &bytes, &etag);
        f.assert_no_temp_files();
    }

    #[tokio::test]
    async fn a_cut_part_resumes_within_its_part() {
        let f = fixture(config());
        let bytes = data(2 * PART as usize - 100, 2);
        let etag = f.store.inner().put("o", bytes.clone());
        f.store.on_get(2, GetFault::CutAfter(500));
        f.ensure("o", &etag, bytes.len()).await.unwrap();
        let end = bytes.len() as u64;
        assert_eq!(
            f.ranges(),
            [Some(0..PART), Some(PART..end), Some(PART + 500..end)]
        );
        f.assert_holds("o", &bytes, &etag);
        f.assert_no_temp_files();
    }

    #[tokio::test]
    async fn a_stalled_body_times_out_and_resumes() {
        let f = fixture(config());
        let bytes = data(3000, 3);
        let etag = f.store.inner().put("o", bytes.clone());
        f.store.on_get(1, GetFault::StallAfter(1200));
        let started = Instant::now();
        f.ensure("o", &etag, bytes.len()).await.unwrap();
        assert!(started.elapsed() >= STALL, "the stall timeout fired");
        assert_eq!(f.ranges(), [None, Some(1200..3000)]);
        f.assert_holds("o", &bytes, &etag);
        f.assert_no_temp_files();
    }

    #[tokio::test]
    async fn body_failures_are_bounded_and_the_error_says_how_many() {
        let f = fixture(FetchConfig {
            max_attempts: 2,
            ..config()
        });
        let old = data(2000, 4);
        let old_etag = f.commit_previous("o", &old);
        let bytes = data(3000, 5);
        let etag = f.store.inner().put("o", bytes.clone());
        f.store.on_get(1, GetFault::CutAfter(1000));
        f.store.on_get(2, GetFault::StallAfter(500));
        let err = f.ensure("o", &etag, bytes.len()).await.unwrap_err();
        match &err {
            FetchError::Store(StoreError::Body(BodyError::GaveUp { attempts: 2, last })) => {
                assert!(matches!(**last, BodyError::Stalled { .. }), "{last}")
            }
            other => panic!("expected a body error, got {other:?}"),
        }
        assert!(err.to_string().contains("after 2 attempts"), "{err}");
        assert_eq!(f.store.gets(), 2);
        f.assert_holds("o", &old, &old_etag);
        f.assert_no_temp_files();
    }

    #[tokio::test]
    async fn a_change_between_parts_starts_over_when_unpinned() {
        let f = fixture(config());
        let bytes = data(2 * PART as usize - 100, 6);
        let etag = f.store.inner().put("o", bytes.clone());
        f.store.on_get(2, GetFault::ETag(ETag::new("changed")));
        let outcome = f.ensure("o", &etag, bytes.len()).await.unwrap();
        assert_eq!(
            outcome,
            Outcome::Downloaded {
                etag: etag.clone(),
                size: bytes.len() as u64
            }
        );
        let end = bytes.len() as u64;
        // The second part was pinned to the first response's ETag, and the whole
        // object was fetched again, unpinned, from byte 0.
        let requests = f.store.requests();
        assert_eq!(requests[1].if_match, Some(etag.clone()));
        assert_eq!(
            f.ranges(),
            [
                Some(0..PART),
                Some(PART..end),
                Some(0..PART),
                Some(PART..end)
            ]
        );
        assert_eq!(requests[2].if_match, None);
        f.assert_holds("o", &bytes, &etag);
        f.assert_no_temp_files();
    }

    #[tokio::test]
    async fn an_object_that_keeps_changing_fails_as_unstable() {
        let f = fixture(config());
        let old = data(2000, 14);
        let old_etag = f.commit_previous("o", &old);
        let bytes = data(2 * PART as usize - 100, 15);
        let etag = f.store.inner().put("o", bytes.clone());
        // The second part of every whole attempt finds another version.
        for attempt in 0..u64::from(WHOLE_ATTEMPTS) {
            f.store
                .on_get(2 * attempt + 2, GetFault::ETag(ETag::new("changed")));
        }
        let err = f.ensure("o", &etag, bytes.len()).await.unwrap_err();
        assert!(matches!(err, FetchError::Unstable { .. }), "{err:?}");
        assert_eq!(f.store.gets(), 2 * u64::from(WHOLE_ATTEMPTS));
        f.assert_holds("o", &old, &old_etag);
        f.assert_no_temp_files();
    }

    #[tokio::test]
    async fn a_change_between_parts_fails_a_pinned_download() {
        let f = fixture(config());
        let old = data(2000, 7);
        let old_etag = f.commit_previous("o", &old);
        let bytes = data(2 * PART as usize - 100, 8);
        let etag = f.store.inner().put("o", bytes.clone());
        f.store.on_get(2, GetFault::ETag(ETag::new("changed")));
        let watch = Arc::new(Watch::default());
        let observer = Arc::clone(&watch) as Arc<dyn Observer>;
        let err = f
            .fetcher
            .ensure_observed(
                &key("o"),
                &etag,
                bytes.len() as u64,
                Path::new("o"),
                Some(observer),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, FetchError::Store(StoreError::Changed { .. })),
            "{err:?}"
        );
        // A reader of one version never sees another: no second attempt.
        assert_eq!(f.store.gets(), 2);
        assert_eq!(watch.started.load(Ordering::Relaxed), 1);
        assert!(
            f.store
                .requests()
                .iter()
                .all(|r| r.if_match.as_ref() == Some(&etag))
        );
        f.assert_holds("o", &old, &old_etag);
        f.assert_no_temp_files();
    }

    #[tokio::test]
    async fn bytes_that_contradict_an_md5_etag_are_fetched_again() {
        let f = fixture(config());
        let bytes = data(3000, 9);
        let etag = ETag::new(&md5_of(&bytes));
        f.store
            .inner()
            .put_with_etag("o", bytes.clone(), etag.clone());
        f.store.claim_md5_etags(true);
        f.store.on_get(1, GetFault::Corrupt);
        f.ensure("o", &etag, bytes.len()).await.unwrap();
        // Fetched whole again, not resumed: the bad byte could be anywhere.
        assert_eq!(f.ranges(), [None, None]);
        f.assert_holds("o", &bytes, &etag);
        f.assert_no_temp_files();
    }

    #[tokio::test]
    async fn bytes_that_contradict_an_md5_etag_are_never_committed() {
        let f = fixture(config());
        let old = data(2000, 10);
        let old_etag = f.commit_previous("o", &old);
        let bytes = data(3000, 11);
        let etag = ETag::new(&md5_of(&bytes));
        f.store
            .inner()
            .put_with_etag("o", bytes.clone(), etag.clone());
        f.store.claim_md5_etags(true);
        for n in 1..=u64::from(WHOLE_ATTEMPTS) {
            f.store.on_get(n, GetFault::Corrupt);
        }
        let err = f.ensure("o", &etag, bytes.len()).await.unwrap_err();
        match &err {
            FetchError::Corrupt { etag: e, md5, .. } => {
                assert_eq!(e, &etag);
                assert_ne!(md5, &md5_of(&bytes));
            }
            other => panic!("expected a corrupt download, got {other:?}"),
        }
        assert_eq!(f.store.gets(), u64::from(WHOLE_ATTEMPTS));
        f.assert_holds("o", &old, &old_etag);
        f.assert_no_temp_files();
    }

    #[tokio::test]
    async fn a_failed_request_is_left_to_the_stores_own_retries() {
        let f = fixture(config());
        let old = data(2000, 12);
        let old_etag = f.commit_previous("o", &old);
        let bytes = data(3000, 13);
        let etag = f.store.inner().put("o", bytes.clone());
        // Transient, so only the request's own failure keeps the fetcher from retrying it.
        f.store
            .on_get(1, GetFault::Fail(slow_down("GetObject", "s3://b/o")));
        let err = f.ensure("o", &etag, bytes.len()).await.unwrap_err();
        assert!(
            matches!(err, FetchError::Store(StoreError::ServerError(_))),
            "{err:?}"
        );
        assert_eq!(f.store.gets(), 1);
        f.assert_holds("o", &old, &old_etag);
        f.assert_no_temp_files();

        // The same for the request that would resume a cut body.
        f.store.on_get(2, GetFault::CutAfter(1000));
        f.store.on_get(3, GetFault::Fail(timed_out()));
        let err = f.ensure("o", &etag, bytes.len()).await.unwrap_err();
        assert!(
            matches!(err, FetchError::Store(StoreError::Timeout { .. })),
            "{err:?}"
        );
        assert_eq!(f.store.gets(), 3);
        f.assert_holds("o", &old, &old_etag);
        f.assert_no_temp_files();
    }

    #[tokio::test]
    async fn an_empty_object_is_never_asked_for_an_empty_range() {
        let f = fixture(config());
        let etag = f.store.inner().put("o", Vec::new());
        f.store.on_get(1, GetFault::CutAfter(0));
        f.ensure("o", &etag, 0).await.unwrap();
        f.assert_holds("o", &[], &etag);
        let empty: Vec<_> = f
            .ranges()
            .into_iter()
            .flatten()
            .filter(|r| r.is_empty())
            .collect();
        assert!(empty.is_empty(), "asked for empty ranges {empty:?}");
    }
}
