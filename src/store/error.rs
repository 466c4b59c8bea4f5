//! The store's failures: what went wrong talking to S3, kept apart by what the
//! caller should do about it, each with its typed cause.

use std::error::Error;
use std::fmt;
use std::ops::Range;
use std::time::Duration;

use super::{Escaped, StorageClass};

/// The error a failure came from (the SDK's, or a test double's), kept whole so a
/// log can walk its chain.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// Failures of the object store, kept apart by what the caller should do about them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("bucket {0:?} does not exist")]
    NoSuchBucket(String),
    #[error("s3://{bucket}/{}: no such key", Escaped(.key))]
    NoSuchKey { bucket: String, key: String },
    #[error(
        "access denied: {action} on {}{}",
        Escaped(.resource),
        OwnerHint(.expected_owner)
    )]
    AccessDenied {
        action: &'static str,
        resource: String,
        /// The bucket owner the request named: S3 answers a request for a bucket of
        /// another owner with the same 403.
        expected_owner: Option<Box<str>>,
    },
    #[error("s3://{bucket}/{} changed while it was being read", Escaped(.key))]
    Changed { bucket: String, key: String },
    /// S3 answered `InvalidObjectState`: the object is archived and a GET fails
    /// until it is restored. Never an access problem.
    #[error(transparent)]
    Archived(Box<ArchivedObject>),
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
    #[error(transparent)]
    ServerError(Box<ServerFailure>),
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
    #[error(transparent)]
    Unexpected(Box<UnexpectedFailure>),
}

/// A request S3 kept answering with a 5xx or throttling status until its attempts
/// ran out. (Boxed in `StoreError`, which every `Result` of the store carries.)
#[derive(Debug, thiserror::Error)]
#[error(
    "S3 kept failing: {endpoint} answered HTTP {status}{} to {action} on {}, {attempts} attempts",
    SpacedCode(.code),
    Escaped(.resource)
)]
pub struct ServerFailure {
    pub endpoint: String,
    pub action: &'static str,
    pub resource: String,
    pub status: u16,
    /// S3's error code (`SlowDown`, `InternalError`), if the answer had one.
    pub code: Option<String>,
    pub attempts: u32,
    #[source]
    pub source: BoxError,
}

/// An object S3 would not serve because it is archived (403 `InvalidObjectState`).
/// (Boxed in `StoreError`.)
#[derive(Debug, thiserror::Error)]
#[error(
    "s3://{bucket}/{} is archived{}: S3 answered {action} with 403 InvalidObjectState; it can be read once it is restored",
    Escaped(key),
    ClassAndTier(storage_class, access_tier)
)]
pub struct ArchivedObject {
    pub bucket: String,
    pub key: String,
    pub action: &'static str,
    /// The class S3 named in its answer, if it named one.
    pub storage_class: Option<StorageClass>,
    /// The Intelligent-Tiering access tier S3 named (`ARCHIVE_ACCESS`, `DEEP_ARCHIVE_ACCESS`).
    pub access_tier: Option<String>,
}

impl From<ArchivedObject> for StoreError {
    fn from(e: ArchivedObject) -> StoreError {
        StoreError::Archived(Box::new(e))
    }
}

/// ` (GLACIER)`, ` (INTELLIGENT_TIERING, ARCHIVE_ACCESS)`, or nothing.
struct ClassAndTier<'a>(&'a Option<StorageClass>, &'a Option<String>);

impl fmt::Display for ClassAndTier<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(class), Some(tier)) => write!(f, " ({class}, {})", Escaped(tier)),
            (Some(class), None) => write!(f, " ({class})"),
            (None, Some(tier)) => write!(f, " ({})", Escaped(tier)),
            (None, None) => Ok(()),
        }
    }
}

/// A failure S3 answered (or the SDK raised) that no other kind describes; the
/// message names the status and code S3 answered with.
#[derive(Debug, thiserror::Error)]
#[error(
    "S3 error: {action} on {}: {}{}",
    Escaped(.resource),
    StatusAndCode(.status, .code),
    innermost(.source)
)]
pub struct UnexpectedFailure {
    pub action: &'static str,
    pub resource: String,
    /// The HTTP status, if S3 answered at all.
    pub status: Option<u16>,
    pub code: Option<String>,
    #[source]
    pub source: BoxError,
}

impl From<ServerFailure> for StoreError {
    fn from(e: ServerFailure) -> StoreError {
        StoreError::ServerError(Box::new(e))
    }
}

