//! Test fixtures: a real S3-compatible server (moto) on 127.0.0.1, a request-logging,
//! fault-injecting proxy in front of it, bucket helpers, and a runner for the s3mirrorfs binary.
#![allow(dead_code)]

pub mod admin;
pub mod faults;
pub mod mount;
pub mod proxy;
pub mod queue;
pub mod tmpfs;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

pub const ACCESS_KEY: &str = "testing";
pub const SECRET_KEY: &str = "testing";
pub const REGION: &str = "us-east-1";

static MOTO: OnceLock<u16> = OnceLock::new();

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn moto_server_path() -> PathBuf {
    if let Ok(path) = std::env::var("MOTO_SERVER") {
        return PathBuf::from(path);
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server");
    assert!(
        path.exists(),
        "moto_server not found at {}: run scripts/setup (or set MOTO_SERVER)",
        path.display()
    );
    path
}

/// The port of the shared moto server, started on first use and killed when the
/// test process exits.
pub fn moto_port() -> u16 {
    *MOTO.get_or_init(|| {
        let port = free_port();
        let server = moto_server_path();
        // The server is spawned from a thread that lives as long as the process, so
        // PDEATHSIG fires only when the test process dies.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut command = Command::new(server);
            command
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let mut child = command.spawn().expect("start moto_server");
            tx.send(()).unwrap();
            let _ = child.wait();
        });
        rx.recv().unwrap();
        wait_for_http(port, Duration::from_secs(60));
        port
    })
}

fn wait_for_http(port: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.write_all(b"GET /moto-api/ HTTP/1.0\r\n\r\n");
            let mut buf = [0u8; 12];
            if stream.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("moto_server did not answer on port {port}");
}

/// The moto endpoint URL.
pub fn endpoint() -> String {
    format!("http://127.0.0.1:{}", moto_port())
}

/// A bucket name no other test uses.
pub fn unique_bucket(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// An S3 client straight to moto, for setting buckets up.
pub fn client() -> Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint())
        .force_path_style(true)
        .credentials_provider(Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "tests",
        ))
        .build();
    Client::from_conf(config)
}

/// A bucket on moto with helpers to fill it.
pub struct Bucket {
    pub name: String,
    pub client: Client,
    rt: tokio::runtime::Runtime,
}

impl Bucket {
    pub fn create(tag: &str) -> Bucket {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let name = unique_bucket(tag);
        let client = rt.block_on(async { client() });
        rt.block_on(client.create_bucket().bucket(&name).send())
            .expect("create bucket");
        Bucket { name, client, rt }
    }

    pub fn put(&self, key: &str, data: &[u8]) -> String {
        let out = self
            .rt
            .block_on(
                self.client
                    .put_object()
                    .bucket(&self.name)
                    .key(key)
                    .body(ByteStream::from(data.to_vec()))
                    .send(),
            )
            .unwrap_or_else(|e| {
                panic!("put {key:?}: {}", aws_sdk_s3::error::DisplayErrorContext(e))
            });
        out.e_tag().unwrap().to_string()
    }

