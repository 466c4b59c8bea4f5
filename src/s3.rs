//! Amazon S3 behind the `ObjectStore` trait: the one home of aws-config and
//! aws-sdk-s3. One builder owns all SDK set-up; errors leave as `StoreError`.

mod http;
pub mod upload;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::Region;
use aws_sdk_s3::config::http::{HttpRequest, HttpResponse};
use aws_sdk_s3::config::interceptors::InterceptorContext;
use aws_sdk_s3::config::retry::{ClassifyRetry, RetryAction, RetryPartition, TokenBucket};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    EncodingType, GlacierJobParameters, OptionalObjectAttributes, RestoreStatus, Tier,
};
use bytes::Bytes;

use crate::store::{
    ArchivedObject, Body, BodyError, BoxError, BoxFuture, ETag, EmptyKey, Escaped, GetRequest,
    GetResponse, Key, ListPage, ObjectMeta, ObjectStore, ProtocolError, RestoreAnswer,
    RestoreRequest, RestoreState, RetrievalTier, ServerFailure, StorageClass, StoreError,
    UnexpectedFailure, decode_url_key, raw_bytes,
};

/// How to reach S3; anything left `None` comes from the standard AWS configuration
/// (environment, profile, instance role), as the AWS CLI resolves it.
#[derive(Clone, Debug)]
pub struct S3Options {
    pub endpoint_url: Option<String>,
    pub region: Option<String>,
    pub force_path_style: bool,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    pub connect_timeout: Duration,
    /// Longest wait for the first byte of a response.
    pub read_timeout: Duration,
    /// Longest a response body may go without delivering a byte before it counts
    /// as stalled (downloads resume; a listing page is asked again).
    pub stall_timeout: Duration,
    /// The account id that must own the bucket, sent with every request
    /// (`ExpectedBucketOwner`): S3 refuses a request for a bucket of another owner.
    pub expected_bucket_owner: Option<String>,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            endpoint_url: None,
            region: None,
            force_path_style: false,
            max_attempts: 3,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
            expected_bucket_owner: None,
        }
    }
}

/// Longest pause between two attempts of one request (the SDK adds jitter below it).
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A whole request attempt (a listing page included) may take this many stall timeouts.
pub const ATTEMPT_STALLS: u32 = 3;

/// The SDK retries 500/502/503/504 and S3's throttling codes (`SlowDown`), but not a
/// bare HTTP 429 whose code it does not know; S3-compatible servers and proxies send
/// those when they throttle, so they are retried as throttling too.
#[derive(Debug)]
struct TooManyRequests;

impl ClassifyRetry for TooManyRequests {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        match ctx.response() {
            Some(response) if response.status().as_u16() == 429 => RetryAction::throttling_error(),
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "HTTP 429 is throttling"
    }
}

/// The SDK's configuration loader: the standard AWS chain plus `options`' retries,
/// timeouts, region and endpoint.
fn loader(options: &S3Options) -> aws_config::ConfigLoader {
    let stall = options.stall_timeout.max(Duration::from_millis(100));
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(options.max_attempts.max(1))
                .with_initial_backoff(Duration::from_millis(200))
                .with_max_backoff(MAX_BACKOFF),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(options.connect_timeout)
                // Waiting for the first byte is a stall too.
                .read_timeout(options.read_timeout.min(stall))
                // Bounds a listing page whose body stops arriving (the read timeout only
                // covers the first byte). A GET's body is not covered: it is streamed
                // after the attempt ends, and fetch times its chunks.
                .operation_attempt_timeout(stall * ATTEMPT_STALLS)
                .build(),
        );
    if let Some(region) = &options.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &options.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some(client) = http::client(|name| std::env::var(name).ok()) {
        loader = loader.http_client(client);
    }
    loader
}

