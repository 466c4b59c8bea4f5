//! The S3 REST front end: routes a request to a bucket or object operation, applies the
//! performance model and faults, and answers with S3's headers and XML.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::data::Bucket;
use crate::enc;
use crate::list::{self, Echo, From, MAX_KEYS, Query};
use crate::model::{Model, Op};

/// Bytes generated and paced at a time.
const CHUNK: u64 = 128 * 1024;

pub struct Sim {
    pub buckets: Vec<Arc<Bucket>>,
    pub model: Model,
    pub region: String,
    request_id: AtomicU64,
}

impl Sim {
    pub fn new(buckets: Vec<Bucket>, model: Model, region: String) -> Self {
        Sim {
            buckets: buckets.into_iter().map(Arc::new).collect(),
            model,
            region,
            request_id: AtomicU64::new(1),
        }
    }

    fn bucket(&self, name: &str) -> Option<Arc<Bucket>> {
        self.buckets.iter().find(|b| b.name == name).cloned()
    }
}

/// A body cut short (the server went down while sending it).
#[derive(Debug)]
pub struct Cut;

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("response cut: server down")
    }
}

impl std::error::Error for Cut {}

/// A response body: in memory, or chunks a pacing task sends.
pub enum SimBody {
    Full(Option<Bytes>),
    Chunks(mpsc::Receiver<Result<Bytes, Cut>>),
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = Cut;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Cut>>> {
        match self.get_mut() {
            SimBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            SimBody::Chunks(rx) => rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, SimBody::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            SimBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            SimBody::Chunks(_) => SizeHint::default(),
        }
    }
}

fn empty() -> SimBody {
    SimBody::Full(None)
}

/// The connection is dropped without an answer (the server is down).
#[derive(Debug)]
pub struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("server down: connection dropped")
    }
}

impl std::error::Error for Dropped {}

type Resp = Response<SimBody>;

fn response(status: StatusCode, ctype: &str, body: String) -> Resp {
    let mut r = Response::new(SimBody::Full(Some(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(ctype).expect("ascii"),
    );
    r
}

fn xml_ok(body: String) -> Resp {
    response(StatusCode::OK, "application/xml", body)
}

/// An S3 error document; HEAD answers get the status only, as from S3.
fn error(status: StatusCode, code: &str, message: &str, resource: &str, head: bool) -> Resp {
    if head {
        let mut r = Response::new(empty());
        *r.status_mut() = status;
        return r;
    }
    response(
        status,
        "application/xml",
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}</Message><Resource>{}</Resource></Error>",
            enc::xml(message),
            enc::xml(resource)
        ),
    )
}

fn not_implemented(what: &str) -> Resp {
    error(
        StatusCode::NOT_IMPLEMENTED,
        "NotImplemented",
        "A header or query you provided implies functionality that is not implemented.",
        what,
        false,
    )
}

/// The bucket and key a request addresses: virtual-host style when the Host names a
/// bucket, path style otherwise.
fn route(sim: &Sim, req: &Request<Incoming>) -> Option<(String, String)> {
    let path = enc::percent_decode(req.uri().path(), false)?;
    let path = path.strip_prefix('/').unwrap_or(&path).to_string();
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if let Some((first, _)) = host.split_once('.')
        && sim.bucket(first).is_some()
    {
        return Some((first.to_string(), path));
    }
    let (bucket, key) = path.split_once('/').unwrap_or((&path, ""));
    Some((bucket.to_string(), key.to_string()))
}

fn op_of(method: &Method, bucket: &str, key: &str) -> Op {
    match (method, bucket.is_empty(), key.is_empty()) {
        (&Method::GET, false, true) => Op::List,
        (&Method::GET, false, false) => Op::Get,
        (&Method::HEAD, false, false) => Op::Head,
        _ => Op::Other,
    }
}

