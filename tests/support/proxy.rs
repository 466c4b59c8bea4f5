//! A small HTTP/1.1 proxy on tokio between the tool and moto. It records every
//! request (method, target, Range, If-Match, the status it got), can be cut off
//! (offline), and injects faults by rule (see `faults`): S3 errors, resets,
//! short, stalled and corrupted bodies, objects changing mid-response. Given the
//! bucket owner's account, it also refuses requests that expect another owner, as S3 does.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

use super::faults::{Fault, Hook, RequestInfo, Rule};

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub target: String,
    /// The Range header, if any (`bytes=START-END`).
    pub range: Option<String>,
    pub if_match: Option<String>,
    /// The `x-amz-expected-bucket-owner` header, if any.
    pub expected_owner: Option<String>,
    /// The `x-amz-optional-object-attributes` header, if any (`RestoreStatus`).
    pub optional_attributes: Option<String>,
    /// The fault injected, if any.
    pub fault: Option<&'static str>,
}

impl Seen {
    /// Whether this is a ListObjectsV2 request.
    pub fn is_list(&self) -> bool {
        self.method == "GET" && self.target.contains("list-type=2")
    }

    /// Whether this is a GET of the object `key` (a plain key).
    pub fn is_get_of(&self, key: &str) -> bool {
        self.method == "GET"
            && !self.is_list()
            && self
                .target
                .split('?')
                .next()
                .unwrap_or_default()
                .ends_with(&format!("/{key}"))
    }

    /// The first byte asked for by the Range header.
    pub fn range_start(&self) -> Option<u64> {
        self.range
            .as_deref()?
            .strip_prefix("bytes=")?
            .split('-')
            .next()?
            .parse()
            .ok()
    }
}

struct Shared {
    upstream_port: u16,
    seen: Mutex<Vec<Seen>>,
    rules: Mutex<Vec<Arc<Rule>>>,
    down: AtomicBool,
    /// Response body bytes handed to clients so far.
    served: AtomicU64,
    /// The account that owns every bucket, if the proxy plays S3's owner check.
    owner: Mutex<Option<String>>,
    /// (server's spelling, client's spelling) pairs swapped in targets and bodies.
    spellings: Mutex<Vec<(String, String)>>,
}

/// A running proxy; it lives until the test process exits.
pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
}

impl Proxy {
    pub fn start(upstream_port: u16) -> Proxy {
        let shared = Arc::new(Shared {
            upstream_port,
            seen: Mutex::new(Vec::new()),
            rules: Mutex::new(Vec::new()),
            down: AtomicBool::new(false),
            served: AtomicU64::new(0),
            owner: Mutex::new(None),
            spellings: Mutex::new(Vec::new()),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let state = Arc::clone(&shared);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(listener.local_addr().unwrap().port()).unwrap();
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    if state.down.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let state = Arc::clone(&state);
                    tokio::spawn(async move {
                        let _ = serve(client, &state).await;
                    });
                }
            });
        });
        Proxy {
            port: rx.recv().unwrap(),
            shared,
        }
    }

    /// Simulates S3 being unreachable: connections are dropped, new and open ones.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// Answers requests whose target contains `pattern` with an S3 error.
    pub fn fail(&self, pattern: &str, status: u16, code: &'static str) {
        self.add(Rule::matching(pattern, Fault::Error { status, code }));
    }

    /// Adds a fault rule; the first rule that picks a request decides its fault.
    pub fn add(&self, rule: Rule) {
        self.shared.rules.lock().push(Arc::new(rule));
    }

    /// Plays S3's owner check: a request whose `x-amz-expected-bucket-owner` is
    /// not `owner` gets `403 AccessDenied`, as S3 answers it.
    pub fn set_bucket_owner(&self, owner: &str) {
        *self.shared.owner.lock() = Some(owner.to_string());
    }

    /// Plays a server that spells something as `client` where the server behind
    /// spells it `server`: request targets get `server`, response bodies `client`.
    /// How a test shows the tool keys that moto cannot hold (bytes that are not UTF-8).
    pub fn respell(&self, server: &str, client: &str) {
        let pair = (server.to_string(), client.to_string());
        self.shared.spellings.lock().push(pair);
    }

    /// Removes every rule.
    pub fn clear_rules(&self) {
        self.shared.rules.lock().clear();
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.shared.seen.lock().clone()
    }

    /// The GETs of object `key` seen so far.
    pub fn gets_of(&self, key: &str) -> Vec<Seen> {
        self.requests()
            .into_iter()
            .filter(|r| r.is_get_of(key))
            .collect()
    }

    pub fn clear(&self) {
        self.shared.seen.lock().clear();
    }

    /// Response body bytes handed to clients so far (written to their sockets).
    pub fn bytes_served(&self) -> u64 {
        self.shared.served.load(Ordering::SeqCst)
    }
}