/// The endpoint URL S3 requests go to when it is not AWS's own: `--endpoint-url`,
/// else `AWS_ENDPOINT_URL_S3` (unless `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS` is
/// true), else what the SDK loaded (`AWS_ENDPOINT_URL`, the profile's `endpoint_url`).
fn configured_endpoint(
    flag: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
    loaded: Option<&str>,
) -> Option<String> {
    let env = |name: &str| env(name).filter(|value| !value.trim().is_empty());
    let ignore_env = env("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("true"));
    flag.map(str::to_string)
        .or_else(|| env("AWS_ENDPOINT_URL_S3").filter(|_| !ignore_env))
        .or_else(|| loaded.map(str::to_string))
        .filter(|url| !url.trim().is_empty())
}

/// An endpoint URL as a mirror records it, so that spellings of one URL compare
/// equal: scheme and host in lower case, no default port, no trailing `/`.
pub fn normalize_endpoint(url: &str) -> String {
    let url = url.trim();
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => (String::new(), url),
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let authority = authority.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => "",
    };
    let authority = match authority.strip_suffix(default_port) {
        Some(host) if !default_port.is_empty() => host,
        _ => &authority,
    };
    let path = path.trim_end_matches('/');
    match scheme.as_str() {
        "" => format!("{authority}{path}"),
        scheme => format!("{scheme}://{authority}{path}"),
    }
}

/// One bucket of S3 (or of an S3-compatible server).
pub struct S3Store {
    client: Client,
    bucket: String,
    /// Where requests go, for error messages.
    endpoint: String,
    /// The endpoint as a mirror records it: normalized, "" for AWS.
    source_endpoint: String,
    /// Sent as `ExpectedBucketOwner` with every request.
    owner: Option<String>,
    /// Attempts per request, for error messages.
    max_attempts: u32,
    /// Whether listings ask for the restore status of archived objects; cleared
    /// for a server that refuses the request for it.
    restore_status: AtomicBool,
}

/// What puts the bytes of a key that is not UTF-8 into a request's URI
/// (`store::raw_bytes`), since the SDK builds the URI from the key's text form;
/// `None` when `text` (a key, or a prefix and `StartAfter`) is plain UTF-8.
/// Runs before the request is signed, so the signature covers the real key.
fn raw_key_bytes(text: &str) -> Option<impl Fn(&mut HttpRequest) + Send + Sync + 'static> {
    raw_bytes::has_raw_bytes(text).then(|| {
        let text = text.to_string();
        move |request: &mut HttpRequest| {
            let uri = raw_bytes::rewrite_uri(request.uri(), &text);
            if let Err(e) = request.set_uri(uri) {
                tracing::warn!(
                    "cannot put the bytes of key {} in the request: {e}",
                    Escaped(&text)
                );
            }
        }
    })
}

/// Sends a fluent request whose URI carries `text`. Only a key that is not
/// UTF-8 takes the customized path that rewrites the URI; every other request
/// goes out exactly as the SDK builds it (a customized one carries a config
/// override of its own). A macro because the fluent builders share no trait.
macro_rules! send_with_key {
    ($request:expr, $text:expr) => {{
        let request = $request;
        match $crate::s3::raw_key_bytes($text) {
            None => request.send().await,
            Some(rewrite) => request.customize().mutate_request(rewrite).send().await,
        }
    }};
}
pub(crate) use send_with_key;