pub async fn handle(req: Request<Incoming>, sim: Arc<Sim>) -> Result<Resp, Dropped> {
    if req.uri().path().starts_with("/__sim/") {
        return Ok(control(&req, &sim));
    }
    let m = &sim.model;
    if m.is_down() {
        m.stats.dropped.fetch_add(1, Ordering::Relaxed);
        return Err(Dropped);
    }
    if let Some(until) = m.stall_until() {
        m.stats.stalled.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep_until(until).await;
        if m.is_down() {
            m.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(Dropped);
        }
    }
    let id = sim.request_id.fetch_add(1, Ordering::Relaxed);
    let head = req.method() == Method::HEAD;
    let mut resp = match route(&sim, &req) {
        None => error(
            StatusCode::BAD_REQUEST,
            "InvalidURI",
            "Bad path encoding",
            req.uri().path(),
            head,
        ),
        Some((bucket, key)) => {
            let served = sim.buckets.iter().any(|b| b.name == bucket);
            m.stats.count(
                op_of(req.method(), &bucket, &key),
                served.then_some(&*bucket),
            );
            if !m.latency.is_zero() {
                tokio::time::sleep(m.latency).await;
            }
            if m.slowdown_now() {
                m.stats.slowdown.fetch_add(1, Ordering::Relaxed);
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "SlowDown",
                    "Please reduce your request rate.",
                    &key,
                    head,
                )
            } else {
                s3(&sim, &req, &bucket, &key).await
            }
        }
    };
    let h = resp.headers_mut();
    h.insert(
        "x-amz-request-id",
        HeaderValue::from_str(&format!("{id:016X}")).expect("hex"),
    );
    h.insert(header::SERVER, HeaderValue::from_static("s3sim"));
    Ok(resp)
}

fn control(req: &Request<Incoming>, sim: &Sim) -> Resp {
    let q = enc::query(req.uri().query().unwrap_or("")).unwrap_or_default();
    let num = |name: &str| {
        q.iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    let m = &sim.model;
    let ok = |msg: String| response(StatusCode::OK, "text/plain", msg + "\n");
    let bad = |msg: &str| response(StatusCode::BAD_REQUEST, "text/plain", format!("{msg}\n"));
    match req.uri().path() {
        "/__sim/stats" => response(StatusCode::OK, "application/json", m.stats.json()),
        "/__sim/stats/reset" => {
            m.stats.reset();
            ok("reset".into())
        }
        "/__sim/slowdown" => match (num("fraction"), num("seconds")) {
            (Some(f), Some(s)) if f <= 1.0 => {
                m.set_slowdown(f, s);
                ok(format!("slowdown fraction={f} for {s} s"))
            }
            _ => bad("want ?fraction=0..1&seconds=N"),
        },
        "/__sim/stall" => match num("seconds") {
            Some(s) => {
                m.set_stall(s);
                ok(format!("stalling requests for {s} s"))
            }
            None => bad("want ?seconds=N"),
        },
        "/__sim/down" => {
            m.set_down(true);
            ok("down".into())
        }
        "/__sim/up" => {
            m.set_down(false);
            ok("up".into())
        }
        _ => response(
            StatusCode::NOT_FOUND,
            "text/plain",
            "unknown control path\n".into(),
        ),
    }
}

async fn s3(sim: &Arc<Sim>, req: &Request<Incoming>, bucket: &str, key: &str) -> Resp {
    let head = req.method() == Method::HEAD;
    let Some(q) = enc::query(req.uri().query().unwrap_or("")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "Bad query encoding",
            "",
            head,
        );
    };
    if bucket.is_empty() {
        return match *req.method() {
            Method::GET => list_buckets(sim),
            Method::HEAD => Response::new(empty()),
            _ => not_implemented("/"),
        };
    }
    let Some(b) = sim.bucket(bucket) else {
        return error(
            StatusCode::NOT_FOUND,
            "NoSuchBucket",
            "The specified bucket does not exist",
            bucket,
            head,
        );
    };
    if key.is_empty() {
        bucket_op(sim, req, b, &q).await
    } else {
        object_op(sim, req, b, key, &q).await
    }
}

fn list_buckets(sim: &Sim) -> Resp {
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListAllMyBucketsResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Owner><ID>s3sim</ID><DisplayName>s3sim</DisplayName></Owner><Buckets>",
    );
    for b in &sim.buckets {
        x.push_str(&format!(
            "<Bucket><Name>{}</Name><CreationDate>{}</CreationDate></Bucket>",
            enc::xml(&b.name),
            enc::iso8601(1_735_689_600)
        ));
    }
    x.push_str("</Buckets></ListAllMyBucketsResult>");
    xml_ok(x)
}

