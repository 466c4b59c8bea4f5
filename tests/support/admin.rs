//! Test support for the admin commands: reading objects back, running a command that
//! prints one JSON object, running the tool without root's file access, and
//! `status` refusing a mirror.

use std::path::Path;
use std::process::{Command, Output};

use super::{Bucket, s3mirrorfs, stderr};

impl Bucket {
    /// The object's bytes.
    pub fn get(&self, key: &str) -> Vec<u8> {
        self.rt.block_on(async {
            let out = self
                .client
                .get_object()
                .bucket(&self.name)
                .key(key)
                .send()
                .await
                .unwrap_or_else(|e| {
                    panic!("get {key:?}: {}", aws_sdk_s3::error::DisplayErrorContext(e))
                });
            out.body.collect().await.unwrap().into_bytes().to_vec()
        })
    }

    /// The server-side encryption S3 reports for the object.
    pub fn sse(&self, key: &str) -> Option<String> {
        self.rt.block_on(async {
            let out = self
                .client
                .head_object()
                .bucket(&self.name)
                .key(key)
                .send()
                .await
                .unwrap();
            out.server_side_encryption().map(|s| s.as_str().to_string())
        })
    }

    /// Keys of multipart uploads started and neither completed nor aborted.
    pub fn open_uploads(&self) -> Vec<String> {
        self.rt.block_on(async {
            let out = self
                .client
                .list_multipart_uploads()
                .bucket(&self.name)
                .send()
                .await
                .unwrap();
            out.uploads()
                .iter()
                .filter_map(|u| u.key().map(str::to_string))
                .collect()
        })
    }

    /// Every key, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.list().into_iter().map(|(k, ..)| k).collect();
        keys.sort();
        keys
    }
}

/// `s3mirrorfs ARGS... --endpoint-url URL --force-path-style` for commands that talk to S3.
pub fn admin_command(args: &[&str], endpoint: &str) -> Command {
    let mut command = s3mirrorfs();
    command
        .args(args)
        .args(["--endpoint-url", endpoint, "--force-path-style"]);
    command
}

/// Runs `command` with `--json` and parses the one JSON object it prints.
pub fn run_json(command: &mut Command) -> (Output, serde_json::Value) {
    let output = command.arg("--json").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "stdout must be one JSON line: {stdout:?}\nstderr: {}",
        stderr(&output)
    );
    let value = serde_json::from_str(lines[0]).unwrap();
    (output, value)
}

/// Asserts that `s3mirrorfs status` refuses `mirror` (exit code 2) and says
/// `why` on stderr.
pub fn assert_status_refuses(mirror: &Path, why: &str) {
    let output = s3mirrorfs()
        .args(["status", "--mirror-dir"])
        .arg(mirror)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains(why), "{}", stderr(&output));
}

/// The same command, run without the capabilities that let root read any file, so
/// file modes are obeyed even when the tests run as root.
pub fn without_dac_override(command: &Command) -> Command {
    let mut wrapped = Command::new("setpriv");
    wrapped
        .args([
            "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search",
        ])
        .arg(command.get_program())
        .args(command.get_args())
        .env_clear();
    for (name, value) in command.get_envs() {
        if let Some(value) = value {
            wrapped.env(name, value);
        }
    }
    wrapped
}

/// Flips one byte of a file in place, keeping its size, mtime and record: bit rot.
pub fn rot(path: &Path, offset: u64) {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let meta = std::fs::metadata(path).unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, offset).unwrap();
    file.write_all_at(&[byte[0] ^ 0x55], offset).unwrap();
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_secs(meta.mtime() as u64);
    file.set_modified(mtime).unwrap();
}