impl S3Store {
    /// Builds the client from the standard AWS configuration plus `options`.
    pub async fn connect(bucket: &str, options: &S3Options) -> S3Store {
        let shared = loader(options).load().await;
        let endpoint_url = configured_endpoint(
            options.endpoint_url.as_deref(),
            |name| std::env::var(name).ok(),
            shared.endpoint_url(),
        );
        let mut config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(options.force_path_style)
            .retry_classifier(TooManyRequests)
            // The standard retry's shared quota stops retrying altogether after ~100
            // failures, so a throttling storm would fail every key at once. Each request
            // is bounded by its attempts and backoff already; a backup run wants them all.
            .retry_partition(
                RetryPartition::custom("s3mirrorfs")
                    .token_bucket(TokenBucket::unlimited())
                    .build(),
            );
        // Requests go exactly to the endpoint a mirror records. (Left to itself the
        // SDK would also read a profile's `[services]` section, which this does not.)
        config.set_endpoint_url(endpoint_url.clone());
        if shared.region().is_none() {
            // As the AWS CLI does for S3: without a configured region, us-east-1.
            config = config.region(Region::from_static("us-east-1"));
        }
        let config = config.build();
        let region = config.region().map_or("us-east-1", |r| r.as_ref());
        let endpoint = (endpoint_url.clone()).unwrap_or_else(|| format!("S3 in {region}"));
        S3Store {
            endpoint,
            source_endpoint: endpoint_url
                .as_deref()
                .map_or_else(String::new, normalize_endpoint),
            client: Client::from_conf(config),
            bucket: bucket.to_string(),
            owner: options.expected_bucket_owner.clone(),
            max_attempts: options.max_attempts.max(1),
            restore_status: AtomicBool::new(true),
        }
    }

    /// The endpoint requests go to, as a mirror records it: normalized, "" for AWS.
    pub fn source_endpoint(&self) -> &str {
        &self.source_endpoint
    }

    async fn list(
        &self,
        prefix: &str,
        delimited: bool,
        token: Option<String>,
        max_keys: Option<i32>,
        start_after: Option<Key>,
    ) -> Result<ListPage, StoreError> {
        let with_status = self.restore_status.load(Ordering::Relaxed);
        let query = Query {
            prefix,
            delimited,
            token: &token,
            max_keys,
            start_after: start_after.as_ref(),
        };
        let output = match self.list_once(&query, with_status).await {
            // S3-compatible servers that do not know the optional attribute may refuse it.
            Err(e) if with_status && refuses_optional_attributes(&e) => {
                tracing::debug!(
                    "the endpoint refuses RestoreStatus in listings; listing without it"
                );
                self.restore_status.store(false, Ordering::Relaxed);
                self.list_once(&query, false).await
            }
            result => result,
        }
        .map_err(|e| self.map_error(e, "ListObjectsV2", prefix))?;
        let mut page = ListPage::default();
        for object in output.contents() {
            let raw = object.key().ok_or(ProtocolError::ListedWithoutKey)?;
            let key = Key::new(decode_url_key(raw)?).map_err(|EmptyKey| ProtocolError::EmptyKey)?;
            page.objects.push(ObjectMeta {
                key,
                size: object.size().unwrap_or(0).max(0) as u64,
                etag: ETag::new(object.e_tag().unwrap_or_default()),
                last_modified: to_system_time(object.last_modified()),
                storage_class: StorageClass::parse(
                    object.storage_class().map_or("", |c| c.as_str()),
                ),
                restore: listed_restore(object.restore_status()),
            });
        }
        for prefix in output.common_prefixes() {
            if let Some(p) = prefix.prefix() {
                page.prefixes.push(decode_url_key(p)?);
            }
        }
        if output.is_truncated().unwrap_or(false) {
            page.next = output.next_continuation_token().map(str::to_string);
            if page.next.is_none() {
                return Err(ProtocolError::TruncatedWithoutToken.into());
            }
        }
        Ok(page)
    }

    /// One ListObjectsV2 request, asking for the restore status of archived
    /// objects when `with_status`.
    async fn list_once(
        &self,
        query: &Query<'_>,
        with_status: bool,
    ) -> Result<
        aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output,
        SdkError<aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error, HttpResponse>,
    > {
        let request = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .set_expected_bucket_owner(self.owner.clone())
            .prefix(query.prefix)
            .encoding_type(EncodingType::Url)
            .set_delimiter(query.delimited.then(|| "/".to_string()))
            .set_continuation_token(query.token.clone())
            .set_max_keys(query.max_keys)
            .set_start_after(query.start_after.map(|k| k.as_str().to_string()))
            .set_optional_object_attributes(
                with_status.then(|| vec![OptionalObjectAttributes::RestoreStatus]),
            );
        let text = format!(
            "{}{}",
            query.prefix,
            query.start_after.map_or("", |k| k.as_str())
        );
        send_with_key!(request, &text)
    }

