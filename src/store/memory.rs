//! An in-memory object store for unit tests of logic; integration tests use a real S3 server.

pub mod sink;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use parking_lot::Mutex;

use super::{
    ArchivedObject, Body, BoxFuture, ETag, GetRequest, GetResponse, Key, ListPage, ObjectMeta,
    ObjectStore, RestoreAnswer, RestoreRequest, RestoreState, StorageClass, StoreError,
};

struct Object {
    data: Bytes,
    etag: ETag,
    last_modified: SystemTime,
    class: StorageClass,
    /// An Intelligent-Tiering object in an archive tier (a listing cannot tell).
    tier_archived: bool,
    restore: RestoreState,
}

impl Object {
    fn new(data: Bytes, etag: ETag, generation: u64) -> Object {
        Object {
            data,
            etag,
            last_modified: SystemTime::UNIX_EPOCH
                + std::time::Duration::from_secs(1_700_000_000 + generation),
            class: StorageClass::Standard,
            tier_archived: false,
            restore: RestoreState::NotRestored,
        }
    }

    /// Whether a GET fails until a restore: as S3 answers `InvalidObjectState`.
    fn archived(&self) -> bool {
        (self.class.needs_restore() || self.tier_archived) && self.restore != RestoreState::Restored
    }
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
    /// HEADs asking whether an object is restored.
    pub heads: AtomicU64,
    /// Every restore request, in order.
    restores: Mutex<Vec<(Key, RestoreRequest)>>,
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
            heads: AtomicU64::new(0),
            restores: Mutex::new(Vec::new()),
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
        let object = Object::new(data.into(), etag.clone(), generation);
        self.objects.lock().insert(key.to_string(), object);
        etag
    }

    /// Stores an object of storage class `class` with a fresh ETag.
    pub fn put_with_class(&self, key: &str, data: impl Into<Bytes>, class: StorageClass) -> ETag {
        let etag = self.put(key, data);
        self.set_class(key, class);
        etag
    }

    /// Stores an object with the given ETag (as S3 computes it on upload).
    pub fn put_with_etag(&self, key: &str, data: impl Into<Bytes>, etag: ETag) {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let object = Object::new(data.into(), etag, generation);
        self.objects.lock().insert(key.to_string(), object);
    }

    /// Moves an object to another storage class, keeping its bytes and ETag (as a
    /// lifecycle rule, or a copy onto itself, does); a restored copy is dropped.
    pub fn set_class(&self, key: &str, class: StorageClass) {
        if let Some(object) = self.objects.lock().get_mut(key) {
            object.class = class;
            object.tier_archived = false;
            object.restore = RestoreState::NotRestored;
        }
    }

    /// Moves an Intelligent-Tiering object into an archive tier: its listing does
    /// not change, its GET fails until it is restored.
    pub fn archive_tier(&self, key: &str) {
        if let Some(object) = self.objects.lock().get_mut(key) {
            object.class = StorageClass::IntelligentTiering;
            object.tier_archived = true;
            object.restore = RestoreState::NotRestored;
        }
    }

    /// Finishes every restore in progress, as S3 does hours later.
    pub fn complete_restores(&self) {
        for object in self.objects.lock().values_mut() {
            if object.restore == RestoreState::InProgress {
                object.restore = RestoreState::Restored;
            }
        }
    }

    /// Every restore request so far, in order.
    pub fn restore_requests(&self) -> Vec<(Key, RestoreRequest)> {
        self.restores.lock().clone()
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

    fn page(&self, prefix: &str, delimited: bool, token: Option<String>, size: usize) -> ListPage {
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
            if count == size {
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
                storage_class: object.class.clone(),
                // As S3 lists `RestoreStatus` when asked: for restores of its classes.
                restore: match object.class.needs_restore() {
                    true => object.restore,
                    false => RestoreState::NotRestored,
                },
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
            None => Ok(self.page(prefix, delimited, token, self.page_size)),
        };
        Box::pin(async move { result })
    }

    fn list_after(
        &self,
        prefix: &str,
        start_after: &str,
        max_keys: u32,
    ) -> BoxFuture<'_, Result<ListPage, StoreError>> {
        let size = (max_keys as usize).clamp(1, self.page_size);
        // The token is the first key of the page: the first key after `start_after`.
        let first = self
            .objects
            .lock()
            .range::<str, _>((
                std::ops::Bound::Excluded(start_after),
                std::ops::Bound::Unbounded,
            ))
            .map(|(k, _)| k.clone())
            .find(|k| k.starts_with(prefix));
        let result = match (self.unreachable(), first) {
            (Some(e), _) => Err(e),
            (None, None) => Ok(ListPage::default()),
            (None, Some(first)) => Ok(self.page(prefix, false, Some(first), size)),
        };
        Box::pin(async move { result })
    }

    fn list_first(
        &self,
        prefix: &str,
        max_keys: u32,
    ) -> BoxFuture<'_, Result<ListPage, StoreError>> {
        let size = (max_keys as usize).clamp(1, self.page_size);
        let result = match self.unreachable() {
            Some(e) => Err(e),
            None => Ok(self.page(prefix, true, None, size)),
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
            Some(object) if object.archived() => Err(ArchivedObject {
                bucket: self.bucket.clone(),
                key: request.key.as_str().to_string(),
                action: "GetObject",
                storage_class: Some(object.class.clone()),
                access_tier: object.tier_archived.then(|| "ARCHIVE_ACCESS".to_string()),
            }
            .into()),
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

    fn restore_state(&self, key: &Key) -> BoxFuture<'_, Result<RestoreState, StoreError>> {
        self.heads.fetch_add(1, Ordering::Relaxed);
        let result = match (self.unreachable(), self.objects.lock().get(key.as_str())) {
            (Some(e), _) => Err(e),
            (None, None) => Err(self.no_such_key(key)),
            (None, Some(o)) if o.class.needs_restore() || o.tier_archived => Ok(o.restore),
            (None, Some(_)) => Ok(RestoreState::Restored),
        };
        Box::pin(async move { result })
    }

    fn request_restore(
        &self,
        key: &Key,
        request: &RestoreRequest,
    ) -> BoxFuture<'_, Result<RestoreAnswer, StoreError>> {
        let result = match self.unreachable() {
            Some(e) => Err(e),
            None => self.restore(key, request),
        };
        Box::pin(async move { result })
    }
}

