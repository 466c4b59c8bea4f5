//! Writing one object in parts through an `ObjectSink`, never leaving an
//! unfinished upload behind: whatever stops the parts, or the completion itself,
//! aborts the upload so S3 keeps (and bills) no orphaned parts.

use bytes::Bytes;

use super::{ETag, Key, ObjectSink, PartTag, PutOptions, StoreError, UploadId};

/// A multipart upload in progress.
pub struct Multipart<'a> {
    sink: &'a dyn ObjectSink,
    key: Key,
    upload: UploadId,
    parts: Vec<PartTag>,
    bytes: u64,
}

/// A completed upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uploaded {
    pub etag: ETag,
    pub parts: u64,
    pub bytes: u64,
}

impl<'a> Multipart<'a> {
    /// Starts a multipart upload of `key`.
    pub async fn start(
        sink: &'a dyn ObjectSink,
        key: &Key,
        options: PutOptions,
    ) -> Result<Multipart<'a>, StoreError> {
        let upload = sink.create_multipart(key.clone(), options).await?;
        Ok(Multipart {
            sink,
            key: key.clone(),
            upload,
            parts: Vec::new(),
            bytes: 0,
        })
    }

    /// Uploads the next part (numbered from 1 in the order pushed).
    pub async fn push(&mut self, data: Bytes) -> Result<(), StoreError> {
        let number = self.parts.len() as u32 + 1;
        let len = data.len() as u64;
        let etag = self
            .sink
            .upload_part(self.key.clone(), self.upload.clone(), number, data)
            .await?;
        self.parts.push(PartTag { number, etag });
        self.bytes += len;
        Ok(())
    }

    /// Completes the upload if `filled` (the outcome of pushing the parts) is
    /// `Ok`; otherwise, or if the completion fails, aborts it and returns the error.
    pub async fn finish<T, E>(self, filled: Result<T, E>) -> Result<(T, Uploaded), E>
    where
        E: From<StoreError>,
    {
        let value = match filled {
            Ok(value) => value,
            Err(e) => {
                self.abort().await;
                return Err(e);
            }
        };
        let (parts, bytes) = (self.parts.len() as u64, self.bytes);
        let completed = self
            .sink
            .complete_multipart(self.key.clone(), self.upload.clone(), self.parts.clone())
            .await;
        match completed {
            Ok(etag) => Ok((value, Uploaded { etag, parts, bytes })),
            Err(e) => {
                self.abort().await;
                Err(e.into())
            }
        }
    }

    /// Drops the upload and the parts S3 holds for it (a failure is only logged:
    /// the error that led here is the one to report).
    async fn abort(self) {
        if let Err(e) = self
            .sink
            .abort_multipart(self.key.clone(), self.upload)
            .await
        {
            tracing::warn!(key = %self.key, "cannot abort the multipart upload: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::memory::sink::MemorySink;

    fn sink() -> (Arc<MemoryStore>, MemorySink) {
        let store = Arc::new(MemoryStore::new("b"));
        let sink = MemorySink::new(Arc::clone(&store));
        (store, sink)
    }

    #[tokio::test]
    async fn parts_make_the_object() {
        let (store, sink) = sink();
        let key = Key::new("k").unwrap();
        let mut up = Multipart::start(&sink, &key, PutOptions::default())
            .await
            .unwrap();
        up.push(Bytes::from_static(b"hello ")).await.unwrap();
        up.push(Bytes::from_static(b"world")).await.unwrap();
        let ((), done) = up.finish(Ok::<(), StoreError>(())).await.unwrap();
        assert_eq!((done.parts, done.bytes), (2, 11));
        assert!(done.etag.as_str().ends_with("-2\""));
        assert_eq!(store.bytes("k").unwrap(), &b"hello world"[..]);
        assert_eq!(sink.open_uploads(), 0);
    }

    #[tokio::test]
    async fn a_failure_while_filling_aborts() {
        let (store, sink) = sink();
        let key = Key::new("k").unwrap();
        let mut up = Multipart::start(&sink, &key, PutOptions::default())
            .await
            .unwrap();
        up.push(Bytes::from_static(b"part")).await.unwrap();
        let err = up
            .finish::<(), anyhow::Error>(Err(anyhow::anyhow!("the source broke")))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "the source broke");
        assert_eq!(sink.aborts.load(Ordering::Relaxed), 1);
        assert_eq!(sink.open_uploads(), 0);
        assert!(store.bytes("k").is_none());
    }

    #[tokio::test]
    async fn a_failed_part_then_finish_aborts() {
        let (store, sink) = sink();
        sink.fail_part(2);
        let key = Key::new("k").unwrap();
        let mut up = Multipart::start(&sink, &key, PutOptions::default())
            .await
            .unwrap();
        up.push(Bytes::from_static(b"one")).await.unwrap();
        let filled = up.push(Bytes::from_static(b"two")).await;
        let err = up.finish(filled).await.unwrap_err();
        assert!(matches!(err, StoreError::AccessDenied { .. }), "{err}");
        assert_eq!(sink.open_uploads(), 0);
        assert!(store.bytes("k").is_none());
    }
}