    async fn get_object(&self, request: GetRequest) -> Result<GetResponse, StoreError> {
        let range = request
            .range
            .as_ref()
            .map(|r| format!("bytes={}-{}", r.start, r.end.saturating_sub(1)));
        let output = send_with_key!(
            self.client
                .get_object()
                .bucket(&self.bucket)
                .set_expected_bucket_owner(self.owner.clone())
                .key(request.key.as_str())
                .set_range(range)
                .set_if_match(request.if_match.as_ref().map(|e| e.as_str().to_string())),
            request.key.as_str()
        )
        .map_err(|e| self.get_error(e, &request.key))?;
        let content_length = output.content_length().unwrap_or(0).max(0) as u64;
        let (start, object_size) = match output.content_range() {
            Some(range) => parse_content_range(range)
                .ok_or_else(|| ProtocolError::ContentRange(range.to_string()))?,
            None => (0, content_length),
        };
        let etag = ETag::new(output.e_tag().unwrap_or_default());
        // SSE-KMS and SSE-C ETags are not the MD5 of the plaintext.
        let kms = output
            .server_side_encryption()
            .is_some_and(|sse| sse.as_str().starts_with("aws:kms"));
        let etag_is_md5 =
            etag.looks_like_md5() && !kms && output.sse_customer_algorithm().is_none();
        Ok(GetResponse {
            etag_is_md5,
            etag,
            last_modified: to_system_time(output.last_modified()),
            object_size,
            start,
            content_length,
            body: Box::new(S3Body(output.body)),
        })
    }

    /// A GET's failure; an archived object's answer names its class and tier.
    fn get_error(&self, err: SdkError<GetObjectError, HttpResponse>, key: &Key) -> StoreError {
        if let SdkError::ServiceError(service) = &err
            && let GetObjectError::InvalidObjectState(state) = service.err()
        {
            return ArchivedObject {
                bucket: self.bucket.clone(),
                key: key.as_str().to_string(),
                action: "GetObject",
                storage_class: state
                    .storage_class()
                    .map(|c| StorageClass::parse(c.as_str())),
                access_tier: state.access_tier().map(|t| t.as_str().to_string()),
            }
            .into();
        }
        self.map_error(err, "GetObject", key.as_str())
    }

    /// A HEAD, read for whether a GET can read the object now: `x-amz-restore`
    /// when S3 sends it; without it, an object of a class that always needs a
    /// restore, or one in an Intelligent-Tiering archive tier
    /// (`x-amz-archive-status`), is not restored, and any other is readable.
    async fn head_restore(&self, key: &Key) -> Result<RestoreState, StoreError> {
        let output = send_with_key!(
            self.client
                .head_object()
                .bucket(&self.bucket)
                .set_expected_bucket_owner(self.owner.clone())
                .key(key.as_str()),
            key.as_str()
        )
        .map_err(|e| self.map_error(e, "HeadObject", key.as_str()))?;
        let class = StorageClass::parse(output.storage_class().map_or("", |c| c.as_str()));
        Ok(match output.restore() {
            Some(header) => RestoreState::from_header(header),
            None if class.needs_restore() || output.archive_status().is_some() => {
                RestoreState::NotRestored
            }
            None => RestoreState::Restored,
        })
    }

