//! A small HTTP/1.1 proxy between the tool and moto that records every request
//! line, so tests can count exactly which requests a run made.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

/// One request as the proxy saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub target: String,
}

impl Seen {
    /// Whether this is a ListObjectsV2 request.
    pub fn is_list(&self) -> bool {
        self.method == "GET" && self.target.contains("list-type=2")
    }
}

/// Requests whose target contains `pattern` get a canned S3 error instead of
/// reaching the server.
#[derive(Clone, Debug)]
pub struct Rule {
    pub pattern: String,
    pub status: u16,
    pub code: String,
}

/// A running proxy; it lives until the test process exits.
pub struct Proxy {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    rules: Arc<Mutex<Vec<Rule>>>,
    down: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rules = Arc::new(Mutex::new(Vec::new()));
        let down = Arc::new(AtomicBool::new(false));
        let (log, shared_rules, shared_down) =
            (Arc::clone(&seen), Arc::clone(&rules), Arc::clone(&down));
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if shared_down.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let (log, rules, down) = (
                    Arc::clone(&log),
                    Arc::clone(&shared_rules),
                    Arc::clone(&shared_down),
                );
                std::thread::spawn(move || {
                    if let Ok(upstream) = TcpStream::connect(("127.0.0.1", upstream_port)) {
                        let _ = relay(client, upstream, &log, &rules, &down);
                    }
                });
            }
        });
        Proxy {
            port,
            seen,
            rules,
            down,
        }
    }

    /// Simulates S3 being unreachable: connections are dropped, new and open ones.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Answers requests whose target contains `pattern` with an S3 error.
    pub fn fail(&self, pattern: &str, status: u16, code: &str) {
        self.rules.lock().push(Rule {
            pattern: pattern.to_string(),
            status,
            code: code.to_string(),
        });
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().clone()
    }

    pub fn clear(&self) {
        self.seen.lock().clear();
    }
}

/// Forwards requests one by one (reading each head and its Content-Length body)
/// while a second thread copies responses back untouched.
fn relay(
    client: TcpStream,
    upstream: TcpStream,
    log: &Mutex<Vec<Seen>>,
    rules: &Mutex<Vec<Rule>>,
    down: &AtomicBool,
) -> std::io::Result<()> {
    let mut to_client = client.try_clone()?;
    let mut back_from = upstream.try_clone()?;
    let mut back_to = client.try_clone()?;
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut back_from, &mut back_to);
        let _ = back_to.shutdown(Shutdown::Write);
    });
    let mut reader = BufReader::new(client);
    let mut upstream = upstream;
    loop {
        let mut head = Vec::new();
        let mut content_length = 0u64;
        let mut rule = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || down.load(Ordering::SeqCst) {
                let _ = reader.get_ref().shutdown(Shutdown::Both);
                let _ = upstream.shutdown(Shutdown::Write);
                return Ok(());
            }
            if head.is_empty() {
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or_default().to_string();
                let target = parts.next().unwrap_or_default().to_string();
                rule = rules
                    .lock()
                    .iter()
                    .find(|r| target.contains(&r.pattern))
                    .cloned();
                log.lock().push(Seen { method, target });
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                content_length = value.trim().parse().unwrap_or(0);
            }
            head.extend_from_slice(line.as_bytes());
            if line == "\r\n" {
                break;
            }
        }
        if let Some(rule) = rule {
            // HTTP/1.1 clients wait for each response, so the relay thread is idle here.
            std::io::copy(
                &mut (&mut reader).take(content_length),
                &mut std::io::sink(),
            )?;
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>injected</Message></Error>",
                rule.code
            );
            let response = format!(
                "HTTP/1.1 {} Injected\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
                rule.status,
                body.len()
            );
            to_client.write_all(response.as_bytes())?;
            continue;
        }
        upstream.write_all(&head)?;
        std::io::copy(&mut (&mut reader).take(content_length), &mut upstream)?;
    }
}