    /// Puts many objects concurrently.
    pub fn put_many(&self, objects: &[(String, Vec<u8>)]) {
        self.rt.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for chunk in objects.chunks(objects.len().div_ceil(16).max(1)) {
                let chunk = chunk.to_vec();
                let client = self.client.clone();
                let bucket = self.name.clone();
                set.spawn(async move {
                    for (key, data) in chunk {
                        client
                            .put_object()
                            .bucket(&bucket)
                            .key(&key)
                            .body(ByteStream::from(data))
                            .send()
                            .await
                            .unwrap_or_else(|e| panic!("put {key:?}: {e}"));
                    }
                });
            }
            while let Some(r) = set.join_next().await {
                r.unwrap();
            }
        });
    }

    /// Uploads `data` in parts of `part` bytes (the ETag becomes `md5-N`).
    pub fn put_multipart(&self, key: &str, data: &[u8], part: usize) -> String {
        self.rt.block_on(async {
            let upload = self
                .client
                .create_multipart_upload()
                .bucket(&self.name)
                .key(key)
                .send()
                .await
                .unwrap();
            let id = upload.upload_id().unwrap();
            let mut parts = Vec::new();
            for (i, chunk) in data.chunks(part).enumerate() {
                let n = i as i32 + 1;
                let out = self
                    .client
                    .upload_part()
                    .bucket(&self.name)
                    .key(key)
                    .upload_id(id)
                    .part_number(n)
                    .body(ByteStream::from(chunk.to_vec()))
                    .send()
                    .await
                    .unwrap();
                parts.push(
                    CompletedPart::builder()
                        .part_number(n)
                        .e_tag(out.e_tag().unwrap())
                        .build(),
                );
            }
            let done = self
                .client
                .complete_multipart_upload()
                .bucket(&self.name)
                .key(key)
                .upload_id(id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .unwrap();
            done.e_tag().unwrap().to_string()
        })
    }

    /// Puts an object of storage class `class` (moto stores it so, and answers a GET
    /// of a GLACIER or DEEP_ARCHIVE one with 403 InvalidObjectState, as S3 does).
    pub fn put_with_class(&self, key: &str, data: &[u8], class: &str) -> String {
        let out = self
            .rt
            .block_on(
                self.client
                    .put_object()
                    .bucket(&self.name)
                    .key(key)
                    .storage_class(class.into())
                    .body(ByteStream::from(data.to_vec()))
                    .send(),
            )
            .unwrap_or_else(|e| {
                panic!("put {key:?}: {}", aws_sdk_s3::error::DisplayErrorContext(e))
            });
        out.e_tag().unwrap().to_string()
    }

    /// Moves an object to another storage class by copying it onto itself, as
    /// a lifecycle transition would (the bytes, and so a single-part ETag, stay).
    pub fn set_class(&self, key: &str, class: &str) -> String {
        let out = self
            .rt
            .block_on(
                self.client
                    .copy_object()
                    .bucket(&self.name)
                    .key(key)
                    .copy_source(format!("{}/{key}", self.name))
                    .storage_class(class.into())
                    .send(),
            )
            .unwrap_or_else(|e| {
                panic!(
                    "copy {key:?}: {}",
                    aws_sdk_s3::error::DisplayErrorContext(e)
                )
            });
        out.copy_object_result()
            .unwrap()
            .e_tag()
            .unwrap()
            .to_string()
    }

    /// The object's `x-amz-restore` header and storage class, as a HEAD shows them.
    pub fn restore_header(&self, key: &str) -> (Option<String>, Option<String>) {
        let out = self
            .rt
            .block_on(self.client.head_object().bucket(&self.name).key(key).send())
            .unwrap();
        (
            out.restore().map(str::to_string),
            out.storage_class().map(|c| c.as_str().to_string()),
        )
    }

    /// The error code S3 answers a GET of `key` with, or `None` if the GET succeeds.
    pub fn get_error_code(&self, key: &str) -> Option<String> {
        use aws_sdk_s3::error::ProvideErrorMetadata;
        self.rt
            .block_on(self.client.get_object().bucket(&self.name).key(key).send())
            .err()
            .map(|e| e.code().unwrap_or("?").to_string())
    }

    pub fn delete(&self, key: &str) {
        self.rt
            .block_on(
                self.client
                    .delete_object()
                    .bucket(&self.name)
                    .key(key)
                    .send(),
            )
            .unwrap();
    }

    /// Every key with its ETag, size and LastModified (seconds), as S3 lists them.
    pub fn list(&self) -> Vec<(String, String, u64, i64)> {
        self.rt.block_on(async {
            let mut out = Vec::new();
            let mut pages = self
                .client
                .list_objects_v2()
                .bucket(&self.name)
                .encoding_type(aws_sdk_s3::types::EncodingType::Url)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                for o in page.unwrap().contents() {
                    out.push((
                        s3mirrorfs::store::decode_url_key(o.key().unwrap()).unwrap(),
                        o.e_tag().unwrap().to_string(),
                        o.size().unwrap() as u64,
                        o.last_modified().unwrap().secs(),
                    ));
                }
            }
            out
        })
    }
}

/// Deterministic pseudo-random bytes.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A `Command` for the s3mirrorfs binary with test credentials and no instance metadata.
pub fn s3mirrorfs() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_s3mirrorfs"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_REGION", REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env(
            "RUST_LOG",
            std::env::var("TEST_LOG").unwrap_or_else(|_| "s3mirrorfs=info,warn".into()),
        );
    command
}

/// `s3mirrorfs prefetch BUCKET --mirror-dir DIR --endpoint-url URL --force-path-style --json ARGS...`
pub fn prefetch_command(target: &str, mirror: &Path, endpoint: &str, args: &[&str]) -> Command {
    let mut command = s3mirrorfs();
    command
        .arg("prefetch")
        .arg(target)
        .arg("--mirror-dir")
        .arg(mirror)
        .args(["--endpoint-url", endpoint, "--force-path-style", "--json"])
        .args(args);
    command
}

/// Runs a prefetch and parses its JSON summary.
pub fn prefetch(
    target: &str,
    mirror: &Path,
    endpoint: &str,
    args: &[&str],
) -> (Output, serde_json::Value) {
    let output = prefetch_command(target, mirror, endpoint, args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "stdout must be one JSON line: {stdout:?}\nstderr: {}",
        stderr(&output)
    );
    let summary = serde_json::from_str(lines[0]).unwrap();
    (output, summary)
}

/// Temp files left in the mirror's state directory.
pub fn temp_files(mirror: &Path) -> usize {
    std::fs::read_dir(mirror.join(".s3mirrorfs/tmp"))
        .map(|d| d.count())
        .unwrap_or(0)
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