    /// A RestoreObject request. A restore already on its way and an object that is
    /// not archived are answers, not failures.
    async fn restore_object(
        &self,
        key: &Key,
        request: &RestoreRequest,
    ) -> Result<RestoreAnswer, StoreError> {
        let tier = match request.tier {
            RetrievalTier::Bulk => Tier::Bulk,
            RetrievalTier::Standard => Tier::Standard,
            RetrievalTier::Expedited => Tier::Expedited,
        };
        let job = GlacierJobParameters::builder()
            .tier(tier)
            .build()
            .expect("the tier is set");
        // Intelligent-Tiering moves the object back to its Frequent Access tier;
        // S3 refuses a number of days for it.
        let days = (request.storage_class != StorageClass::IntelligentTiering)
            .then(|| i32::try_from(request.days).unwrap_or(i32::MAX));
        let restore = aws_sdk_s3::types::RestoreRequest::builder()
            .set_days(days)
            .glacier_job_parameters(job)
            .build();
        let result = send_with_key!(
            self.client
                .restore_object()
                .bucket(&self.bucket)
                .set_expected_bucket_owner(self.owner.clone())
                .key(key.as_str())
                .restore_request(restore),
            key.as_str()
        );
        match result {
            Ok(_) => Ok(RestoreAnswer::Requested),
            Err(SdkError::ServiceError(service))
                if service.err().code() == Some("RestoreAlreadyInProgress") =>
            {
                Ok(RestoreAnswer::InProgress)
            }
            Err(SdkError::ServiceError(service))
                if service.err().code() == Some("ObjectAlreadyInActiveTierError") =>
            {
                Ok(RestoreAnswer::NotArchived)
            }
            Err(e) => Err(self.map_error(e, "RestoreObject", key.as_str())),
        }
    }

    fn map_error<E>(
        &self,
        err: SdkError<E, HttpResponse>,
        action: &'static str,
        key: &str,
    ) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let resource = if action == "ListObjectsV2" {
            format!("s3://{}/{key}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, Escaped(key))
        };
        if let SdkError::ServiceError(service) = &err {
            let code = service
                .err()
                .code()
                .filter(|c| !c.is_empty())
                .map(str::to_string);
            let answer = Answer {
                code,
                status: service.raw().status().as_u16(),
                action,
                resource,
            };
            return self.service_error(answer, key, Box::new(err));
        }
        if is_credentials_error(&err) {
            return StoreError::Credentials {
                source: Box::new(err),
            };
        }
        match err {
            SdkError::TimeoutError(_) => StoreError::Timeout {
                endpoint: self.endpoint.clone(),
                source: Box::new(err),
            },
            SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => StoreError::Unreachable {
                endpoint: self.endpoint.clone(),
                source: Box::new(err),
            },
            _ => UnexpectedFailure {
                action,
                resource,
                status: None,
                code: None,
                source: Box::new(err),
            }
            .into(),
        }
    }

    /// What an S3 error answer means: its code first, then its HTTP status.
    fn service_error(&self, answer: Answer, key: &str, source: BoxError) -> StoreError {
        let Answer {
            code,
            status,
            action,
            resource,
        } = answer;
        match (code.as_deref(), status) {
            (Some("NoSuchBucket"), _) => StoreError::NoSuchBucket(self.bucket.clone()),
            (Some("NoSuchKey"), _) | (_, 404) => StoreError::NoSuchKey {
                bucket: self.bucket.clone(),
                key: key.to_string(),
            },
            // A restore request answered so is about the request, not an archived object.
            (Some("InvalidObjectState"), _) if action != "RestoreObject" => ArchivedObject {
                bucket: self.bucket.clone(),
                key: key.to_string(),
                action,
                storage_class: None,
                access_tier: None,
            }
            .into(),
            // Other 403 codes (a bad signature, a disabled account) are named as S3 said them.
            (Some("AccessDenied"), _) | (None, 403) => StoreError::AccessDenied {
                action,
                resource,
                expected_owner: self.owner.as_deref().map(Box::from),
            },
            (Some("PreconditionFailed"), _) | (_, 412) => StoreError::Changed {
                bucket: self.bucket.clone(),
                key: key.to_string(),
            },
            (_, s) if s >= 500 || s == 429 => ServerFailure {
                endpoint: self.endpoint.clone(),
                action,
                resource,
                status,
                code,
                attempts: self.max_attempts,
                source,
            }
            .into(),
            _ => UnexpectedFailure {
                action,
                resource,
                status: Some(status),
                code,
                source,
            }
            .into(),
        }
    }
}

