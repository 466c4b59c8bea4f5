//! A real FUSE mount of the s3mirrorfs binary for tests, unmounted on drop, on
//! its own or reading S3 through the fault-injecting proxy.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use s3mirrorfs::mount::is_mount_point;

use super::faults::Rule;
use super::proxy::Proxy;
use super::{moto_port, s3mirrorfs};

/// A running `s3mirrorfs mount --foreground`.
pub struct Mount {
    pub dir: PathBuf,
    pub mirror: PathBuf,
    child: Option<Child>,
}

/// `s3mirrorfs mount TARGET MNT --mirror-dir MIRROR --endpoint-url URL --force-path-style ARGS...`
pub fn mount_command(
    target: &str,
    dir: &Path,
    mirror: &Path,
    endpoint: &str,
    args: &[&str],
) -> Command {
    let mut command = s3mirrorfs();
    command
        .arg("mount")
        .arg(target)
        .arg(dir)
        .arg("--mirror-dir")
        .arg(mirror)
        .args(["--endpoint-url", endpoint, "--force-path-style"])
        .args(args);
    command
}

/// Waits until something is mounted at `dir`.
pub fn wait_mounted(dir: &Path, mounted: bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while is_mount_point(dir) != mounted {
        assert!(
            Instant::now() < deadline,
            "{} never became {}",
            dir.display(),
            if mounted { "mounted" } else { "unmounted" }
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Mount {
    /// Mounts in the foreground (as systemd runs it) and waits for the mount.
    pub fn start(target: &str, dir: &Path, mirror: &Path, endpoint: &str, args: &[&str]) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        let dir = std::fs::canonicalize(dir).unwrap();
        let child = mount_command(target, &dir, mirror, endpoint, args)
            .arg("--foreground")
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        wait_mounted(&dir, true);
        Mount {
            dir,
            mirror: mirror.to_path_buf(),
            child: Some(child),
        }
    }

    /// `start`, with the daemon's log written to `log` instead of the test's stderr
    /// and `env` added to its environment.
    pub fn start_logged(
        target: &str,
        dir: &Path,
        mirror: &Path,
        endpoint: &str,
        args: &[&str],
        log: &Path,
        env: &[(&str, &str)],
    ) -> Mount {
        std::fs::create_dir_all(dir).unwrap();
        let dir = std::fs::canonicalize(dir).unwrap();
        let child = mount_command(target, &dir, mirror, endpoint, args)
            .arg("--foreground")
            .envs(env.iter().copied())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        wait_mounted(&dir, true);
        Mount {
            dir,
            mirror: mirror.to_path_buf(),
            child: Some(child),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits up to `limit` for the daemon to exit on its own.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "the daemon did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` to the daemon and waits for it to exit.
    pub fn signal(&mut self, signal: i32) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        child.wait().unwrap()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
        if is_mount_point(&self.dir) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.dir)
                .status();
        }
    }
}

/// A mount that reads S3 through a fault-injecting proxy in front of moto, with
/// its mirror (`m`) and mount point (`mnt`) in a temp directory of its own.
pub struct ProxiedMount {
    pub mount: Mount,
    pub proxy: Proxy,
    pub mirror: PathBuf,
    /// Last, so it is removed only after the unmount.
    pub dir: tempfile::TempDir,
}

impl ProxiedMount {
    /// Starts the proxy with `rules` in place, so they meet the mount's very first
    /// requests, then mounts `target` through it with `args`.
    pub fn start(target: &str, rules: Vec<Rule>, args: &[&str]) -> ProxiedMount {
        let proxy = Proxy::start(moto_port());
        for rule in rules {
            proxy.add(rule);
        }
        let dir = tempfile::tempdir().unwrap();
        let mirror = dir.path().join("m");
        let mount = Mount::start(
            target,
            &dir.path().join("mnt"),
            &mirror,
            &proxy.endpoint(),
            args,
        );
        ProxiedMount {
            mount,
            proxy,
            mirror,
            dir,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mount.path(rel)
    }
}

/// Runs a shell command line (through the kernel, as a user would) and returns its output.
pub fn sh(script: &str) -> Output {
    Command::new("sh").args(["-c", script]).output().unwrap()
}

/// Runs a shell command line that must succeed, returning its stdout.
pub fn sh_ok(script: &str) -> String {
    let out = sh(script);
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reads a file to its end or its first error, keeping what arrived before.
pub fn read_until_error(path: &Path) -> (Vec<u8>, Option<std::io::Error>) {
    use std::io::Read;
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return (out, None),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return (out, Some(e)),
        }
    }
}
