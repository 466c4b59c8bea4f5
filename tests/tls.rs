//! S3 over HTTPS, as every AWS endpoint is: the certificate is checked against
//! the system's roots (`SSL_CERT_FILE` names them here), and a server no root
//! vouches for is refused with an error that says so, before any byte is kept.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, moto_server_path, prefetch, prefetch_command, stderr};

/// A certificate authority and a certificate it signed for 127.0.0.1, made with
/// the openssl command.
fn certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl command");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            stderr(&output)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
}

/// A moto server of its own, serving HTTPS with the certificate for 127.0.0.1.
struct HttpsMoto {
    child: Child,
    url: String,
}

impl HttpsMoto {
    fn start(dir: &Path) -> HttpsMoto {
        let port = free_port();
        let child = Command::new(moto_server_path())
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .arg("-c")
            .arg(dir.join("server.pem"))
            .arg("-k")
            .arg(dir.join("server.key"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = HttpsMoto {
            child,
            url: format!("https://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not listen on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    /// Creates `bucket` holding `key`, over HTTPS trusting `ca` (moto checks no
    /// signature, so plain requests do; a body typed as a form would be parsed
    /// as one).
    fn bucket_with(&self, ca: &Path, bucket: &str, key: &str, body: &[u8]) {
        let script = "import ssl, sys, urllib.request\n\
            ctx = ssl.create_default_context(cafile=sys.argv[1])\n\
            for url, body in ((sys.argv[2], b''), (sys.argv[3], sys.stdin.buffer.read())):\n\
            \x20   headers = {'Content-Type': 'application/octet-stream'}\n\
            \x20   request = urllib.request.Request(url, data=body, method='PUT', headers=headers)\n\
            \x20   urllib.request.urlopen(request, context=ctx, timeout=60)\n";
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(ca)
            .arg(format!("{}/{bucket}", self.url))
            .arg(format!("{}/{bucket}/{key}", self.url))
            .stdin(Stdio::piped())
            .spawn()
            .expect("python3");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(body).unwrap();
        assert!(child.wait().unwrap().success(), "bucket set up over HTTPS");
    }
}

impl Drop for HttpsMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_bucket_comes_over_https_from_a_server_the_roots_vouch_for() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let moto = HttpsMoto::start(dir.path());
    let ca = dir.path().join("ca.pem");
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    moto.bucket_with(&ca, "secure", "photos/a.jpg", &body);

    // Trusted: the CA is the only root.
    let mirror = dir.path().join("mirror");
    let output = prefetch_command("secure", &mirror, &moto.url, &[])
        .env("SSL_CERT_FILE", &ca)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(std::fs::read(mirror.join("photos/a.jpg")).unwrap() == body);

    // Not trusted: the system's own roots do not know the test CA.
    let other = dir.path().join("other");
    let (output, summary) = prefetch("secure", &other, &moto.url, &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let text = stderr(&output);
    let line = text.lines().find(|l| l.starts_with("error: ")).unwrap();
    assert!(line.contains("certificate"), "{line}");
    assert!(line.contains(&moto.url), "{line}");
    assert!(!text.contains("panicked"), "{text}");
    assert_eq!(summary["downloaded"], 0);
    assert!(!other.join("photos").exists(), "nothing kept");
}