impl From<UnexpectedFailure> for StoreError {
    fn from(e: UnexpectedFailure) -> StoreError {
        StoreError::Unexpected(Box::new(e))
    }
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
                | StoreError::ServerError(_)
                | StoreError::Timeout { .. }
                | StoreError::Body(_)
        )
    }

    /// Whether S3 answered that it is overloaded or throttling (503 `SlowDown`,
    /// 429, other 5xx): the request would pass if sent later, at a lower rate.
    pub fn is_throttling(&self) -> bool {
        match self {
            StoreError::ServerError(failure) => {
                failure.status == 429
                    || failure.status >= 500
                    || failure.code.as_deref().is_some_and(|code| {
                        matches!(
                            code,
                            "SlowDown"
                                | "Throttling"
                                | "ThrottlingException"
                                | "RequestLimitExceeded"
                        )
                    })
            }
            _ => false,
        }
    }

    /// Whether every further request of a run would fail the same way, after its
    /// retries (S3 is gone or keeps failing, no credentials, no bucket), so a run
    /// over many objects should stop starting new ones.
    pub fn stops_run(&self) -> bool {
        matches!(
            self,
            StoreError::Unreachable { .. }
                | StoreError::ServerError(_)
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

/// `HTTP 403 SignatureDoesNotMatch: `, `HTTP 400: `, or nothing when S3 did not answer.
struct StatusAndCode<'a>(&'a Option<u16>, &'a Option<String>);

impl fmt::Display for StatusAndCode<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(status), code) => write!(f, "HTTP {status}{}: ", SpacedCode(code)),
            (None, Some(code)) => write!(f, "{code}: "),
            (None, None) => Ok(()),
        }
    }
}

/// Why a request that named the bucket's owner may have been denied.
struct OwnerHint<'a>(&'a Option<Box<str>>);