impl MemoryStore {
    fn no_such_key(&self, key: &Key) -> StoreError {
        StoreError::NoSuchKey {
            bucket: self.bucket.clone(),
            key: key.as_str().to_string(),
        }
    }

    /// A restore as S3 takes it: started once, then in progress until
    /// `complete_restores`.
    fn restore(&self, key: &Key, request: &RestoreRequest) -> Result<RestoreAnswer, StoreError> {
        self.restores.lock().push((key.clone(), request.clone()));
        let mut objects = self.objects.lock();
        let object = objects
            .get_mut(key.as_str())
            .ok_or_else(|| self.no_such_key(key))?;
        if !object.class.needs_restore() && !object.tier_archived {
            return Ok(RestoreAnswer::NotArchived);
        }
        Ok(match object.restore {
            RestoreState::InProgress => RestoreAnswer::InProgress,
            RestoreState::NotRestored | RestoreState::Restored => {
                if object.restore == RestoreState::NotRestored {
                    object.restore = RestoreState::InProgress;
                }
                RestoreAnswer::Requested
            }
        })
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

    fn get(key: &str) -> GetRequest {
        GetRequest {
            key: Key::new(key).unwrap(),
            range: None,
            if_match: None,
        }
    }

    fn restore_request(class: StorageClass) -> RestoreRequest {
        RestoreRequest {
            days: 3,
            tier: crate::store::RetrievalTier::Bulk,
            storage_class: class,
        }
    }

    #[tokio::test]
    async fn an_archived_object_is_listed_but_not_served_until_restored() {
        let store = MemoryStore::new("b");
        let etag = store.put_with_class("cold", "x", StorageClass::Glacier);
        store.put_with_class("ir", "y", StorageClass::GlacierIr);
        let listed = list_all(&store, "").await.unwrap();
        let cold = &listed[0];
        assert_eq!(
            (cold.storage_class.clone(), cold.restore, cold.archived()),
            (StorageClass::Glacier, RestoreState::NotRestored, true)
        );
        assert!(
            !listed[1].archived(),
            "Glacier Instant Retrieval is read as usual"
        );
        let Err(StoreError::Archived(archived)) = store.get(get("cold")).await else {
            panic!("a GET of an archived object fails as archived");
        };
        assert_eq!(archived.storage_class, Some(StorageClass::Glacier));
        assert!(store.get(get("ir")).await.is_ok());
        let key = Key::new("cold").unwrap();
        let ask = restore_request(StorageClass::Glacier);
        assert_eq!(
            store.restore_state(&key).await.unwrap(),
            RestoreState::NotRestored
        );
        assert_eq!(
            store.request_restore(&key, &ask).await.unwrap(),
            RestoreAnswer::Requested
        );
        assert_eq!(
            store.request_restore(&key, &ask).await.unwrap(),
            RestoreAnswer::InProgress
        );
        assert_eq!(
            store.restore_state(&key).await.unwrap(),
            RestoreState::InProgress
        );
        assert!(store.get(get("cold")).await.is_err(), "still archived");
        store.complete_restores();
        assert_eq!(
            store.restore_state(&key).await.unwrap(),
            RestoreState::Restored
        );
        let listed = list_all(&store, "cold").await.unwrap();
        assert!(!listed[0].archived(), "a restored copy is readable");
        let response = store.get(get("cold")).await.unwrap();
        assert_eq!(response.etag, etag);
        assert_eq!(store.restore_requests().len(), 2);
        assert_eq!(store.heads.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn an_intelligent_tiering_archive_tier_shows_only_on_get() {
        let store = MemoryStore::new("b");
        let etag = store.put_with_class("t", "x", StorageClass::IntelligentTiering);
        let key = Key::new("t").unwrap();
        let ask = restore_request(StorageClass::IntelligentTiering);
        assert_eq!(
            store.restore_state(&key).await.unwrap(),
            RestoreState::Restored
        );
        assert_eq!(
            store.request_restore(&key, &ask).await.unwrap(),
            RestoreAnswer::NotArchived
        );
        store.archive_tier("t");
        let listed = list_all(&store, "").await.unwrap();
        assert!(!listed[0].archived(), "the listing cannot tell");
        assert_eq!(listed[0].etag, etag);
        let Err(StoreError::Archived(archived)) = store.get(get("t")).await else {
            panic!("the GET tells");
        };
        assert_eq!(archived.access_tier.as_deref(), Some("ARCHIVE_ACCESS"));
        assert_eq!(
            store.restore_state(&key).await.unwrap(),
            RestoreState::NotRestored
        );
        store.request_restore(&key, &ask).await.unwrap();
        store.complete_restores();
        assert!(store.get(get("t")).await.is_ok());
        store.set_class("t", StorageClass::Glacier);
        assert!(
            store.get(get("t")).await.is_err(),
            "moved to Glacier: archived again"
        );
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