const LIST_PARAMS: &[&str] = &[
    "list-type",
    "prefix",
    "delimiter",
    "marker",
    "max-keys",
    "encoding-type",
    "fetch-owner",
    "start-after",
    "continuation-token",
    "x-id",
];

async fn bucket_op(
    sim: &Sim,
    req: &Request<Incoming>,
    b: Arc<Bucket>,
    q: &[(String, String)],
) -> Resp {
    let head = req.method() == Method::HEAD;
    let get = |name: &str| q.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    match *req.method() {
        Method::HEAD => {
            let mut r = Response::new(empty());
            r.headers_mut().insert(
                "x-amz-bucket-region",
                HeaderValue::from_str(&sim.region).unwrap_or(HeaderValue::from_static("us-east-1")),
            );
            return r;
        }
        Method::GET => {}
        _ => return not_implemented(&b.name),
    }
    if get("location").is_some() {
        let region = if sim.region == "us-east-1" {
            String::new()
        } else {
            enc::xml(&sim.region)
        };
        return xml_ok(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LocationConstraint xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">{region}</LocationConstraint>"
        ));
    }
    if let Some((k, _)) = q.iter().find(|(k, _)| !LIST_PARAMS.contains(&k.as_str())) {
        return not_implemented(&format!("{}?{k}", b.name));
    }
    let v2 = get("list-type").as_deref() == Some("2");
    let max_keys = match get("max-keys").map(|v| v.parse::<usize>()) {
        None => MAX_KEYS,
        Some(Ok(n)) => n.min(MAX_KEYS),
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                "Provided max-keys not an integer or within integer range",
                &b.name,
                head,
            );
        }
    };
    let url = match get("encoding-type").as_deref() {
        None => false,
        Some("url") => true,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidArgument",
                "Invalid Encoding Method specified in Request",
                &b.name,
                head,
            );
        }
    };
    let token = get("continuation-token").filter(|_| v2);
    let start_after = get("start-after").filter(|_| v2);
    let marker = get("marker").filter(|_| !v2);
    let from = match (&token, &start_after, &marker) {
        (Some(t), _, _) => match list::parse_token(t) {
            Some(f) => Some(f),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "InvalidArgument",
                    "The continuation token provided is incorrect",
                    &b.name,
                    head,
                );
            }
        },
        (None, Some(s), _) if !s.is_empty() => Some(From::After(s.clone())),
        (None, _, Some(m)) if !m.is_empty() => Some(From::After(m.clone())),
        _ => None,
    };
    let query = Query {
        prefix: get("prefix").unwrap_or_default(),
        delimiter: get("delimiter").filter(|d| !d.is_empty()),
        from,
        max_keys,
    };
    let echo = Echo {
        v2,
        url,
        start_after,
        token,
        marker,
        max_keys,
    };
    // hashing a page's contents can take a while the first time: off the async workers
    let body = tokio::task::spawn_blocking(move || {
        let page = list::list(&b, &query);
        list::xml_page(&b, &query, &page, &echo)
    })
    .await
    .expect("listing task");
    xml_ok(body)
}

const OBJECT_UNSUPPORTED: &[&str] = &[
    "acl",
    "tagging",
    "attributes",
    "retention",
    "legal-hold",
    "torrent",
    "uploads",
    "uploadId",
    "restore",
    "select",
];

/// `bytes=a-b`, `bytes=a-`, `bytes=-n`: Ok(None) when the header is absent or not one
/// range (S3 then sends the whole object), Err(()) when it cannot be satisfied.
pub fn parse_range(h: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = h.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(a), Ok(b)) if a <= b => (a, b.min(size.saturating_sub(1))),
        (Ok(_), Ok(_)) => return Ok(None),
        (Ok(a), Err(_)) if b.is_empty() => (a, size.saturating_sub(1)),
        (Err(_), Ok(n)) if a.is_empty() => {
            if n == 0 {
                return Err(());
            }
            (size.saturating_sub(n), size.saturating_sub(1))
        }
        _ => return Ok(None),
    };
    if size == 0 || range.0 >= size {
        return Err(());
    }
    Ok(Some(range))
}

/// Whether an If-Match / If-None-Match value names this ETag.
fn etag_matches(h: &str, etag: &str) -> bool {
    h.split(',').map(str::trim).any(|t| {
        let t = t.strip_prefix("W/").unwrap_or(t);
        t == "*" || t.trim_matches('"') == etag
    })
}