impl fmt::Display for OwnerHint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(owner) => write!(
                f,
                " (the bucket's owner is not the expected account {owner}, or the credentials lack permission)"
            ),
            None => Ok(()),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_in_messages_are_escaped() {
        let key = "a\u{1b}[31m\nb".to_string();
        let messages = [
            StoreError::NoSuchKey {
                bucket: "b".into(),
                key: key.clone(),
            }
            .to_string(),
            StoreError::Changed {
                bucket: "b".into(),
                key: key.clone(),
            }
            .to_string(),
            StoreError::AccessDenied {
                action: "GetObject",
                resource: key.clone(),
                expected_owner: None,
            }
            .to_string(),
            crate::store::failing::slow_down("GetObject", &key).to_string(),
        ];
        for message in messages {
            assert!(!message.contains(['\u{1b}', '\n']), "{message:?}");
            assert!(message.contains("a\\u{1b}[31m\\nb"), "{message:?}");
        }
    }

    fn io(kind: std::io::ErrorKind, message: &str) -> BoxError {
        std::io::Error::new(kind, message).into()
    }

    fn refused() -> BoxError {
        io(std::io::ErrorKind::ConnectionRefused, "Connection refused")
    }

    /// One error of every kind, each with how it must be classified:
    /// (error, transient, stops a run).
    fn every_kind() -> Vec<(StoreError, bool, bool)> {
        let body = |e: BodyError| StoreError::Body(e);
        let server = StoreError::from(ServerFailure {
            endpoint: "http://s3".into(),
            action: "GetObject",
            resource: "s3://b/k".into(),
            status: 503,
            code: Some("SlowDown".into()),
            attempts: 3,
            source: refused(),
        });
        let unexpected = StoreError::from(UnexpectedFailure {
            action: "GetObject",
            resource: "s3://b/k".into(),
            status: Some(400),
            code: Some("InvalidArgument".into()),
            source: refused(),
        });
        vec![
            (StoreError::NoSuchBucket("b".into()), false, true),
            (
                StoreError::NoSuchKey {
                    bucket: "b".into(),
                    key: "k".into(),
                },
                false,
                false,
            ),
            (
                StoreError::AccessDenied {
                    action: "GetObject",
                    resource: "s3://b/k".into(),
                    expected_owner: None,
                },
                false,
                false,
            ),
            (
                StoreError::Changed {
                    bucket: "b".into(),
                    key: "k".into(),
                },
                false,
                false,
            ),
            (archived(Some(StorageClass::Glacier), None), false, false),
            (StoreError::Credentials { source: refused() }, false, true),
            (
                StoreError::Unreachable {
                    endpoint: "http://s3".into(),
                    source: refused(),
                },
                true,
                true,
            ),
            (server, true, true),
            (
                StoreError::Timeout {
                    endpoint: "http://s3".into(),
                    source: refused(),
                },
                true,
                true,
            ),
            (
                body(BodyError::Stalled {
                    after: Duration::from_secs(1),
                    at: 0,
                }),
                true,
                false,
            ),
            (body(BodyError::TooLong { promised: 1 }), true, false),
            (body(BodyError::EndedEarly { at: 0, end: 1 }), true, false),
            (
                body(BodyError::WrongRange {
                    asked: 0..1,
                    start: 1,
                    len: 1,
                }),
                true,
                false,
            ),
            (body(BodyError::Transport(refused())), true, false),
            (
                body(BodyError::GaveUp {
                    attempts: 3,
                    last: Box::new(BodyError::TooLong { promised: 1 }),
                }),
                true,
                false,
            ),
            (StoreError::Mismatch { source: refused() }, false, false),
            (
                StoreError::Protocol(ProtocolError::ListedWithoutKey),
                false,
                false,
            ),
            (unexpected, false, false),
        ]
    }

    /// Fails to compile when a kind is added, so `every_kind` cannot miss it.
    fn kind(err: &StoreError) -> &'static str {
        match err {
            StoreError::NoSuchBucket(_) => "NoSuchBucket",
            StoreError::NoSuchKey { .. } => "NoSuchKey",
            StoreError::AccessDenied { .. } => "AccessDenied",
            StoreError::Changed { .. } => "Changed",
            StoreError::Archived(_) => "Archived",
            StoreError::Credentials { .. } => "Credentials",
            StoreError::Unreachable { .. } => "Unreachable",
            StoreError::ServerError(_) => "ServerError",
            StoreError::Timeout { .. } => "Timeout",
            StoreError::Body(_) => "Body",
            StoreError::Mismatch { .. } => "Mismatch",
            StoreError::Protocol(_) => "Protocol",
            StoreError::Unexpected(_) => "Unexpected",
        }
    }

    #[test]
    fn a_store_error_stays_small() {
        // Every `Result` of the store and of the layers above carries one.
        assert!(std::mem::size_of::<StoreError>() <= 56);
    }

    #[test]
    fn every_kind_is_classified_as_before() {
        let all = every_kind();
        let kinds: std::collections::BTreeSet<_> = all.iter().map(|(e, _, _)| kind(e)).collect();
        assert_eq!(kinds.len(), 13, "every kind is listed: {kinds:?}");
        for (err, transient, stops_run) in &all {
            assert_eq!(err.is_transient(), *transient, "is_transient: {err:?}");
            assert_eq!(err.stops_run(), *stops_run, "stops_run: {err:?}");
        }
    }

    #[test]
    fn messages_name_the_endpoint_and_the_innermost_cause() {
        let unreachable = StoreError::Unreachable {
            endpoint: "http://127.0.0.1:9".into(),
            source: Box::new(Layer("dispatch failure", Some(refused()))),
        };
        assert_eq!(
            unreachable.to_string(),
            "cannot reach S3 endpoint: http://127.0.0.1:9: Connection refused"
        );
        let cause = unreachable.source().expect("the cause is kept");
        assert_eq!(cause.to_string(), "dispatch failure");
        let timeout = StoreError::Timeout {
            endpoint: "http://s3".into(),
            source: io(std::io::ErrorKind::TimedOut, "read timed out"),
        };
        assert_eq!(
            timeout.to_string(),
            "S3 request timed out: http://s3: read timed out"
        );
        let credentials = StoreError::Credentials {
            source: io(std::io::ErrorKind::NotFound, "no providers in chain"),
        };
        assert!(
            credentials
                .to_string()
                .starts_with("no AWS credentials found (no providers in chain); set ")
        );
    }

    #[test]
    fn a_denial_of_a_request_that_named_the_owner_says_so() {
        let denied = |expected_owner: Option<&str>| StoreError::AccessDenied {
            action: "ListObjectsV2",
            resource: "s3://b/".into(),
            expected_owner: expected_owner.map(Box::from),
        };
        assert_eq!(
            denied(None).to_string(),
            "access denied: ListObjectsV2 on s3://b/"
        );
        assert_eq!(
            denied(Some("210987654321")).to_string(),
            "access denied: ListObjectsV2 on s3://b/ (the bucket's owner is not the expected \
             account 210987654321, or the credentials lack permission)"
        );
    }

    #[test]
    fn a_server_error_names_status_code_and_attempts() {
        let error = |code: Option<&str>| {
            StoreError::from(ServerFailure {
                endpoint: "http://s3".into(),
                action: "GetObject",
                resource: "s3://b/k".into(),
                status: 503,
                code: code.map(str::to_string),
                attempts: 3,
                source: refused(),
            })
        };
        assert_eq!(
            error(Some("SlowDown")).to_string(),
            "S3 kept failing: http://s3 answered HTTP 503 SlowDown to GetObject on s3://b/k, 3 attempts"
        );
        assert_eq!(
            error(None).to_string(),
            "S3 kept failing: http://s3 answered HTTP 503 to GetObject on s3://b/k, 3 attempts"
        );
    }

    #[test]
    fn body_messages_read_as_before() {
        let stalled = BodyError::Stalled {
            after: Duration::from_secs(30),
            at: 7,
        };
        assert_eq!(
            stalled.to_string(),
            "response body failed: stalled: no data for 30s at byte 7"
        );
        let reset = BodyError::Transport(Box::new(Layer(
            "streaming error",
            Some(io(std::io::ErrorKind::ConnectionReset, "connection reset")),
        )));
        let gave_up = StoreError::Body(BodyError::GaveUp {
            attempts: 3,
            last: Box::new(reset),
        });
        assert_eq!(
            gave_up.to_string(),
            "response body failed: connection reset (after 3 attempts)"
        );
        // The transport's own error is the cause, once.
        let cause = gave_up.source().expect("the cause is kept");
        assert_eq!(cause.to_string(), "streaming error");
        assert!(BodyError::EndedEarly { at: 1, end: 2 }.source().is_none());
        assert_eq!(
            BodyError::WrongRange {
                asked: 10..20,
                start: 0,
                len: 20
            }
            .to_string(),
            "response body failed: asked for bytes 10..20, got 20 bytes at 0"
        );
    }

    #[test]
    fn protocol_and_unexpected_errors_read_as_before() {
        let truncated = StoreError::from(ProtocolError::TruncatedWithoutToken);
        assert_eq!(
            truncated.to_string(),
            "S3 error: truncated listing without a continuation token"
        );
        assert!(truncated.source().is_none());
        let unexpected = StoreError::from(UnexpectedFailure {
            action: "ListObjectsV2",
            resource: "s3://b/p".into(),
            status: Some(400),
            code: None,
            source: Box::new(Layer("service error", Some("bad request".into()))),
        });
        assert_eq!(
            unexpected.to_string(),
            "S3 error: ListObjectsV2 on s3://b/p: HTTP 400: bad request"
        );
        let coded = StoreError::from(UnexpectedFailure {
            action: "GetObject",
            resource: "s3://b/k".into(),
            status: Some(403),
            code: Some("SignatureDoesNotMatch".into()),
            source: Box::new(Layer("service error", Some("signature mismatch".into()))),
        });
        assert_eq!(
            coded.to_string(),
            "S3 error: GetObject on s3://b/k: HTTP 403 SignatureDoesNotMatch: signature mismatch"
        );
    }

    fn archived(class: Option<StorageClass>, tier: Option<&str>) -> StoreError {
        StoreError::from(ArchivedObject {
            bucket: "b".into(),
            key: "photos/a\n.jpg".into(),
            action: "GetObject",
            storage_class: class,
            access_tier: tier.map(str::to_string),
        })
    }

    #[test]
    fn an_archived_object_is_named_with_what_s3_answered_and_never_as_denied() {
        let glacier = archived(Some(StorageClass::Glacier), None).to_string();
        assert_eq!(
            glacier,
            "s3://b/photos/a\\n.jpg is archived (GLACIER): S3 answered GetObject with 403 \
             InvalidObjectState; it can be read once it is restored"
        );
        assert!(!glacier.contains("denied"));
        let tiering = archived(
            Some(StorageClass::IntelligentTiering),
            Some("ARCHIVE_ACCESS"),
        );
        assert!(
            tiering
                .to_string()
                .contains("is archived (INTELLIGENT_TIERING, ARCHIVE_ACCESS): "),
            "{tiering}"
        );
        assert!(
            archived(None, None)
                .to_string()
                .contains("is archived: S3 answered")
        );
    }

    #[test]
    fn an_empty_innermost_message_shows_the_whole_chain() {
        let err = StoreError::Unreachable {
            endpoint: "http://s3".into(),
            source: Box::new(Layer("dispatch failure", Some(Box::new(Layer("", None))))),
        };
        assert_eq!(
            err.to_string(),
            "cannot reach S3 endpoint: http://s3: dispatch failure:  \
             (Layer(\"dispatch failure\", Some(Layer(\"\", None))))"
        );
    }

    /// An error with a message and an optional cause, as the SDK's layers are.
    #[derive(Debug)]
    struct Layer(&'static str, Option<BoxError>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }
}
