//! The server end to end over HTTP: a real s3sim process and plain HTTP/1.1 requests.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> Server {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_s3sim"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--latency-ms",
            "0",
        ])
        .args(extra)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "s3sim did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { child, port }
}

/// (status, headers in lower case, body) of one request; None if the server hung up.
fn req(s: &Server, method: &str, target: &str, headers: &[&str]) -> Option<(u16, String, Vec<u8>)> {
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    let mut r = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    c.write_all(r.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = c.read_to_end(&mut raw);
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, head, raw[end + 4..].to_vec()))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn listing_objects_ranges_and_conditions() {
    let s = start(&[
        "--bucket",
        "b",
        "--set",
        "2500:1K:1000:tree/d{d:4}/img-{i:7}.jpg",
        "--odd-keys",
        "odd/",
    ]);
    // a delimiter listing of the tree: three directories, one page
    let (st, _, body) = req(
        &s,
        "GET",
        "/b?list-type=2&prefix=tree%2F&delimiter=%2F",
        &[],
    )
    .unwrap();
    assert_eq!(st, 200);
    let x = text(&body);
    assert!(
        x.contains("<CommonPrefixes><Prefix>tree/d0002/</Prefix></CommonPrefixes>"),
        "{x}"
    );
    assert!(x.contains("<KeyCount>3</KeyCount>") && x.contains("<IsTruncated>false</IsTruncated>"));
    // pages of 1,000 and a continuation token
    let (_, _, body) = req(&s, "GET", "/b?list-type=2&prefix=tree/", &[]).unwrap();
    let x = text(&body);
    assert!(
        x.contains("<IsTruncated>true</IsTruncated>") && x.contains("<KeyCount>1000</KeyCount>")
    );
    let token = x
        .split("<NextContinuationToken>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap();
    let (_, _, body) = req(
        &s,
        "GET",
        &format!("/b?list-type=2&prefix=tree/&continuation-token={token}"),
        &[],
    )
    .unwrap();
    assert!(text(&body).contains("<Key>tree/d0001/img-0001000.jpg</Key>"));
    // V1 with a marker, URL-encoded keys
    let (_, _, body) = req(
        &s,
        "GET",
        "/b?prefix=odd/&marker=odd/percent%2541.txt&encoding-type=url",
        &[],
    )
    .unwrap();
    let x = text(&body);
    assert!(x.contains("<Key>odd/plus%2Bsign.txt</Key>"), "{x}");
    assert!(!x.contains("<Key>odd/percent") && x.contains("<Marker>odd/percent%2541.txt</Marker>"));
    // an object: whole, ranges, conditions
    let key = "/b/tree/d0001/img-0001234.jpg";
    let (st, head, whole) = req(&s, "GET", key, &[]).unwrap();
    assert_eq!((st, whole.len()), (200, 1024));
    let etag = head
        .split("etag: ")
        .nth(1)
        .unwrap()
        .split("\r\n")
        .next()
        .unwrap()
        .to_string();
    let (st, head, part) = req(&s, "GET", key, &["Range: bytes=-24"]).unwrap();
    assert_eq!(st, 206);
    assert!(head.contains("content-range: bytes 1000-1023/1024"));
    assert_eq!(part, whole[1000..]);
    let (st, head, _) = req(&s, "GET", key, &["Range: bytes=1024-"]).unwrap();
    assert_eq!(st, 416);
    assert!(head.contains("content-range: bytes */1024"));
    assert_eq!(req(&s, "GET", key, &["If-Match: \"00\""]).unwrap().0, 412);
    assert_eq!(
        req(&s, "GET", key, &[&format!("If-Match: {etag}")])
            .unwrap()
            .0,
        200
    );
    assert_eq!(
        req(&s, "GET", key, &[&format!("If-None-Match: {etag}")])
            .unwrap()
            .0,
        304
    );
    let (st, head, body) = req(&s, "HEAD", key, &[]).unwrap();
    assert!(st == 200 && head.contains("content-length: 1024") && body.is_empty());
    assert_eq!(req(&s, "HEAD", "/b/nope", &[]).unwrap().0, 404);
    let (st, _, body) = req(&s, "GET", "/b/odd/with%20space.txt", &[]).unwrap();
    assert_eq!(
        (st, text(&body)),
        (200, "odd key odd/with space.txt\n".to_string())
    );
    // what it does not do
    let (st, _, body) = req(&s, "PUT", "/b/new", &[]).unwrap();
    assert!(st == 501 && text(&body).contains("<Code>NotImplemented</Code>"));
    assert_eq!(req(&s, "GET", "/b?versioning", &[]).unwrap().0, 501);
    assert_eq!(req(&s, "GET", "/nobucket?list-type=2", &[]).unwrap().0, 404);
}

#[test]
fn faults_on_demand_and_counters() {
    let s = start(&["--bucket", "b", "--set", "10:0:0:k{i:2}"]);
    assert_eq!(req(&s, "HEAD", "/b/k01", &[]).unwrap().0, 200);
    req(&s, "POST", "/__sim/slowdown?fraction=1&seconds=30", &[]).unwrap();
    let (st, _, body) = req(&s, "GET", "/b/k01", &[]).unwrap();
    assert!(st == 503 && text(&body).contains("<Code>SlowDown</Code>"));
    req(&s, "POST", "/__sim/slowdown?fraction=0&seconds=0", &[]).unwrap();
    req(&s, "POST", "/__sim/down", &[]).unwrap();
    assert!(req(&s, "GET", "/b/k01", &[]).is_none());
    req(&s, "POST", "/__sim/up", &[]).unwrap();
    req(&s, "POST", "/__sim/stall?seconds=0.5", &[]).unwrap();
    let t = Instant::now();
    assert_eq!(req(&s, "GET", "/b?list-type=2", &[]).unwrap().0, 200);
    assert!(t.elapsed() >= Duration::from_millis(400));
    let (_, _, stats) = req(&s, "GET", "/__sim/stats", &[]).unwrap();
    let stats = text(&stats);
    assert!(stats.contains("\"list\":1,\"head\":1,\"get\":1"), "{stats}");
    assert!(
        stats.contains("\"slowdown\":1,\"dropped\":1,\"stalled\":1"),
        "{stats}"
    );
    assert!(
        stats.contains("\"by_bucket\":{\"b\":{\"list\":1,\"head\":1,\"get\":1,\"other\":0}}"),
        "{stats}"
    );
    // a bucket the server does not serve counts in all, not by bucket
    assert_eq!(req(&s, "GET", "/nosuch?list-type=2", &[]).unwrap().0, 404);
    let (_, _, stats) = req(&s, "GET", "/__sim/stats", &[]).unwrap();
    let stats = text(&stats);
    assert!(stats.contains("\"list\":2,"), "{stats}");
    assert!(!stats.contains("nosuch"), "{stats}");
    req(&s, "POST", "/__sim/stats/reset", &[]).unwrap();
    let (_, _, stats) = req(&s, "GET", "/__sim/stats", &[]).unwrap();
    assert!(text(&stats).contains("\"get\":0"));
    assert!(text(&stats).contains("\"by_bucket\":{}"));
}