async fn object_op(
    sim: &Arc<Sim>,
    req: &Request<Incoming>,
    b: Arc<Bucket>,
    key: &str,
    q: &[(String, String)],
) -> Resp {
    let head = req.method() == Method::HEAD;
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return not_implemented(key);
    }
    if let Some((k, _)) = q
        .iter()
        .find(|(k, _)| OBJECT_UNSUPPORTED.contains(&k.as_str()))
    {
        return not_implemented(&format!("{key}?{k}"));
    }
    let Some(pos) = b.find(key) else {
        return error(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
            key,
            head,
        );
    };
    let size = b.size(pos);
    let md5 = if b.md5_cheap(pos) {
        b.md5(pos)
    } else {
        let b2 = b.clone();
        tokio::task::spawn_blocking(move || b2.md5(pos))
            .await
            .expect("hash task")
    };
    let etag = enc::hex(&md5);
    let hdr = |name: header::HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok());
    let mut r = Response::new(empty());
    let h = r.headers_mut();
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&format!("\"{etag}\"")).expect("hex"),
    );
    h.insert(
        header::LAST_MODIFIED,
        HeaderValue::from_str(&enc::http_date(b.modified(pos))).expect("ascii date"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(m) = hdr(header::IF_MATCH)
        && !etag_matches(m, &etag)
    {
        return error(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            "At least one of the pre-conditions you specified did not hold",
            "If-Match",
            head,
        );
    }
    if let Some(m) = hdr(header::IF_NONE_MATCH)
        && etag_matches(m, &etag)
    {
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        return r;
    }
    let (from, to) = match parse_range(hdr(header::RANGE), size) {
        Ok(None) => (0, size),
        Ok(Some((a, z))) => {
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {a}-{z}/{size}")).expect("ascii"),
            );
            (a, z + 1)
        }
        Err(()) => {
            let mut e = error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "InvalidRange",
                "The requested range is not satisfiable",
                key,
                head,
            );
            e.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
            );
            return e;
        }
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("binary/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(to - from));
    if head || from == to {
        return r;
    }
    *r.body_mut() = send(sim.clone(), b, pos, from, to).await;
    r
}

/// The body of bytes `from..to` of an object, paced by the model: a short one right away
/// (after its transfer time), a long one by a task that sends chunk after chunk.
async fn send(sim: Arc<Sim>, b: Arc<Bucket>, pos: u64, from: u64, to: u64) -> SimBody {
    let start = Instant::now();
    let len = to - from;
    if len <= CHUNK {
        let mut buf = vec![0u8; len as usize];
        b.read(pos, from, &mut buf);
        sim.model.pace(start, 0, len).await;
        sim.model.stats.bytes.fetch_add(len, Ordering::Relaxed);
        return SimBody::Full(Some(Bytes::from(buf)));
    }
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let mut sent = 0;
        while sent < len {
            let n = CHUNK.min(len - sent);
            let mut buf = vec![0u8; n as usize];
            b.read(pos, from + sent, &mut buf);
            sim.model.pace(start, sent, n).await;
            if sim.model.is_down() {
                let _ = tx.send(Err(Cut)).await;
                return;
            }
            if tx.send(Ok(Bytes::from(buf))).await.is_err() {
                return;
            }
            sent += n;
            sim.model.stats.bytes.fetch_add(n, Ordering::Relaxed);
        }
    });
    SimBody::Chunks(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=2-5"), 10), Ok(Some((2, 5))));
        assert_eq!(parse_range(Some("bytes=2-50"), 10), Ok(Some((2, 9))));
        assert_eq!(parse_range(Some("bytes=7-"), 10), Ok(Some((7, 9))));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Ok(Some((7, 9))));
        assert_eq!(parse_range(Some("bytes=-30"), 10), Ok(Some((0, 9))));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=-0"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=0-0"), 0), Err(()));
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Ok(None));
        assert_eq!(parse_range(Some("items=1-2"), 10), Ok(None));
    }

    #[test]
    fn conditions() {
        assert!(etag_matches("\"abc\"", "abc"));
        assert!(etag_matches("\"x\", \"abc\"", "abc"));
        assert!(etag_matches("*", "abc"));
        assert!(!etag_matches("\"abd\"", "abc"));
    }
}