/// An error answer from S3: its code, HTTP status, and the request it answered.
struct Answer {
    code: Option<String>,
    status: u16,
    action: &'static str,
    resource: String,
}

fn is_credentials_error(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.downcast_ref::<CredentialsError>().is_some() {
            return true;
        }
        current = e.source();
    }
    false
}

/// What a listing's `RestoreStatus` says (none: not restored, or not reported).
fn listed_restore(status: Option<&RestoreStatus>) -> RestoreState {
    match status.and_then(|s| s.is_restore_in_progress()) {
        Some(true) => RestoreState::InProgress,
        Some(false) => RestoreState::Restored,
        None => RestoreState::NotRestored,
    }
}

/// Whether a listing failed because the server does not take the optional
/// attribute (S3-compatible servers answer 501 or an invalid argument).
fn refuses_optional_attributes<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    match err {
        SdkError::ServiceError(service) => {
            service.raw().status().as_u16() == 501
                || matches!(
                    service.err().code(),
                    Some("NotImplemented" | "InvalidArgument" | "InvalidRequest")
                )
        }
        _ => false,
    }
}

fn to_system_time(time: Option<&DateTime>) -> SystemTime {
    time.and_then(|t| SystemTime::try_from(*t).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Parses `bytes START-END/SIZE` into (START, SIZE).
fn parse_content_range(value: &str) -> Option<(u64, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, size) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.parse().ok()?, size.parse().ok()?))
}

struct S3Body(ByteStream);

impl Body for S3Body {
    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Option<Bytes>, StoreError>> {
        Box::pin(async move {
            match self.0.next().await {
                None => Ok(None),
                Some(Ok(bytes)) => Ok(Some(bytes)),
                Some(Err(e)) => {
                    // The SDK checks a whole-object GET against the checksum S3 sends
                    // (x-amz-checksum-*) and reports a mismatch only in its message.
                    let source = Box::new(e);
                    if DisplayErrorContext(&source)
                        .to_string()
                        .contains("checksum mismatch")
                    {
                        Err(StoreError::Mismatch { source })
                    } else {
                        Err(BodyError::Transport(source).into())
                    }
                }
            }
        })
    }
}

/// What one ListObjectsV2 request asks for.
struct Query<'a> {
    prefix: &'a str,
    delimited: bool,
    token: &'a Option<String>,
    max_keys: Option<i32>,
    start_after: Option<&'a Key>,
}

