//! The HTTP client S3 requests go through: hyper over rustls (aws-lc), as the SDK's
//! own default client, with one difference that matters to a mount's memory: each
//! connection's read buffer is bounded ([`READ_BUFFER`]). Left alone, hyper grows it
//! to ~400 KiB per connection while a large object streams, and a mount streaming a
//! file keeps a dozen connections. The one home of hyper, hyper-util and rustls.
//!
//! Connect and first-byte timeouts come from the SDK's timeout configuration (the
//! connect timeout covers the name lookup, TCP and TLS handshake together, as the
//! SDK's does), errors are classified as the SDK classifies them (so retries and
//! messages are unchanged), TLS offers the SDK's cipher suites, and a connection the
//! SDK poisons (after a timeout or a 5xx) is not reused. Requests go over HTTP/1.1,
//! which is what S3 speaks; HTTP/2 is not offered. When a proxy variable is set the
//! SDK's own client is kept, since it tunnels through the proxy.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use aws_smithy_runtime_api::client::connection::{CaptureSmithyConnection, ConnectionMetadata};
use aws_smithy_runtime_api::client::http::{
    HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector, http_client_fn,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::retry::ErrorKind;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{CaptureConnection, HttpConnector as TcpConnector};
use hyper_util::client::legacy::connect::{HttpInfo, capture_connection};
use hyper_util::client::legacy::{Builder, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

/// Largest read buffer of one connection. hyper reads into a buffer that adapts to
/// how fast bytes come, up to this; 64 KiB still fills a 10 Gb/s link's reads in a
/// few system calls per millisecond, while bounding a dozen connections to < 1 MiB.
pub const READ_BUFFER: usize = 64 * 1024;
// hyper refuses (panics at the first request) a buffer below 8 KiB.
const _: () = assert!(READ_BUFFER >= 8192);

/// How long an idle connection stays in the pool (hyper's default, as the SDK's).
const POOL_IDLE: Duration = Duration::from_secs(90);

/// The environment variables through which a proxy is configured.
const PROXY_VARIABLES: [&str; 6] = [
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

type Timeouts = (Option<Duration>, Option<Duration>);

/// The client for S3 requests, or `None` to keep the SDK's own: when `env` names a
/// proxy, or when no TLS configuration can be built (the SDK then says why).
pub fn client(env: impl Fn(&str) -> Option<String>) -> Option<SharedHttpClient> {
    if PROXY_VARIABLES
        .iter()
        .any(|name| env(name).is_some_and(|value| !value.is_empty()))
    {
        return None;
    }
    let tls = tls_config()?;
    // One connector (with its own connection pool) per pair of timeouts, as the SDK does;
    // in practice every request asks with the same pair.
    let connectors: Mutex<HashMap<Timeouts, SharedHttpConnector>> = Mutex::default();
    Some(http_client_fn(move |settings, _components| {
        let timeouts = (settings.connect_timeout(), settings.read_timeout());
        let mut connectors = connectors.lock().unwrap_or_else(|e| e.into_inner());
        connectors
            .entry(timeouts)
            .or_insert_with(|| SharedHttpConnector::new(Hyper::new(tls.clone(), settings)))
            .clone()
    }))
}

/// The cipher suites the SDK's client offers, strongest first.
const CIPHER_SUITES: [rustls::CipherSuite; 7] = [
    rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
    rustls::CipherSuite::TLS13_AES_128_GCM_SHA256,
    rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    rustls::CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// The TLS settings: the platform's root certificates (`SSL_CERT_FILE` and
/// `SSL_CERT_DIR` override them, as for the SDK), TLS 1.2 and 1.3, and the SDK's
/// cipher suites.
fn tls_config() -> Option<rustls::ClientConfig> {
    let native = rustls_native_certs::load_native_certs();
    if !native.errors.is_empty() {
        tracing::warn!("loading the root certificates: {:?}", native.errors);
    }
    let mut roots = rustls::RootCertStore::empty();
    let (_valid, invalid) = roots.add_parsable_certificates(native.certs);
    if invalid > 0 {
        tracing::debug!("{invalid} root certificates could not be parsed");
    }
    if roots.is_empty() {
        tracing::warn!("no root certificates found: HTTPS endpoints will be refused");
    }
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider
        .cipher_suites
        .retain(|suite| CIPHER_SUITES.contains(&suite.suite()));
    let provider = Arc::new(provider);
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Some(config)
}

/// A hyper client with the SDK's timeouts for one pair of them.
#[derive(Clone)]
struct Hyper {
    client: Client<ConnectWithin<HttpsConnector<TcpConnector>>, SdkBody>,
    read_timeout: Option<Duration>,
}

impl std::fmt::Debug for Hyper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hyper")
            .field("read_buffer", &READ_BUFFER)
            .field("read_timeout", &self.read_timeout)
            .finish_non_exhaustive()
    }
}

impl Hyper {
    fn new(tls: rustls::ClientConfig, settings: &HttpConnectorSettings) -> Hyper {
        let mut tcp = TcpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let https = ConnectWithin {
            inner: https,
            limit: settings.connect_timeout(),
        };
        let client = Builder::new(TokioExecutor::new())
            // The pool's idle timeout needs a timer to run.
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .http1_max_buf_size(READ_BUFFER)
            .build(https);
        Hyper {
            client,
            read_timeout: settings.read_timeout(),
        }
    }
}

impl HttpConnector for Hyper {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let mut request = match request.try_into_http1x() {
            Ok(request) => request,
            Err(err) => return HttpConnectorFuture::ready(Err(ConnectorError::user(err.into()))),
        };
        let captured = capture_connection(&mut request);
        if let Some(smithy) = request.extensions().get::<CaptureSmithyConnection>() {
            smithy.set_connection_retriever(move || connection_metadata(&captured));
        }
        let response = self.client.request(request);
        let read_timeout = self.read_timeout;
        HttpConnectorFuture::new(async move {
            let response = match read_timeout {
                Some(limit) => match tokio::time::timeout(limit, response).await {
                    Ok(response) => response,
                    Err(_) => return Err(ConnectorError::timeout(Box::new(FirstByte(limit)))),
                },
                None => response.await,
            };
            let response = response.map_err(classify)?.map(SdkBody::from_body_1_x);
            HttpResponse::try_from(response).map_err(|e| ConnectorError::other(e.into(), None))
        })
    }
}

/// A connector whose connections (name lookup, TCP and TLS handshake) must be
/// made within `limit`, or fail with a timed-out I/O error.
#[derive(Clone)]
struct ConnectWithin<C> {
    inner: C,
    limit: Option<Duration>,
}

type BoxError = Box<dyn StdError + Send + Sync>;

impl<C> Service<http::Uri> for ConnectWithin<C>
where
    C: Service<http::Uri>,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let limit = self.limit;
        Box::pin(async move {
            let Some(limit) = limit else {
                return connecting.await.map_err(Into::into);
            };
            match tokio::time::timeout(limit, connecting).await {
                Ok(connected) => connected.map_err(Into::into),
                Err(_) => Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connect timed out after {limit:?}"),
                ))),
            }
        })
    }
}

