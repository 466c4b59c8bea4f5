//! An in-memory object store for unit tests of logic; integration tests use a real S3 server.

pub mod sink;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use parking_lot::Mutex;

use super::{
    Body, BoxFuture, ETag, GetRequest, GetResponse, Key, ListPage, ObjectMeta, ObjectStore,
    StoreError,
};

struct Object {
    data: Bytes,
    etag: ETag,
    last_modified: SystemTime,
}

/// A bucket held in memory, with request counters.
pub struct MemoryStore {
    bucket: String,
    objects: Mutex<BTreeMap<String, Object>>,
    page_size: usize,
    generation: AtomicU64,
    offline: std::sync::atomic::AtomicBool,
    pub lists: AtomicU64,
    pub gets: AtomicU64,
}

impl MemoryStore {
    pub fn new(bucket: &str) -> MemoryStore {
        MemoryStore {
            bucket: bucket.to_string(),
            objects: Mutex::new(BTreeMap::new()),
            page_size: 1000,
            generation: AtomicU64::new(0),
            offline: std::sync::atomic::AtomicBool::new(false),
            lists: AtomicU64::new(0),
            gets: AtomicU64::new(0),
        }
    }

    /// Uses pages of `n` keys, to exercise pagination.
    pub fn with_page_size(mut self, n: usize) -> MemoryStore {
        self.page_size = n.max(1);
        self
    }

    /// Stores an object with a fresh ETag.
    pub fn put(&self, key: &str, data: impl Into<Bytes>) -> ETag {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let etag = ETag::new(&format!("{generation:032x}"));
        self.objects.lock().insert(
            key.to_string(),
            Object {
                data: data.into(),
                etag: etag.clone(),
                last_modified: SystemTime::UNIX_EPOCH
                    + std::time::Duration::from_secs(1_700_000_000 + generation),
            },
        );
        etag
    }

    /// Stores an object with the given ETag (as S3 computes it on upload).
    pub fn put_with_etag(&self, key: &str, data: impl Into<Bytes>, etag: ETag) {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        self.objects.lock().insert(
            key.to_string(),
            Object {
                data: data.into(),
                etag,
                last_modified: SystemTime::UNIX_EPOCH
                    + std::time::Duration::from_secs(1_700_000_000 + generation),
            },
        );
    }

    /// The bytes of an object, if it exists.
    pub fn bytes(&self, key: &str) -> Option<Bytes> {
        self.objects.lock().get(key).map(|o| o.data.clone())
    }

    /// Makes every request fail as if S3 were unreachable.
    pub fn set_offline(&self, offline: bool) {
        self.offline.store(offline, Ordering::Relaxed);
    }

    fn unreachable(&self) -> Option<StoreError> {
        self.offline
            .load(Ordering::Relaxed)
            .then(|| StoreError::Unreachable {
                endpoint: "memory".to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "memory store is offline",
                )
                .into(),
            })
    }

    pub fn delete(&self, key: &str) {
        self.objects.lock().remove(key);
    }

    fn page(&self, prefix: &str, delimited: bool, token: Option<String>) -> ListPage {
        self.lists.fetch_add(1, Ordering::Relaxed);
        let objects = self.objects.lock();
        let mut page = ListPage::default();
        let mut count = 0;
        // The token is the first key of the next page.
        let start = token.unwrap_or_default();
        for (key, object) in objects.range(start..) {
            if !key.starts_with(prefix) {
                continue;
            }
            if count == self.page_size {
                page.next = Some(key.clone());
                break;
            }
            if delimited && let Some(slash) = key[prefix.len()..].find('/') {
                let common = key[..prefix.len() + slash + 1].to_string();
                if page.prefixes.last() != Some(&common) {
                    page.prefixes.push(common);
                    count += 1;
                }
                continue;
            }
            page.objects.push(ObjectMeta {
                key: Key::new(key.clone()).expect("stored keys are non-empty"),
                size: object.data.len() as u64,
                etag: object.etag.clone(),
                last_modified: object.last_modified,
            });
            count += 1;
        }
        page
    }
}

struct MemoryBody(Option<Bytes>);

impl Body for MemoryBody {
    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Option<Bytes>, StoreError>> {
        let chunk = self.0.take();
        Box::pin(async move { Ok(chunk) })
    }
}

impl ObjectStore for MemoryStore {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    fn list_page(
        &self,
        prefix: &str,
        delimited: bool,
        token: Option<String>,
    ) -> BoxFuture<'_, Result<ListPage, StoreError>> {
        let result = match self.unreachable() {
            Some(e) => Err(e),
            None => Ok(self.page(prefix, delimited, token)),
        };
        Box::pin(async move { result })
    }

    fn get(&self, request: GetRequest) -> BoxFuture<'_, Result<GetResponse, StoreError>> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        if let Some(e) = self.unreachable() {
            return Box::pin(async move { Err(e) });
        }
        let objects = self.objects.lock();
        let result = match objects.get(request.key.as_str()) {
            None => Err(StoreError::NoSuchKey {
                bucket: self.bucket.clone(),
                key: request.key.as_str().to_string(),
            }),
            Some(object) if request.if_match.as_ref().is_some_and(|e| e != &object.etag) => {
                Err(StoreError::Changed {
                    bucket: self.bucket.clone(),
                    key: request.key.as_str().to_string(),
                })
            }
            Some(object) => {
                let size = object.data.len() as u64;
                let range = request.range.clone().unwrap_or(0..size);
                let end = range.end.min(size);
                let start = range.start.min(end);
                Ok(GetResponse {
                    // Its ETags are generation counters, not MD5s.
                    etag_is_md5: false,
                    etag: object.etag.clone(),
                    last_modified: object.last_modified,
                    object_size: size,
                    start,
                    content_length: end - start,
                    body: Box::new(MemoryBody(Some(
                        object.data.slice(start as usize..end as usize),
                    ))),
                })
            }
        };
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::list_all;

    #[tokio::test]
    async fn pages_cover_every_key_once() {
        let store = MemoryStore::new("b").with_page_size(3);
        for i in 0..10 {
            store.put(&format!("k{i:02}"), vec![i as u8]);
        }
        store.put("other", "x");
        let keys: Vec<_> = list_all(&store, "k")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(keys.len(), 10);
        assert_eq!(store.lists.load(Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn delimited_listing_groups_prefixes() {
        let store = MemoryStore::new("b");
        store.put("a/1", "x");
        store.put("a/2", "x");
        store.put("b", "x");
        let page = store.list_page("", true, None).await.unwrap();
        assert_eq!(page.prefixes, vec!["a/".to_string()]);
        assert_eq!(page.objects.len(), 1);
    }
}