impl ObjectStore for S3Store {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    fn list_page(
        &self,
        prefix: &str,
        delimited: bool,
        token: Option<String>,
    ) -> BoxFuture<'_, Result<ListPage, StoreError>> {
        let prefix = prefix.to_string();
        Box::pin(async move { self.list(&prefix, delimited, token, None, None).await })
    }

    fn list_after(
        &self,
        prefix: &str,
        start_after: &str,
        max_keys: u32,
    ) -> BoxFuture<'_, Result<ListPage, StoreError>> {
        let prefix = prefix.to_string();
        let max_keys = i32::try_from(max_keys).unwrap_or(i32::MAX);
        let after = Key::new(start_after).ok();
        Box::pin(async move { self.list(&prefix, false, None, Some(max_keys), after).await })
    }

    fn list_first(
        &self,
        prefix: &str,
        max_keys: u32,
    ) -> BoxFuture<'_, Result<ListPage, StoreError>> {
        let prefix = prefix.to_string();
        let max_keys = i32::try_from(max_keys).unwrap_or(i32::MAX);
        Box::pin(async move { self.list(&prefix, true, None, Some(max_keys), None).await })
    }

    fn get(&self, request: GetRequest) -> BoxFuture<'_, Result<GetResponse, StoreError>> {
        Box::pin(self.get_object(request))
    }

    fn restore_state(&self, key: &Key) -> BoxFuture<'_, Result<RestoreState, StoreError>> {
        let key = key.clone();
        Box::pin(async move { self.head_restore(&key).await })
    }

    fn request_restore(
        &self,
        key: &Key,
        request: &RestoreRequest,
    ) -> BoxFuture<'_, Result<RestoreAnswer, StoreError>> {
        let (key, request) = (key.clone(), request.clone());
        Box::pin(async move { self.restore_object(&key, &request).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parses() {
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((0, 100)));
        assert_eq!(parse_content_range("bytes 90-99/100"), Some((90, 100)));
        assert_eq!(parse_content_range("bytes */100"), None);
        assert_eq!(parse_content_range("junk"), None);
    }

    #[test]
    fn only_keys_that_are_not_utf8_get_their_request_rewritten() {
        for text in ["photos/a b.jpg", "caf\u{e9}/\u{1f600}.jpg", ""] {
            assert!(raw_key_bytes(text).is_none(), "{text}");
        }
        let key = raw_bytes::text_from_bytes(b"dir/a\xffz.jpg".to_vec());
        let rewrite = raw_key_bytes(&key).expect("a key that is not UTF-8");
        let mut request = HttpRequest::empty();
        request
            .set_uri("http://127.0.0.1:9000/bkt/dir/a%F4%8F%BF%BFz.jpg?x-id=GetObject")
            .unwrap();
        rewrite(&mut request);
        assert_eq!(
            request.uri(),
            "http://127.0.0.1:9000/bkt/dir/a%FFz.jpg?x-id=GetObject"
        );
    }

    #[test]
    fn spellings_of_one_endpoint_normalize_alike() {
        for spelling in [
            "http://127.0.0.1:5000",
            "http://127.0.0.1:5000/",
            "HTTP://127.0.0.1:5000//",
            " http://127.0.0.1:5000 ",
        ] {
            assert_eq!(normalize_endpoint(spelling), "http://127.0.0.1:5000");
        }
        assert_eq!(
            normalize_endpoint("HTTPS://S3.EU-West-1.AmazonAWS.com:443/"),
            "https://s3.eu-west-1.amazonaws.com"
        );
        assert_eq!(normalize_endpoint("http://Minio:80"), "http://minio");
        // Paths keep their case; other ports and schemes' ports stay.
        assert_eq!(
            normalize_endpoint("https://proxy.example/S3/"),
            "https://proxy.example/S3"
        );
        assert_eq!(
            normalize_endpoint("https://host:80"),
            "https://host:80",
            "80 is not https's default port"
        );
        assert_eq!(
            normalize_endpoint("http://[::1]:9000/"),
            "http://[::1]:9000"
        );
        assert_ne!(
            normalize_endpoint("http://localhost:5000"),
            normalize_endpoint("http://127.0.0.1:5000"),
            "names are not resolved"
        );
    }

    #[test]
    fn the_flag_beats_the_environment_which_beats_the_profile() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        const S3: &[(&str, &str)] = &[("AWS_ENDPOINT_URL_S3", "http://s3-only")];
        let resolved = |flag, vars, loaded| configured_endpoint(flag, env(vars), loaded);
        assert_eq!(
            resolved(Some("http://flag"), S3, Some("http://flag")),
            Some("http://flag".into())
        );
        assert_eq!(
            resolved(None, S3, Some("http://global")),
            Some("http://s3-only".into())
        );
        assert_eq!(
            resolved(None, &[], Some("http://global")),
            Some("http://global".into())
        );
        assert_eq!(resolved(None, &[], None), None, "AWS");
        assert_eq!(
            resolved(None, &[("AWS_ENDPOINT_URL_S3", "")], None),
            None,
            "an empty variable is unset"
        );
        const IGNORED: &[(&str, &str)] = &[
            ("AWS_ENDPOINT_URL_S3", "http://s3-only"),
            ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "TRUE"),
        ];
        assert_eq!(resolved(None, IGNORED, None), None);
        assert_eq!(
            resolved(Some("http://flag"), IGNORED, Some("http://flag")),
            Some("http://flag".into())
        );
    }
}
