//! The store's failures: what went wrong talking to S3, kept apart by what the
//! caller should do about it, each with its typed cause.

/// Failures of the object store, kept apart by what the caller should do about them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("bucket {0:?} does not exist")]
    NoSuchBucket(String),
    #[error("s3://{bucket}/{key}: no such key")]
    NoSuchKey { bucket: String, key: String },
    #[error("access denied: {action} on {resource}")]
    AccessDenied {
        action: &'static str,
        resource: String,
    },
    #[error("s3://{bucket}/{key} changed while it was being read")]
    Changed { bucket: String, key: String },
    #[error(
        "no AWS credentials found ({0}); set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or use an instance role"
    )]
    Credentials(String),
    #[error("cannot reach S3 endpoint: {0}")]
    Unreachable(String),
    /// 5xx or throttling answers that outlasted the retries.
    #[error("S3 kept failing: {0}")]
    ServerError(String),
    #[error("S3 request timed out: {0}")]
    Timeout(String),
    #[error("response body failed: {0}")]
    Body(String),
    /// The body arrived whole but contradicts the checksum the server sent with it.
    #[error("response body does not match its checksum: {0}")]
    Mismatch(String),
    /// S3 answered something no S3 would (see `ProtocolError`).
    #[error("S3 error: {0}")]
    Protocol(ProtocolError),
    #[error("S3 error: {0}")]
    Other(String),
}

// Not a `#[source]`: a protocol error is a leaf that the message already shows
// whole, so a log walking the chain would only print it twice.
impl From<ProtocolError> for StoreError {
    fn from(e: ProtocolError) -> StoreError {
        StoreError::Protocol(e)
    }
}

impl StoreError {
    /// Whether trying the same request again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unreachable(_)
                | StoreError::ServerError(_)
                | StoreError::Timeout(_)
                | StoreError::Body(_)
        )
    }

    /// Whether every further request of a run would fail the same way, after its
    /// retries (S3 is gone or keeps failing, no credentials, no bucket), so a run
    /// over many objects should stop starting new ones.
    pub fn stops_run(&self) -> bool {
        matches!(
            self,
            StoreError::Unreachable(_)
                | StoreError::ServerError(_)
                | StoreError::Timeout(_)
                | StoreError::Credentials(_)
                | StoreError::NoSuchBucket(_)
        )
    }
}

/// An answer no S3 would give: a listing or response that breaks the protocol, so
/// neither a retry nor the caller can do anything about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("listed object without a key")]
    ListedWithoutKey,
    #[error("empty object key")]
    EmptyKey,
    #[error("truncated listing without a continuation token")]
    TruncatedWithoutToken,
    #[error("unparsable Content-Range {0:?}")]
    ContentRange(String),
    #[error("malformed URL-encoded key {encoded:?}")]
    MalformedKey { encoded: String },
    #[error("key {encoded:?} is not UTF-8")]
    KeyNotUtf8 { encoded: String },
    #[error("{action} returned no upload id")]
    NoUploadId { action: &'static str },
}