/// A request read from the client.
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response read in full from the server.
struct Response {
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Serves one client connection, request by request (HTTP/1.1 keep-alive).
async fn serve(client: TcpStream, shared: &Shared) -> io::Result<()> {
    let (read, mut write) = client.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let Some(mut request) = read_request(&mut reader, &mut write).await? else {
            return Ok(());
        };
        if shared.down.load(Ordering::SeqCst) {
            return Ok(());
        }
        let expected_owner = request.header("x-amz-expected-bucket-owner");
        let other_owner = match (shared.owner.lock().as_deref(), expected_owner) {
            (Some(owner), Some(expected)) => owner != expected,
            _ => false,
        };
        let fault = if other_owner {
            Some(Fault::access_denied())
        } else {
            let info = RequestInfo {
                method: &request.method,
                target: &request.target,
                range: request.header("range"),
            };
            // Every rule counts every request it matches; the first that picks it decides.
            let rules = shared.rules.lock().clone();
            rules
                .iter()
                .map(|rule| rule.apply(&info))
                .fold(None, |first, fault| first.or(fault))
        };
        shared.seen.lock().push(Seen {
            method: request.method.clone(),
            target: request.target.clone(),
            range: request.header("range").map(str::to_string),
            if_match: request.header("if-match").map(str::to_string),
            expected_owner: expected_owner.map(str::to_string),
            optional_attributes: request
                .header("x-amz-optional-object-attributes")
                .map(str::to_string),
            fault: fault.as_ref().map(Fault::name),
        });
        if let Some((status, code, extra)) = fault.as_ref().and_then(Fault::error_answer) {
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>injected by the test proxy</Message>{extra}<RequestId>test</RequestId></Error>"
            );
            let head = format!(
                "HTTP/1.1 {status} Injected\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            write.write_all(head.as_bytes()).await?;
            write.write_all(body.as_bytes()).await?;
            continue;
        }
        match &fault {
            Some(Fault::ResetBeforeHeaders) => return reset(reader, write),
            Some(Fault::StallBeforeHeaders { limit }) => {
                wait_for_close(&mut reader, *limit).await;
                return Ok(());
            }
            Some(Fault::HookBefore(hook)) => run_hook(Arc::clone(hook)).await,
            _ => {}
        }
        let spellings = shared.spellings.lock().clone();
        for (server, client) in &spellings {
            request.target = request.target.replace(client, server);
        }
        let mut response = forward(&request, shared.upstream_port).await?;
        for (server, client) in &spellings {
            respell_body(&mut response.body, server.as_bytes(), client.as_bytes());
        }
        let ok = response.status_line.starts_with('2');
        let hide_checksums = ok && matches!(fault, Some(Fault::FlipByteUnchecked(_)));
        let mut head = format!("HTTP/1.1 {}\r\n", response.status_line);
        for (name, value) in &response.headers {
            let hidden = hide_checksums && name.to_ascii_lowercase().starts_with("x-amz-checksum-");
            if !hidden
                && ![
                    "connection",
                    "transfer-encoding",
                    "content-length",
                    "keep-alive",
                ]
                .iter()
                .any(|h| name.eq_ignore_ascii_case(h))
            {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        let length = if request.method == "HEAD" {
            header_of(&response.headers, "content-length")
                .unwrap_or("0")
                .to_string()
        } else {
            response.body.len().to_string()
        };
        head.push_str(&format!("Content-Length: {length}\r\n\r\n"));
        write.write_all(head.as_bytes()).await?;
        let body = &mut response.body;
        let cut = |n: usize| n.min(body.len());
        match fault {
            None
            | Some(
                Fault::Error { .. }
                | Fault::Archived { .. }
                | Fault::ResetBeforeHeaders
                | Fault::StallBeforeHeaders { .. }
                | Fault::HookBefore(_),
            ) => {
                write.write_all(&body[..]).await?;
                shared.served.fetch_add(body.len() as u64, Ordering::SeqCst);
            }
            Some(Fault::FlipByte(at) | Fault::FlipByteUnchecked(at)) => {
                if ok && !body.is_empty() {
                    let at = at.min(body.len() - 1);
                    body[at] ^= 0x01;
                }
                write.write_all(&body[..]).await?;
            }
            Some(Fault::Drip { bytes, every }) => {
                for (i, chunk) in body.chunks(bytes.max(1)).enumerate() {
                    if i > 0 {
                        tokio::time::sleep(every).await;
                    }
                    write.write_all(chunk).await?;
                    write.flush().await?;
                    shared
                        .served
                        .fetch_add(chunk.len() as u64, Ordering::SeqCst);
                }
            }
            Some(Fault::TruncateAfter(n)) => {
                write.write_all(&body[..cut(n)]).await?;
                write.flush().await?;
                write.shutdown().await?;
                return Ok(());
            }
            Some(Fault::ResetAfter(n)) => {
                write.write_all(&body[..cut(n)]).await?;
                write.flush().await?;
                // Let the bytes reach the client before the reset discards what is in flight.
                tokio::time::sleep(Duration::from_millis(300)).await;
                return reset(reader, write);
            }
            Some(Fault::StallAfter { bytes, limit }) => {
                write.write_all(&body[..cut(bytes)]).await?;
                write.flush().await?;
                wait_for_close(&mut reader, limit).await;
                return Ok(());
            }
            Some(Fault::HookAfter(n, hook)) => {
                let n = cut(n);
                write.write_all(&body[..n]).await?;
                write.flush().await?;
                run_hook(hook).await;
                write.write_all(&body[n..]).await?;
            }
        }
        write.flush().await?;
    }
}

/// Replaces every `from` in `body` with `to`.
fn respell_body(body: &mut Vec<u8>, from: &[u8], to: &[u8]) {
    if from.is_empty() || !body.windows(from.len()).any(|w| w == from) {
        return;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(body[i]);
            i += 1;
        }
    }
    *body = out;
}

/// Runs a test's hook off the proxy's threads (it may block, e.g. on an upload).
async fn run_hook(hook: Hook) {
    tokio::task::spawn_blocking(move || std::thread::spawn(move || hook()).join())
        .await
        .expect("hook task")
        .expect("hook does not panic");
}

/// Sends nothing more and waits for the client to give up and close (or `limit`).
async fn wait_for_close(reader: &mut BufReader<OwnedReadHalf>, limit: Duration) {
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(limit, async {
        while let Ok(n) = reader.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Closes the connection with a TCP reset.
fn reset(reader: BufReader<OwnedReadHalf>, write: OwnedWriteHalf) -> io::Result<()> {
    let stream = reader
        .into_inner()
        .reunite(write)
        .map_err(|e| io::Error::other(e.to_string()))?;
    stream.set_zero_linger()?;
    drop(stream);
    Ok(())
}

fn header_of<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Reads a request head and its body (by Content-Length, or chunked, which is
/// decoded); `None` when the client closed. A client that waits for
/// `100 Continue` gets it here, and the server sees neither.
async fn read_request(
    reader: &mut BufReader<OwnedReadHalf>,
    write: &mut OwnedWriteHalf,
) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers = read_headers(reader).await?;
    if header_of(&headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        write.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        write.flush().await?;
    }
    let chunked = header_of(&headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        read_chunked(reader).await?
    } else {
        let length: usize = header_of(&headers, "content-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).await?;
        body
    };
    // The server gets the body whole, with its length.
    let had_length = header_of(&headers, "content-length").is_some();
    headers.retain(|(n, _)| {
        !["expect", "transfer-encoding", "content-length"]
            .iter()
            .any(|h| n.eq_ignore_ascii_case(h))
    });
    if chunked || had_length {
        headers.push(("Content-Length".into(), body.len().to_string()));
    }
    Ok(Some(Request {
        method,
        target,
        headers,
        body,
    }))
}

/// Decodes a chunked body (trailers are dropped).
async fn read_chunked(reader: &mut BufReader<OwnedReadHalf>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).await?;
        let size = size.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size, 16)
            .map_err(|_| io::Error::other(format!("bad chunk size {size:?}")))?;
        if size == 0 {
            read_headers(reader).await?;
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..]).await?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf).await?;
    }
}

