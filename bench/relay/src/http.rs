//! Finds HTTP/1.1 request boundaries in a client's byte stream and classifies each request
//! as an S3 object GET, object HEAD, bucket listing or anything else (path-style addressing,
//! `/BUCKET/KEY`, which every tool in the benchmark is configured to use).

/// What one request was, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Get,
    Head,
    List,
    Other,
}

/// A header block larger than this is not HTTP we understand; stop parsing the connection.
const MAX_HEAD: usize = 64 * 1024;

/// Query parameters that make a GET on a bucket a listing (ListObjects v1 and v2).
const LIST_PARAMS: &[&str] = &[
    "list-type",
    "prefix",
    "delimiter",
    "marker",
    "continuation-token",
    "start-after",
    "max-keys",
    "encoding-type",
    "fetch-owner",
];

#[derive(Debug)]
enum State {
    /// Collecting a request line and headers.
    Head(Vec<u8>),
    /// Skipping a body of known length.
    Body(u64),
    /// A chunked body: collecting a chunk-size line.
    ChunkSize(Vec<u8>),
    /// A chunked body: skipping chunk data and its trailing CRLF.
    ChunkData(u64),
    /// A chunked body: collecting trailer lines until the empty one.
    Trailer(Vec<u8>),
    /// Something we do not understand; the rest of the connection is not counted.
    Opaque,
}

/// Incremental parser of one connection's client-to-server bytes.
pub struct RequestParser {
    state: State,
}

impl RequestParser {
    pub fn new() -> Self {
        Self {
            state: State::Head(Vec::new()),
        }
    }

    /// Consumes the next bytes of the stream and returns the requests whose headers ended
    /// in them.
    pub fn feed(&mut self, mut data: &[u8]) -> Vec<Kind> {
        let mut found = Vec::new();
        while !data.is_empty() {
            match &mut self.state {
                State::Opaque => return found,
                State::Head(buf) => {
                    let start = buf.len().saturating_sub(3);
                    buf.extend_from_slice(data);
                    data = &[];
                    let Some(end) = find(&buf[start..], b"\r\n\r\n").map(|i| start + i + 4) else {
                        if buf.len() > MAX_HEAD {
                            self.state = State::Opaque;
                        }
                        continue;
                    };
                    let head = buf[..end].to_vec();
                    let rest = buf[end..].to_vec();
                    match parse_head(&head) {
                        Some((kind, body)) => {
                            found.push(kind);
                            self.state = match body {
                                Body::None => State::Head(Vec::new()),
                                Body::Length(n) => State::Body(n),
                                Body::Chunked => State::ChunkSize(Vec::new()),
                            };
                        }
                        None => {
                            self.state = State::Opaque;
                            return found;
                        }
                    }
                    // Pipelined requests: parse what followed the headers in this chunk.
                    found.extend(self.feed(&rest));
                    return found;
                }
                State::Body(n) => {
                    let take = (*n).min(data.len() as u64);
                    *n -= take;
                    data = &data[take as usize..];
                    if *n == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::ChunkSize(line) => {
                    let Some(i) = data.iter().position(|&b| b == b'\n') else {
                        line.extend_from_slice(data);
                        if line.len() > MAX_HEAD {
                            self.state = State::Opaque;
                        }
                        return found;
                    };
                    line.extend_from_slice(&data[..=i]);
                    data = &data[i + 1..];
                    let text = String::from_utf8_lossy(line);
                    let hex = text.trim().split(';').next().unwrap_or("").trim();
                    self.state = match u64::from_str_radix(hex, 16) {
                        Ok(0) => State::Trailer(Vec::new()),
                        Ok(n) => State::ChunkData(n + 2),
                        Err(_) => State::Opaque,
                    };
                }
                State::ChunkData(n) => {
                    let take = (*n).min(data.len() as u64);
                    *n -= take;
                    data = &data[take as usize..];
                    if *n == 0 {
                        self.state = State::ChunkSize(Vec::new());
                    }
                }
                State::Trailer(buf) => {
                    buf.extend_from_slice(data);
                    data = &[];
                    // Done at an empty line: right away, or after trailer headers.
                    let end = if buf.starts_with(b"\r\n") {
                        Some(2)
                    } else {
                        find(buf, b"\r\n\r\n").map(|i| i + 4)
                    };
                    if let Some(end) = end {
                        let rest = buf[end..].to_vec();
                        self.state = State::Head(Vec::new());
                        found.extend(self.feed(&rest));
                        return found;
                    }
                    if buf.len() > MAX_HEAD {
                        self.state = State::Opaque;
                    }
                }
            }
        }
        found
    }
}

enum Body {
    None,
    Length(u64),
    Chunked,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The kind of request and how its body is framed, or None if this is not HTTP/1.x.
fn parse_head(head: &[u8]) -> Option<(Kind, Body)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?;
    let target = first.next()?;
    if !first.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let mut body = Body::None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            if let Body::None = body {
                body = Body::Length(value.parse().ok()?);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            body = Body::Chunked;
        }
    }
    if let Body::Length(0) = body {
        body = Body::None;
    }
    Some((classify(method, target), body))
}

