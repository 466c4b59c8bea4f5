//! Root over a user's mirror, against moto on 127.0.0.1: symlinks planted in the
//! mirror (its root, a subdirectory, its state directory) never send a write
//! outside it; writers refuse a mirror of another user while readers may look;
//! the mount started as root gives root up for the mirror's user once mounted.

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::admin::{assert_status_refuses, run_json};
use support::mount::{Mount, mount_command, sh_ok, wait_mounted};
use support::{Bucket, data, endpoint, prefetch, s3mirrorfs, stderr};

/// The uid and gid of `nobody`, the unprivileged user these tests run as.
const NOBODY: u32 = 65534;

/// Every file and directory under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            found.push(path.strip_prefix(dir).unwrap().to_path_buf());
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                stack.push(path);
            }
        }
    }
    found.sort();
    found
}

/// A temp directory any user can enter (tempdirs are 0700), holding an empty
/// directory `outside` that nothing may write into.
fn scratch() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("passwd"), b"root:x:0:0\n").unwrap();
    (dir, outside)
}

fn assert_untouched(outside: &Path) {
    assert_eq!(
        tree(outside),
        vec![PathBuf::from("passwd")],
        "nothing lands outside the mirror"
    );
    assert_eq!(fs::read(outside.join("passwd")).unwrap(), b"root:x:0:0\n");
}

fn chown_tree(path: &Path, uid: u32) {
    sh_ok(&format!("chown -R {uid}:{uid} '{}'", path.display()));
}

#[test]
fn a_mirror_root_that_is_a_symlink_is_refused() {
    let bucket = Bucket::create("priv-root");
    bucket.put("etc/passwd", b"owned\n");
    let (dir, outside) = scratch();
    let mirror = dir.path().join("mirror");
    symlink(&outside, &mirror).unwrap();
    let (output, summary) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let error = summary["error"].as_str().unwrap();
    assert!(error.contains("symlink"), "{error}");
    assert_untouched(&outside);
    // A reader refuses it as well: it reads only a real mirror directory.
    assert_status_refuses(&mirror, "symlink");
    assert_untouched(&outside);
}

#[test]
fn a_subdirectory_swapped_for_a_symlink_is_never_followed() {
    let bucket = Bucket::create("priv-subdir");
    bucket.put("keep.txt", b"first\n");
    let (dir, outside) = scratch();
    let mirror = dir.path().join("mirror");
    let (output, _) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    // The owner plants a symlink where a prefix's directory goes, then keys arrive under it.
    symlink(&outside, mirror.join("photos")).unwrap();
    bucket.put("photos/a.jpg", &data(1, 5000));
    bucket.put("photos/deep/b.jpg", &data(2, 7000));
    bucket.put("other.txt", b"fine\n");
    let (output, summary) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let failures = summary["failures"].as_array().unwrap();
    let mut failed: Vec<&str> = failures
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    failed.sort();
    assert_eq!(failed, ["photos/a.jpg", "photos/deep/b.jpg"], "{summary}");
    for failure in failures {
        let error = failure["error"].as_str().unwrap();
        assert!(error.contains("symlink"), "the failure says why: {error}");
    }
    assert_eq!(fs::read(mirror.join("other.txt")).unwrap(), b"fine\n");
    assert!(
        fs::symlink_metadata(mirror.join("photos"))
            .unwrap()
            .is_symlink()
    );
    assert_untouched(&outside);
}

#[test]
fn a_state_directory_swapped_for_a_symlink_is_refused() {
    let bucket = Bucket::create("priv-state");
    bucket.put("a.txt", b"a\n");
    let (dir, outside) = scratch();
    let mirror = dir.path().join("mirror");
    let (output, _) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    // The real state moves aside; a symlink to the outside takes its name.
    fs::rename(mirror.join(".s3mirrorfs"), dir.path().join("state-aside")).unwrap();
    symlink(&outside, mirror.join(".s3mirrorfs")).unwrap();
    bucket.put("b.txt", b"b\n");
    let (output, summary) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        summary["error"].as_str().unwrap().contains("symlink"),
        "{summary}"
    );
    assert!(!mirror.join("b.txt").exists(), "the run did not go on");
    assert_status_refuses(&mirror, "symlink");
    assert_untouched(&outside);
}