/// What the SDK learns of the connection a request went over, and how it poisons it.
fn connection_metadata(captured: &CaptureConnection) -> Option<ConnectionMetadata> {
    let connected = captured.connection_metadata();
    let connected = connected.as_ref()?;
    let mut extras = http::Extensions::new();
    connected.get_extras(&mut extras);
    let info = extras.get::<HttpInfo>();
    let poisoned = captured.clone();
    let mut metadata = ConnectionMetadata::builder()
        .proxied(connected.is_proxied())
        .poison_fn(move || {
            if let Some(connected) = poisoned.connection_metadata().as_ref() {
                connected.poison();
            }
        });
    metadata
        .set_local_addr(info.map(HttpInfo::local_addr))
        .set_remote_addr(info.map(HttpInfo::remote_addr));
    Some(metadata.build())
}

/// No response header arrived within the read timeout.
#[derive(Debug)]
struct FirstByte(Duration);

impl std::fmt::Display for FirstByte {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "timed out after {:?} waiting for a response", self.0)
    }
}

impl StdError for FirstByte {}

/// A failed request as the SDK's retry logic sees it: timeouts and broken or refused
/// connections are transient, a request hyper refused to send is the caller's.
fn classify(err: hyper_util::client::legacy::Error) -> ConnectorError {
    let connect = err.is_connect();
    let err: BoxError = Box::new(err);
    if let Some(io) = find::<std::io::Error>(err.as_ref())
        && io.kind() == std::io::ErrorKind::TimedOut
    {
        return ConnectorError::timeout(err);
    }
    if let Some(hyper) = find::<hyper::Error>(err.as_ref()) {
        if hyper.is_timeout() {
            return ConnectorError::timeout(err);
        }
        if hyper.is_user() {
            return ConnectorError::user(err);
        }
        if hyper.is_closed() || hyper.is_canceled() || find::<std::io::Error>(hyper).is_some() {
            return ConnectorError::io(err);
        }
        // S3 sometimes closes a connection in the middle of a response.
        if hyper.is_incomplete_message() {
            return ConnectorError::other(err, Some(ErrorKind::TransientError));
        }
        tracing::warn!(error = %DisplayErrorContext(err.as_ref()), "unexpected HTTP error, not retried");
        return ConnectorError::other(err, None);
    }
    if connect || find::<std::io::Error>(err.as_ref()).is_some() {
        return ConnectorError::io(err);
    }
    ConnectorError::other(err, None)
}

fn find<'a, E: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(found) = err.downcast_ref::<E>() {
            return Some(found);
        }
        next = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_variable_keeps_the_sdk_client() {
        for name in PROXY_VARIABLES {
            let env = |n: &str| (n == name).then(|| "http://127.0.0.1:3128".to_string());
            assert!(client(env).is_none(), "{name}");
        }
        let empty = |n: &str| (n == "HTTPS_PROXY").then(String::new);
        assert!(client(empty).is_some());
        assert!(client(|_| None).is_some());
    }
}
