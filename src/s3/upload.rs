//! The write side of S3 behind `ObjectSink`: single PUTs, multipart uploads and
//! deletes, for `restore` and `archive`. Same client, same error mapping as reads.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use bytes::Bytes;

use super::{S3Store, send_with_key};
use crate::store::{
    BoxFuture, ETag, Encryption, Key, ObjectSink, PartTag, ProtocolError, PutOptions, StoreError,
    UploadId,
};

/// The SSE headers of an upload: (algorithm, KMS key id).
fn encryption(options: &PutOptions) -> (Option<ServerSideEncryption>, Option<String>) {
    match &options.encryption {
        None => (None, None),
        Some(Encryption::S3Managed) => (Some(ServerSideEncryption::Aes256), None),
        Some(Encryption::Kms { key_id }) => (Some(ServerSideEncryption::AwsKms), key_id.clone()),
    }
}

impl S3Store {
    async fn put_object(
        &self,
        key: Key,
        data: Bytes,
        options: PutOptions,
    ) -> Result<ETag, StoreError> {
        let (sse, kms_key) = encryption(&options);
        let output = send_with_key!(
            self.client
                .put_object()
                .bucket(&self.bucket)
                .set_expected_bucket_owner(self.owner.clone())
                .key(key.as_str())
                .content_length(data.len() as i64)
                .body(ByteStream::from(data))
                .set_server_side_encryption(sse)
                .set_ssekms_key_id(kms_key),
            key.as_str()
        )
        .map_err(|e| self.map_error(e, "PutObject", key.as_str()))?;
        Ok(ETag::new(output.e_tag().unwrap_or_default()))
    }

    async fn create_upload(&self, key: Key, options: PutOptions) -> Result<UploadId, StoreError> {
        let (sse, kms_key) = encryption(&options);
        let output = send_with_key!(
            self.client
                .create_multipart_upload()
                .bucket(&self.bucket)
                .set_expected_bucket_owner(self.owner.clone())
                .key(key.as_str())
                .set_server_side_encryption(sse)
                .set_ssekms_key_id(kms_key),
            key.as_str()
        )
        .map_err(|e| self.map_error(e, "CreateMultipartUpload", key.as_str()))?;
        output
            .upload_id()
            .map(|id| UploadId(id.to_string()))
            .ok_or_else(|| {
                ProtocolError::NoUploadId {
                    action: "CreateMultipartUpload",
                }
                .into()
            })
    }

    async fn put_part(
        &self,
        key: Key,
        upload: UploadId,
        number: u32,
        data: Bytes,
    ) -> Result<ETag, StoreError> {
        let output = send_with_key!(
            self.client
                .upload_part()
                .bucket(&self.bucket)
                .set_expected_bucket_owner(self.owner.clone())
                .key(key.as_str())
                .upload_id(&upload.0)
                .part_number(number as i32)
                .content_length(data.len() as i64)
                .body(ByteStream::from(data)),
            key.as_str()
        )
        .map_err(|e| self.map_error(e, "UploadPart", key.as_str()))?;
        Ok(ETag::new(output.e_tag().unwrap_or_default()))
    }

    async fn complete_upload(
        &self,
        key: Key,
        upload: UploadId,
        parts: Vec<PartTag>,
    ) -> Result<ETag, StoreError> {
        let parts = parts
            .into_iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number as i32)
                    .e_tag(p.etag.as_str())
                    .build()
            })
            .collect();
        let output = send_with_key!(
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .set_expected_bucket_owner(self.owner.clone())
                .key(key.as_str())
                .upload_id(&upload.0)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                ),
            key.as_str()
        )
        .map_err(|e| self.map_error(e, "CompleteMultipartUpload", key.as_str()))?;
        Ok(ETag::new(output.e_tag().unwrap_or_default()))
    }

    async fn abort_upload(&self, key: Key, upload: UploadId) -> Result<(), StoreError> {
        send_with_key!(
            self.client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .set_expected_bucket_owner(self.owner.clone())
                .key(key.as_str())
                .upload_id(&upload.0),
            key.as_str()
        )
        .map_err(|e| self.map_error(e, "AbortMultipartUpload", key.as_str()))?;
        Ok(())
    }

    async fn delete_object(&self, key: Key) -> Result<(), StoreError> {
        send_with_key!(
            self.client
                .delete_object()
                .bucket(&self.bucket)
                .set_expected_bucket_owner(self.owner.clone())
                .key(key.as_str()),
            key.as_str()
        )
        .map_err(|e| self.map_error(e, "DeleteObject", key.as_str()))?;
        Ok(())
    }
}

impl ObjectSink for S3Store {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    fn put(
        &self,
        key: Key,
        data: Bytes,
        options: PutOptions,
    ) -> BoxFuture<'_, Result<ETag, StoreError>> {
        Box::pin(self.put_object(key, data, options))
    }

    fn create_multipart(
        &self,
        key: Key,
        options: PutOptions,
    ) -> BoxFuture<'_, Result<UploadId, StoreError>> {
        Box::pin(self.create_upload(key, options))
    }

    fn upload_part(
        &self,
        key: Key,
        upload: UploadId,
        number: u32,
        data: Bytes,
    ) -> BoxFuture<'_, Result<ETag, StoreError>> {
        Box::pin(self.put_part(key, upload, number, data))
    }

    fn complete_multipart(
        &self,
        key: Key,
        upload: UploadId,
        parts: Vec<PartTag>,
    ) -> BoxFuture<'_, Result<ETag, StoreError>> {
        Box::pin(self.complete_upload(key, upload, parts))
    }

    fn abort_multipart(&self, key: Key, upload: UploadId) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.abort_upload(key, upload))
    }

    fn delete(&self, key: Key) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.delete_object(key))
    }
}