#[test]
fn root_reads_another_users_mirror_but_never_writes_it() {
    let bucket = Bucket::create("priv-owner");
    bucket.put("a.txt", b"a\n");
    let (dir, _outside) = scratch();
    let mirror = dir.path().join("mirror");
    let (output, _) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    chown_tree(&mirror, NOBODY);
    let before = tree(&mirror);
    // `sudo s3mirrorfs status` still works...
    let mut status = s3mirrorfs();
    status.args(["status", "--mirror-dir"]).arg(&mirror);
    let (output, report): (_, Value) = run_json(&mut status);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(report["objects"], 1, "{report}");
    // ...but a writer run as root is refused before it touches anything.
    bucket.put("b.txt", b"b\n");
    let (output, summary) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let error = summary["error"].as_str().unwrap();
    assert!(
        error.contains("owned by user nobody (uid 65534)"),
        "{error}"
    );
    assert!(error.contains("not by user root (uid 0)"), "{error}");
    assert_eq!(tree(&mirror), before, "nothing was written");
    for path in before {
        let meta = fs::symlink_metadata(mirror.join(&path)).unwrap();
        assert_eq!(meta.uid(), NOBODY, "{} is still the user's", path.display());
    }
}

/// The Uid or Gid line of a process's status: real, effective, saved, filesystem.
fn ids(pid: u32, field: &str) -> Vec<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap();
    line.split_whitespace()
        .skip(1)
        .map(|n| n.parse().unwrap())
        .collect()
}

/// Waits until the daemon has given root up (it does right after mounting).
fn wait_for_ids(pid: u32, uid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while ids(pid, "Uid") != [uid; 4] {
        assert!(Instant::now() < deadline, "uids {:?}", ids(pid, "Uid"));
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_mount_gives_root_up_for_the_mirrors_user() {
    let bucket = Bucket::create("priv-mount");
    let image = data(7, 300_000);
    bucket.put("photos/cat.jpg", &image);
    let (dir, _outside) = scratch();
    let mirror = dir.path().join("mirror");
    fs::create_dir(&mirror).unwrap();
    chown_tree(&mirror, NOBODY);
    let mut mount = Mount::start(
        &bucket.name,
        &dir.path().join("mnt"),
        &mirror,
        &endpoint(),
        &["--setuid", "nobody", "--allow-other"],
    );
    let pid = mount.pid();
    wait_for_ids(pid, NOBODY);
    assert_eq!(ids(pid, "Gid"), [NOBODY; 4]);
    let groups = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let groups = groups.lines().find(|l| l.starts_with("Groups:")).unwrap();
    assert!(
        groups
            .split_whitespace()
            .skip(1)
            .all(|g| g == NOBODY.to_string()),
        "{groups}"
    );
    // Reading through the mount works, and the bytes land in the mirror as the user's.
    let read = fs::read(mount.path("photos/cat.jpg")).unwrap();
    assert!(read == image, "the bytes read through the mount");
    let copy = mirror.join("photos/cat.jpg");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !copy.exists() {
        assert!(Instant::now() < deadline, "the copy never landed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(fs::read(&copy).unwrap() == image);
    for path in tree(&mirror) {
        let meta = fs::symlink_metadata(mirror.join(&path)).unwrap();
        assert_eq!(
            meta.uid(),
            NOBODY,
            "{} belongs to the mirror's user",
            path.display()
        );
    }
    // SIGTERM ends it cleanly, and its watchdog (still root) unmounts.
    let status = mount.signal(libc::SIGTERM);
    assert_eq!(status.code(), Some(0));
    wait_mounted(&mount.dir, false);
}

#[test]
fn the_mount_runs_as_the_mirrors_owner_unless_told_otherwise() {
    let bucket = Bucket::create("priv-default");
    bucket.put("a.txt", b"a\n");
    let (dir, _outside) = scratch();
    let mirror = dir.path().join("mirror");
    fs::create_dir(&mirror).unwrap();
    chown_tree(&mirror, NOBODY);
    let mut mount = Mount::start(
        &bucket.name,
        &dir.path().join("mnt"),
        &mirror,
        &endpoint(),
        &[],
    );
    wait_for_ids(mount.pid(), NOBODY);
    assert_eq!(fs::read(mount.path("a.txt")).unwrap(), b"a\n");
    assert_eq!(mount.signal(libc::SIGTERM).code(), Some(0));
    wait_mounted(&mount.dir, false);
    drop(mount);
    // A user other than the mirror's owner is refused before anything is mounted.
    let mnt = dir.path().join("mnt2");
    fs::create_dir(&mnt).unwrap();
    let output = mount_command(
        &bucket.name,
        &mnt,
        &mirror,
        &endpoint(),
        &["--setuid", "root"],
    )
    .arg("--foreground")
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("owned by user nobody"),
        "{}",
        stderr(&output)
    );
}
