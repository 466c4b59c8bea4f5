//! The write side of the in-memory store, for unit tests of restore and archive
//! logic: S3's ETags (MD5, or MD5 of part MD5s for multipart), multipart uploads
//! that can be made to fail at a given part, and counters of what happened.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use md5::Digest;
use parking_lot::Mutex;

use super::MemoryStore;
use crate::store::{
    BoxFuture, ETag, Key, ObjectSink, PartTag, PutOptions, StoreError, UnexpectedFailure, UploadId,
};

/// A multipart upload in progress: its key and the parts received, by number.
type Upload = (Key, BTreeMap<u32, Bytes>);

/// Writes into a `MemoryStore`.
pub struct MemorySink {
    store: Arc<MemoryStore>,
    uploads: Mutex<HashMap<String, Upload>>,
    next_upload: AtomicU64,
    /// Part numbers that fail with access denied.
    fail_parts: Mutex<Vec<u32>>,
    /// The options of every PUT and multipart upload started, in order.
    pub options: Mutex<Vec<PutOptions>>,
    pub puts: AtomicU64,
    pub parts: AtomicU64,
    pub aborts: AtomicU64,
    pub deletes: AtomicU64,
}

impl MemorySink {
    pub fn new(store: Arc<MemoryStore>) -> MemorySink {
        MemorySink {
            store,
            uploads: Mutex::new(HashMap::new()),
            next_upload: AtomicU64::new(0),
            fail_parts: Mutex::new(Vec::new()),
            options: Mutex::new(Vec::new()),
            puts: AtomicU64::new(0),
            parts: AtomicU64::new(0),
            aborts: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
        }
    }

    /// Makes every upload of part `number` fail.
    pub fn fail_part(&self, number: u32) {
        self.fail_parts.lock().push(number);
    }

    /// Multipart uploads neither completed nor aborted.
    pub fn open_uploads(&self) -> usize {
        self.uploads.lock().len()
    }

    fn no_upload(&self, key: &Key) -> StoreError {
        StoreError::NoSuchKey {
            bucket: self.store.bucket.clone(),
            key: key.as_str().to_string(),
        }
    }
}

fn md5_etag(data: &[u8]) -> ETag {
    ETag::new(&format!("{:x}", md5::Md5::digest(data)))
}

impl ObjectSink for MemorySink {
    fn bucket(&self) -> &str {
        &self.store.bucket
    }

    fn put(
        &self,
        key: Key,
        data: Bytes,
        options: PutOptions,
    ) -> BoxFuture<'_, Result<ETag, StoreError>> {
        self.puts.fetch_add(1, Ordering::Relaxed);
        self.options.lock().push(options);
        let etag = md5_etag(&data);
        self.store.put_with_etag(key.as_str(), data, etag.clone());
        Box::pin(async move { Ok(etag) })
    }

    fn create_multipart(
        &self,
        key: Key,
        options: PutOptions,
    ) -> BoxFuture<'_, Result<UploadId, StoreError>> {
        self.options.lock().push(options);
        let id = format!(
            "upload-{}",
            self.next_upload.fetch_add(1, Ordering::Relaxed)
        );
        self.uploads
            .lock()
            .insert(id.clone(), (key, BTreeMap::new()));
        Box::pin(async move { Ok(UploadId(id)) })
    }

    fn upload_part(
        &self,
        key: Key,
        upload: UploadId,
        number: u32,
        data: Bytes,
    ) -> BoxFuture<'_, Result<ETag, StoreError>> {
        self.parts.fetch_add(1, Ordering::Relaxed);
        let result = if self.fail_parts.lock().contains(&number) {
            Err(StoreError::AccessDenied {
                action: "UploadPart",
                resource: key.to_string(),
                expected_owner: None,
            })
        } else {
            match self.uploads.lock().get_mut(&upload.0) {
                None => Err(self.no_upload(&key)),
                Some((_, parts)) => {
                    let etag = md5_etag(&data);
                    parts.insert(number, data);
                    Ok(etag)
                }
            }
        };
        Box::pin(async move { result })
    }

    fn complete_multipart(
        &self,
        key: Key,
        upload: UploadId,
        parts: Vec<PartTag>,
    ) -> BoxFuture<'_, Result<ETag, StoreError>> {
        let result = match self.uploads.lock().remove(&upload.0) {
            None => Err(self.no_upload(&key)),
            Some((_, held)) => {
                let mut data = BytesMut::new();
                let mut digests = Vec::new();
                let mut ok = true;
                for tag in &parts {
                    match held.get(&tag.number) {
                        Some(part) if md5_etag(part) == tag.etag => {
                            data.extend_from_slice(part);
                            digests.extend_from_slice(&md5::Md5::digest(part));
                        }
                        _ => ok = false,
                    }
                }
                if ok {
                    let etag =
                        ETag::new(&format!("{:x}-{}", md5::Md5::digest(&digests), parts.len()));
                    self.store
                        .put_with_etag(key.as_str(), data.freeze(), etag.clone());
                    Ok(etag)
                } else {
                    // What S3 answers a part list it does not hold.
                    Err(UnexpectedFailure {
                        action: "CompleteMultipartUpload",
                        resource: format!("s3://{}/{key}", self.store.bucket),
                        status: Some(400),
                        code: Some("InvalidPart".to_string()),
                        source: "one or more of the specified parts could not be found".into(),
                    }
                    .into())
                }
            }
        };
        Box::pin(async move { result })
    }

    fn abort_multipart(
        &self,
        _key: Key,
        upload: UploadId,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        self.aborts.fetch_add(1, Ordering::Relaxed);
        self.uploads.lock().remove(&upload.0);
        Box::pin(async move { Ok(()) })
    }

    fn delete(&self, key: Key) -> BoxFuture<'_, Result<(), StoreError>> {
        self.deletes.fetch_add(1, Ordering::Relaxed);
        self.store.delete(key.as_str());
        Box::pin(async move { Ok(()) })
    }
}
