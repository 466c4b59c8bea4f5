//! Latency relay for the benchmark: a TCP relay in front of a local S3 server that holds
//! every chunk for a fixed delay before forwarding it, and counts the HTTP requests that
//! pass through it by kind.
//!
//! ```text
//! relay --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT2 --control 127.0.0.1:PORT3
//!       [--down-ms 20] [--up-ms 0] [--connect-ms 0]
//! ```
//!
//! Chunks are stamped when read and written once their deadline has passed, so they are
//! pipelined: a bulk transfer keeps its throughput (up to the in-flight window per delay
//! period, like a TCP window) while every request/response exchange pays the delay. This
//! stands in for `tc netem`, which kernels without `sch_netem` cannot do.
//!
//! `GET /` on the control address answers one line of counters,
//! `get=N head=N list=N other=N conns=N bytes_down=N bytes_up=N`: object GETs, object
//! HEADs, bucket listings (a GET on the bucket with listing parameters or none), every
//! other request, TCP connections, and payload bytes in each direction. The counters only
//! grow; a caller takes the difference around a workload.

mod http;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use crate::http::{Kind, RequestParser};

const CHUNK: usize = 64 * 1024;
/// Chunks in flight per direction and connection: 16 MiB, enough that a 20 ms delay does
/// not cap one stream below what the local server can send.
const MAX_INFLIGHT_CHUNKS: usize = 256;

#[derive(Default)]
struct Counters {
    get: AtomicU64,
    head: AtomicU64,
    list: AtomicU64,
    other: AtomicU64,
    conns: AtomicU64,
    bytes_down: AtomicU64,
    bytes_up: AtomicU64,
}

impl Counters {
    fn count(&self, kind: Kind) {
        let c = match kind {
            Kind::Get => &self.get,
            Kind::Head => &self.head,
            Kind::List => &self.list,
            Kind::Other => &self.other,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn line(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "get={} head={} list={} other={} conns={} bytes_down={} bytes_up={}\n",
            g(&self.get),
            g(&self.head),
            g(&self.list),
            g(&self.other),
            g(&self.conns),
            g(&self.bytes_down),
            g(&self.bytes_up)
        )
    }
}

struct Config {
    listen: SocketAddr,
    upstream: SocketAddr,
    control: SocketAddr,
    down: Duration,
    up: Duration,
    connect: Duration,
}

fn parse_args(args: &[String]) -> Result<Config, String> {
    let mut listen = None;
    let mut upstream = None;
    let mut control = None;
    let mut down = 20;
    let mut up = 0;
    let mut connect = 0;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let addr = || {
            value
                .parse::<SocketAddr>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        let ms = || {
            value
                .parse::<u64>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--listen" => listen = Some(addr()?),
            "--upstream" => upstream = Some(addr()?),
            "--control" => control = Some(addr()?),
            "--down-ms" => down = ms()?,
            "--up-ms" => up = ms()?,
            "--connect-ms" => connect = ms()?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(Config {
        listen: listen.ok_or("--listen is required")?,
        upstream: upstream.ok_or("--upstream is required")?,
        control: control.ok_or("--control is required")?,
        down: Duration::from_millis(down),
        up: Duration::from_millis(up),
        connect: Duration::from_millis(connect),
    })
}

/// Copies `r` to `w`, each chunk held until `delay` after it was read. Requests are counted
/// as they are read (client to server direction only, where `parser` is given).
async fn pipe(
    mut r: OwnedReadHalf,
    mut w: OwnedWriteHalf,
    delay: Duration,
    counters: Arc<Counters>,
    mut parser: Option<RequestParser>,
    downstream: bool,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(MAX_INFLIGHT_CHUNKS);
    let reader = tokio::spawn(async move {
        loop {
            let mut buf = vec![0u8; CHUNK];
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    buf.truncate(n);
                    let total = if downstream {
                        &counters.bytes_down
                    } else {
                        &counters.bytes_up
                    };
                    total.fetch_add(n as u64, Ordering::Relaxed);
                    if let Some(p) = parser.as_mut() {
                        for kind in p.feed(&buf) {
                            counters.count(kind);
                        }
                    }
                    if tx.send((Instant::now() + delay, buf)).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    while let Some((due, buf)) = rx.recv().await {
        sleep_until(due).await;
        if w.write_all(&buf).await.is_err() {
            break;
        }
    }
    let _ = w.shutdown().await;
    reader.abort();
}

async fn relay(client: TcpStream, cfg: Arc<Config>, counters: Arc<Counters>) {
    counters.conns.fetch_add(1, Ordering::Relaxed);
    // Stands in for the handshake round trip a new connection to a distant server costs.
    if !cfg.connect.is_zero() {
        tokio::time::sleep(cfg.connect).await;
    }
    let server = match TcpStream::connect(cfg.upstream).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("relay: upstream {}: {e}", cfg.upstream);
            return;
        }
    };
    // Small responses must not wait for Nagle plus a delayed ACK on top of the delay.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::join!(
        pipe(
            cr,
            sw,
            cfg.up,
            counters.clone(),
            Some(RequestParser::new()),
            false
        ),
        pipe(sr, cw, cfg.down, counters.clone(), None, true),
    );
}

async fn control(listener: TcpListener, counters: Arc<Counters>) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        let counters = counters.clone();
        tokio::spawn(async move {
            // The request itself does not matter: every request gets the counters.
            let mut buf = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
            let body = counters.line();
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(reply.as_bytes()).await;
            let _ = s.shutdown().await;
        });
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match parse_args(&args) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("relay: {e}");
            eprintln!(
                "usage: relay --listen ADDR --upstream ADDR --control ADDR [--down-ms 20] [--up-ms 0] [--connect-ms 0]"
            );
            return ExitCode::from(2);
        }
    };
    let bind = |a: SocketAddr| async move {
        TcpListener::bind(a)
            .await
            .map_err(|e| format!("relay: cannot listen on {a}: {e}"))
    };
    let (listener, ctl) = match (bind(cfg.listen).await, bind(cfg.control).await) {
        (Ok(l), Ok(c)) => (l, c),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let counters = Arc::new(Counters::default());
    tokio::spawn(control(ctl, counters.clone()));
    eprintln!(
        "relay {} -> {} down={:?} up={:?} connect={:?} control={}",
        cfg.listen, cfg.upstream, cfg.down, cfg.up, cfg.connect, cfg.control
    );
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
        };
        match accepted {
            Ok((c, _)) => {
                tokio::spawn(relay(c, cfg.clone(), counters.clone()));
            }
            Err(e) => eprintln!("relay: accept: {e}"),
        }
    }
}
