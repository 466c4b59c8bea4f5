//! A store wrapper that fails on purpose: the Nth list or GET fails, a body is
//! cut, stalls, is corrupted, or the object changes between requests. Lets the
//! download's resume and retry paths be unit-tested in milliseconds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;

use super::{Body, BoxFuture, ETag, GetRequest, GetResponse, ListPage, ObjectStore, StoreError};

/// What happens to one GET.
#[derive(Debug)]
pub enum GetFault {
    /// The request fails with this error before any response.
    Fail(StoreError),
    /// The body fails with `StoreError::Body` after this many bytes, as a reset connection does.
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
                return Err(StoreError::Body(format!(
                    "connection reset after {} bytes",
                    self.delivered
                )));
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
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::{Key, list_all};

    fn key(name: &str) -> Key {
        Key::new(name).unwrap()
    }

    #[tokio::test]
    async fn faults_hit_only_the_calls_they_name() {
        let store = FailingStore::new(MemoryStore::new("b").with_page_size(2));
        for i in 0..5 {
            store.inner().put(&format!("k{i}"), "x");
        }
        store.fail_list(2, StoreError::ServerError("503".into()));
        let err = list_all(&store, "").await.unwrap_err();
        assert!(matches!(err, StoreError::ServerError(_)), "{err}");
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
}