async fn read_headers<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> io::Result<Vec<(String, String)>> {
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return Ok(headers);
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
}

/// Sends the request to the server on a connection of its own, as HTTP/1.0 so the
/// response is never chunked, and reads the whole response.
async fn forward(request: &Request, port: u16) -> io::Result<Response> {
    let upstream = TcpStream::connect(("127.0.0.1", port)).await?;
    let (read, mut write) = upstream.into_split();
    let mut head = format!("{} {} HTTP/1.0\r\n", request.method, request.target);
    for (name, value) in &request.headers {
        if !name.eq_ignore_ascii_case("connection") {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    write.write_all(head.as_bytes()).await?;
    write.write_all(&request.body).await?;
    write.flush().await?;
    let mut reader = BufReader::new(read);
    let (status_line, headers) = loop {
        let mut status = String::new();
        reader.read_line(&mut status).await?;
        let status_line = status
            .trim_end()
            .split_once(' ')
            .map(|(_, rest)| rest.to_string())
            .ok_or_else(|| io::Error::other(format!("bad status line {status:?}")))?;
        let headers = read_headers(&mut reader).await?;
        // Interim answers (100 Continue) are not the response.
        if !status_line.starts_with('1') {
            break (status_line, headers);
        }
    };
    let mut body = Vec::new();
    if request.method != "HEAD" {
        match header_of(&headers, "content-length").and_then(|v| v.trim().parse().ok()) {
            Some(n) => {
                body.resize(n, 0);
                reader.read_exact(&mut body).await?;
            }
            None => {
                reader.read_to_end(&mut body).await?;
            }
        }
    }
    Ok(Response {
        status_line,
        headers,
        body,
    })
}
