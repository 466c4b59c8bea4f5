//! The store's failures: what went wrong talking to S3, kept apart by what the
//! caller should do about it, each with its typed cause.

use std::error::Error;
use std::fmt;
use std::ops::Range;
use std::time::Duration;

/// The error a failure came from (the SDK's, or a test double's), kept whole so a
/// log can walk its chain.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

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
        "no AWS credentials found ({}); set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or use an instance role",
        innermost(.source)
    )]
    Credentials {
        #[source]
        source: BoxError,
    },
    #[error("cannot reach S3 endpoint: {endpoint}: {}", innermost(.source))]
    Unreachable {
        endpoint: String,
        #[source]
        source: BoxError,
    },
    /// 5xx or throttling answers that outlasted the retries.
    #[error(
        "S3 kept failing: {endpoint} answered HTTP {status}{} to {action} on {resource}, {attempts} attempts",
        SpacedCode(.code)
    )]
    ServerError {
        endpoint: String,
        action: &'static str,
        resource: String,
        status: u16,
        /// S3's error code (`SlowDown`, `InternalError`), if the answer had one.
        code: Option<String>,
        attempts: u32,
        #[source]
        source: BoxError,
    },
    #[error("S3 request timed out: {endpoint}: {}", innermost(.source))]
    Timeout {
        endpoint: String,
        #[source]
        source: BoxError,
    },
    #[error(transparent)]
    Body(#[from] BodyError),
    /// The body arrived whole but contradicts the checksum the server sent with it.
    #[error("response body does not match its checksum: {}", innermost(.source))]
    Mismatch {
        #[source]
        source: BoxError,
    },
    /// S3 answered something no S3 would (see `ProtocolError`).
    #[error("S3 error: {0}")]
    Protocol(ProtocolError),
    /// A failure S3 answered (or the SDK raised) that none of the above describes.
    #[error("S3 error: {action} on {resource}: {}", innermost(.source))]
    Unexpected {
        action: &'static str,
        resource: String,
        /// The HTTP status, if S3 answered at all.
        status: Option<u16>,
        code: Option<String>,
        #[source]
        source: BoxError,
    },
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
            StoreError::Unreachable { .. }
                | StoreError::ServerError { .. }
                | StoreError::Timeout { .. }
                | StoreError::Body(_)
        )
    }

    /// Whether every further request of a run would fail the same way, after its
    /// retries (S3 is gone or keeps failing, no credentials, no bucket), so a run
    /// over many objects should stop starting new ones.
    pub fn stops_run(&self) -> bool {
        matches!(
            self,
            StoreError::Unreachable { .. }
                | StoreError::ServerError { .. }
                | StoreError::Timeout { .. }
                | StoreError::Credentials { .. }
                | StoreError::NoSuchBucket(_)
        )
    }
}

/// How a response body failed after the server answered.
#[derive(Debug)]
pub enum BodyError {
    /// No byte arrived for `after`; the read had reached byte `at` of the object.
    Stalled { after: Duration, at: u64 },
    /// More bytes arrived than the `promised` end of the range.
    TooLong { promised: u64 },
    /// The body ended at byte `at` of the object, before the range's `end`.
    EndedEarly { at: u64, end: u64 },
    /// The response holds `len` bytes from `start`, not the range asked for.
    WrongRange {
        asked: Range<u64>,
        start: u64,
        len: u64,
    },
    /// The connection failed under the body (a reset, a read error).
    Transport(BoxError),
    /// The last failure of a read that used up its `attempts`.
    GaveUp { attempts: u32, last: Box<BodyError> },
}

// By hand rather than derived: a read that gave up shows its last failure in its
// own message and hands on that failure's cause, not the failure a second time.
impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const FAILED: &str = "response body failed: ";
        match self {
            BodyError::Stalled { after, at } => {
                write!(f, "{FAILED}stalled: no data for {after:?} at byte {at}")
            }
            BodyError::TooLong { promised } => {
                write!(f, "{FAILED}body longer than the {promised} bytes promised")
            }
            BodyError::EndedEarly { at, end } => {
                write!(f, "{FAILED}body ended at byte {at} of {end}")
            }
            BodyError::WrongRange { asked, start, len } => write!(
                f,
                "{FAILED}asked for bytes {}..{}, got {len} bytes at {start}",
                asked.start, asked.end
            ),
            BodyError::Transport(source) => write!(f, "{FAILED}{}", innermost(source)),
            BodyError::GaveUp { attempts, last } => write!(f, "{last} (after {attempts} attempts)"),
        }
    }
}

impl Error for BodyError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            BodyError::Transport(source) => Some(source.as_ref()),
            BodyError::GaveUp { last, .. } => last.source(),
            _ => None,
        }
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

/// Shows the innermost message of an error chain, the one that says what went
/// wrong ("Connection refused"), as the messages for people do. When that message
/// is empty, shows the whole chain and the error's debug form instead.
fn innermost(err: &BoxError) -> Innermost<'_> {
    Innermost(err.as_ref())
}

struct Innermost<'a>(&'a (dyn Error + 'static));

impl fmt::Display for Innermost<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut current = self.0;
        while let Some(next) = current.source() {
            current = next;
        }
        let text = current.to_string();
        if !text.is_empty() {
            return f.write_str(&text);
        }
        let mut next = Some(self.0);
        let mut separator = "";
        while let Some(err) = next {
            write!(f, "{separator}{err}")?;
            separator = ": ";
            next = err.source();
        }
        write!(f, " ({:?})", self.0)
    }
}

/// An optional S3 error code, with the space that sets it off.
struct SpacedCode<'a>(&'a Option<String>);

impl fmt::Display for SpacedCode<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(code) => write!(f, " {code}"),
            None => Ok(()),
        }
    }
}