/// Path-style S3: `/BUCKET/KEY` is an object, `/BUCKET` (or `/BUCKET/`) the bucket.
fn classify(method: &str, target: &str) -> Kind {
    // absolute-form (`http://host/path`) as a forward proxy client would send it
    let target = match target.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let Some(path) = path.strip_prefix('/') else {
        return Kind::Other;
    };
    let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
    if bucket.is_empty() {
        return Kind::Other;
    }
    if !key.is_empty() {
        return match method {
            "GET" => Kind::Get,
            "HEAD" => Kind::Head,
            _ => Kind::Other,
        };
    }
    let listing = query.is_empty()
        || query.split('&').all(|kv| {
            let name = kv.split_once('=').map_or(kv, |(k, _)| k);
            LIST_PARAMS.contains(&name)
        });
    if method == "GET" && listing {
        Kind::List
    } else {
        Kind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(parts: &[&[u8]]) -> Vec<Kind> {
        let mut p = RequestParser::new();
        parts.iter().flat_map(|b| p.feed(b)).collect()
    }

    #[test]
    fn classifies_path_style_requests() {
        assert_eq!(classify("GET", "/b/k.bin"), Kind::Get);
        assert_eq!(classify("GET", "/b/a/b/c?partNumber=1"), Kind::Get);
        assert_eq!(classify("HEAD", "/b/k"), Kind::Head);
        assert_eq!(
            classify("GET", "/b?list-type=2&prefix=a%2F&delimiter=%2F"),
            Kind::List
        );
        assert_eq!(classify("GET", "/b/?list-type=2"), Kind::List);
        assert_eq!(classify("GET", "/b"), Kind::List);
        assert_eq!(classify("GET", "/b?location"), Kind::Other);
        assert_eq!(classify("HEAD", "/b"), Kind::Other);
        assert_eq!(classify("GET", "/"), Kind::Other);
        assert_eq!(classify("PUT", "/b/k"), Kind::Other);
        assert_eq!(classify("GET", "http://h:1/b/k"), Kind::Get);
    }

    #[test]
    fn counts_pipelined_requests_split_anywhere() {
        let stream = b"GET /b/k HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b/k HTTP/1.1\r\nHost: x\r\n\r\nGET /b?list-type=2 HTTP/1.1\r\n\r\n";
        for cut in 0..stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(
                feed_all(&[a, b]),
                vec![Kind::Get, Kind::Head, Kind::List],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn skips_bodies_by_length_and_chunks() {
        let stream: &[u8] = b"PUT /b/k HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789\
POST /b?delete HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nGET /\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n\
HEAD /b/k HTTP/1.1\r\n\r\n";
        for cut in 0..stream.len() {
            let (a, b) = stream.split_at(cut);
            assert_eq!(
                feed_all(&[a, b]),
                vec![Kind::Other, Kind::Other, Kind::Head],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn gives_up_on_what_is_not_http() {
        assert_eq!(
            feed_all(&[b"\x16\x03\x01 binary\r\n\r\nGET /b/k HTTP/1.1\r\n\r\n"]),
            vec![]
        );
    }
}
