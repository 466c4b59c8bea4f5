//! The admin commands (`status`, `verify`, `restore`, `archive`) against a real
//! S3-compatible server (moto on 127.0.0.1).

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use s3mirrorfs::mirror::Mirror;
use s3mirrorfs::mirror::inventory::MirrorView;
use serde_json::Value;
use support::admin::{admin_command, rot, run_json, without_dac_override};
use support::proxy::Proxy;
use support::{Bucket, data, endpoint, free_port, moto_port, prefetch, s3mirrorfs, stderr};

const MIB: usize = 1 << 20;

/// The error line the tool printed (log lines aside); there must be exactly one.
fn error_line(output: &Output) -> String {
    let text = stderr(output);
    assert!(!text.contains("panicked"), "{text}");
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "exactly one error line in {text:?}");
    errors[0].to_string()
}

/// A bucket with the awkward kinds of objects a backup must keep: nested keys, an
/// empty object, a `dir/` marker, keys that are renamed in the mirror, and a
/// multipart object.
fn awkward_bucket(tag: &str) -> (Bucket, BTreeMap<String, Vec<u8>>) {
    let bucket = Bucket::create(tag);
    let mut objects = BTreeMap::new();
    for (i, key) in [
        "a.txt",
        "docs/b.txt",
        "docs/deep/c.bin",
        "x/../escape",
        "//twice",
        "empty",
    ]
    .iter()
    .enumerate()
    {
        let body = if *key == "empty" {
            Vec::new()
        } else {
            data(i as u64, 1000 + i * 333)
        };
        bucket.put(key, &body);
        objects.insert(key.to_string(), body);
    }
    bucket.put("markers/only/", b"");
    objects.insert("markers/only/".into(), Vec::new());
    let big = data(99, 11 * MIB + 17);
    bucket.put_multipart("big/multipart.bin", &big, 5 * MIB);
    objects.insert("big/multipart.bin".into(), big);
    (bucket, objects)
}

fn mirror_of(bucket: &Bucket, dir: &Path) -> PathBuf {
    let mirror = dir.join("mirror");
    let (output, summary) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary["failed"], 0);
    mirror
}

fn status(mirror: &Path) -> (Output, Value) {
    run_json(s3mirrorfs().args(["status", "--mirror-dir"]).arg(mirror))
}

fn verify(bucket: &str, mirror: &Path, extra: &[&str]) -> (Output, Value) {
    let mut command = admin_command(&["verify", bucket], &endpoint());
    command.arg("--mirror-dir").arg(mirror).args(extra);
    run_json(&mut command)
}

/// The (kind, key) of every problem verify reported, sorted.
fn problems(report: &Value) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_string(),
                p["key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    found.sort();
    found
}

fn path_of(mirror: &Path, key: &str) -> PathBuf {
    let (entries, _) = MirrorView::open(mirror).unwrap().entries();
    let entry = entries
        .into_iter()
        .find(|e| e.record.key.as_str() == key)
        .unwrap_or_else(|| panic!("no copy of {key:?}"));
    mirror.join(entry.path)
}

// ---- status ----

#[test]
fn status_reports_the_mirror_without_any_s3_request() {
    let (bucket, objects) = awkward_bucket("status");
    let dir = tempfile::tempdir().unwrap();
    let mirror = mirror_of(&bucket, dir.path());
    // Every request would go through the proxy, and there must be none.
    let proxy = Proxy::start(moto_port());
    let (output, report) = run_json(
        s3mirrorfs()
            .env("AWS_ENDPOINT_URL", proxy.endpoint())
            .args(["status", "--mirror-dir"])
            .arg(&mirror),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(proxy.requests().is_empty(), "{:?}", proxy.requests());
    assert_eq!(report["objects"], objects.len() as u64);
    let bytes: usize = objects.values().map(Vec::len).sum();
    assert_eq!(report["bytes"], bytes as u64);
    assert_eq!(report["renamed"], 2);
    assert_eq!(report["markers"], 1);
    assert_eq!(report["locked_by"], Value::Null);
    assert_eq!(report["bucket"], bucket.name.as_str());
    let last = &report["last_prefetch"];
    assert_eq!(last["outcome"], "success");
    assert_eq!(last["listed"], objects.len() as u64);
    assert_eq!(last["downloaded"], objects.len() as u64);
    assert_eq!(last["failed"], 0);
    assert!(last["time"].as_str().unwrap().ends_with('Z'));

    let text = s3mirrorfs()
        .args(["status", "--mirror-dir"])
        .arg(&mirror)
        .output()
        .unwrap();
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("last prefetch:  success"), "{text}");
    assert!(text.contains("lock:           free"), "{text}");
}

#[test]
fn status_names_the_lock_holder_and_a_failed_prefetch() {
    let bucket = Bucket::create("status-lock");
    bucket.put("k", b"v");
    let dir = tempfile::tempdir().unwrap();
    let mirror = mirror_of(&bucket, dir.path());
    // A prefetch that cannot list is recorded as failed.
    let proxy = Proxy::start(moto_port());
    proxy.fail("list-type=2", 403, "AccessDenied");
    let allow = ["--allow-new-source"];
    let (output, _) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &allow);
    assert_eq!(output.status.code(), Some(2));
    let held = Mirror::open(&mirror, &bucket.name)
        .unwrap()
        .lock("pid 777 (s3mirrorfs prefetch in a test)")
        .unwrap();
    let (output, report) = status(&mirror);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        report["locked_by"],
        "pid 777 (s3mirrorfs prefetch in a test)"
    );
    assert_eq!(report["last_prefetch"]["outcome"], "failed");
    assert!(
        report["last_prefetch"]["error"]
            .as_str()
            .unwrap()
            .contains("access denied"),
        "{report}"
    );
    assert_eq!(report["objects"], 1);
    // status did not take the lock: a prefetch still finds it busy.
    let (output, _) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert!(error_line(&output).contains("pid 777"));
    drop(held);
    assert_eq!(status(&mirror).1["locked_by"], Value::Null);
}

#[test]
fn status_of_no_mirror_is_an_error_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let output = s3mirrorfs()
        .args(["status", "--mirror-dir"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(error_line(&output).contains("no mirror at"));
    assert!(!missing.exists());
    let output = s3mirrorfs()
        .args(["status", "--mirror-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(error_line(&output).contains("not an s3mirrorfs mirror"));
    assert!(!dir.path().join(".s3mirrorfs").exists());
    let output = s3mirrorfs().args(["status", "--bogus"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(error_line(&output).contains("--bogus"));
}

// ---- verify ----

#[test]
fn verify_finds_bit_rot_by_true_key_and_prefetch_repairs_it() {
    let (bucket, objects) = awkward_bucket("verify-rot");
    let dir = tempfile::tempdir().unwrap();
    let mirror = mirror_of(&bucket, dir.path());
    let proxy = Proxy::start(moto_port());
    let mut clean = admin_command(&["verify", &bucket.name], &proxy.endpoint());
    clean.arg("--mirror-dir").arg(&mirror);
    let (output, report) = run_json(&mut clean);
    assert!(output.status.success(), "{}\n{report}", stderr(&output));
    assert!(
        proxy.requests().is_empty(),
        "verify without --remote asked S3"
    );
    assert_eq!(report["whole"], true);
    assert_eq!(report["checked"], objects.len() as u64);
    assert_eq!(report["ok"], objects.len() as u64);

    // Bit rot: same size, same mtime, same record.
    rot(&path_of(&mirror, "docs/b.txt"), 10);
    rot(&path_of(&mirror, "x/../escape"), 0);
    rot(&path_of(&mirror, "big/multipart.bin"), (7 * MIB) as u64);
    let (output, report) = verify(&bucket.name, &mirror, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(report["whole"], false);
    assert_eq!(
        problems(&report),
        vec![
            ("corrupt".into(), "big/multipart.bin".into()),
            ("corrupt".into(), "docs/b.txt".into()),
            ("corrupt".into(), "x/../escape".into()),
        ]
    );
    let text = admin_command(&["verify", &bucket.name], &endpoint())
        .arg("--mirror-dir")
        .arg(&mirror)
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("corrupt    x/../escape"), "{text}");
    assert!(text.contains("s3mirrorfs prefetch"), "{text}");

    // The corrupt copies are fetched again by the next prefetch.
    let (output, summary) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary["downloaded"], 3);
    let (output, report) = verify(&bucket.name, &mirror, &[]);
    assert!(output.status.success(), "{report}");
    assert_eq!(
        fs::read(path_of(&mirror, "docs/b.txt")).unwrap(),
        objects["docs/b.txt"]
    );
}

#[test]
fn verify_finds_copies_deleted_or_replaced_by_hand_without_s3() {
    let (bucket, _) = awkward_bucket("verify-local");
    let dir = tempfile::tempdir().unwrap();
    let mirror = mirror_of(&bucket, dir.path());
    fs::remove_file(path_of(&mirror, "a.txt")).unwrap();
    // Replaced by a copy without its record (cp does not keep xattrs).
    let b = path_of(&mirror, "//twice");
    fs::remove_file(&b).unwrap();
    fs::write(&b, b"someone else's bytes").unwrap();
    fs::remove_dir(mirror.join("markers/only")).unwrap();
    let (output, report) = run_json(
        s3mirrorfs()
            .env(
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", free_port()),
            )
            .args(["verify", &bucket.name, "--mirror-dir"])
            .arg(&mirror),
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(
        problems(&report),
        vec![
            ("missing".into(), "//twice".into()),
            ("missing".into(), "a.txt".into()),
            ("missing".into(), "markers/only/".into()),
        ]
    );
    // A prefix limits what is checked.
    let (output, report) = verify(&format!("{}/docs", bucket.name), &mirror, &[]);
    assert!(output.status.success(), "{report}");
    assert_eq!(report["checked"], 2);
}

#[test]
fn verify_remote_compares_with_the_listing() {
    let (bucket, _) = awkward_bucket("verify-remote");
    let dir = tempfile::tempdir().unwrap();
    let mirror = mirror_of(&bucket, dir.path());
    let (output, report) = verify(&bucket.name, &mirror, &["--remote"]);
    assert!(output.status.success(), "{}\n{report}", stderr(&output));
    assert_eq!(report["remote"], true);

    bucket.delete("docs/b.txt");
    let (output, report) = verify(&bucket.name, &mirror, &["--remote"]);
    assert!(
        output.status.success(),
        "an extra copy is kept on purpose: {report}"
    );
    assert_eq!(
        problems(&report),
        vec![("extra".into(), "docs/b.txt".into())]
    );

    bucket.put("x/../escape", b"a new version");
    bucket.put("new/object", b"not mirrored yet");
    let (output, report) = verify(&bucket.name, &mirror, &["--remote"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        problems(&report),
        vec![
            ("changed".into(), "x/../escape".into()),
            ("extra".into(), "docs/b.txt".into()),
            ("missing".into(), "new/object".into()),
        ]
    );
}

#[test]
fn verify_refuses_bad_input() {
    let bucket = Bucket::create("verify-bad");
    bucket.put("k", b"v");
    let dir = tempfile::tempdir().unwrap();
    let mirror = mirror_of(&bucket, dir.path());
    let run = |args: &[&str], mirror: &Path| {
        let mut command = admin_command(args, &endpoint());
        command.arg("--mirror-dir").arg(mirror);
        command.output().unwrap()
    };
    let output = run(&["verify", "another-bucket"], &mirror);
    assert_eq!(output.status.code(), Some(2));
    assert!(error_line(&output).contains("belongs to bucket"));
    let missing = dir.path().join("none");
    let output = run(&["verify", &bucket.name], &missing);
    assert_eq!(output.status.code(), Some(2));
    assert!(error_line(&output).contains("no mirror at"));
    assert!(!missing.exists());
    let output = run(&["verify", &bucket.name, "--remote", "--bogus"], &mirror);
    assert_eq!(output.status.code(), Some(2));
    assert!(error_line(&output).contains("--bogus"));
    // A mirror whose bucket is gone from S3.
    let gone = dir.path().join("gone");
    Mirror::open(&gone, "no-such-bucket-verify")
        .unwrap()
        .claim()
        .unwrap();
    let output = run(&["verify", "no-such-bucket-verify", "--remote"], &gone);
    assert_eq!(output.status.code(), Some(2));
    assert!(error_line(&output).contains("does not exist"));
    let output = admin_command(&["verify", &bucket.name, "--remote"], &endpoint())
        .arg("--mirror-dir")
        .arg(&mirror)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(error_line(&output).contains("no AWS credentials"));
}

// ---- restore ----

fn restore(target: &str, mirror: &Path, extra: &[&str]) -> (Output, Value) {
    let mut command = admin_command(&["restore", target], &endpoint());
    command.arg("--mirror-dir").arg(mirror).args(extra);
    run_json(&mut command)
}

fn uploaded_keys(report: &Value) -> Vec<String> {
    let mut keys: Vec<String> = report["uploaded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys
}

#[test]
fn restore_puts_every_object_back_byte_for_byte() {
    let (source, objects) = awkward_bucket("restore-src");
    let dir = tempfile::tempdir().unwrap();
    let mirror = mirror_of(&source, dir.path());
    let dest = Bucket::create("restore-dst");
    let expected: Vec<String> = objects.keys().cloned().collect();

    let (output, report) = restore(&dest.name, &mirror, &["--dry-run"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(uploaded_keys(&report), expected);
    assert!(dest.keys().is_empty(), "a dry run uploads nothing");

    let (output, report) = restore(&dest.name, &mirror, &[]);
    assert!(output.status.success(), "{}\n{report}", stderr(&output));
    assert_eq!(uploaded_keys(&report), expected);
    assert_eq!(dest.keys(), expected);
    for (key, body) in &objects {
        assert!(dest.get(key) == *body, "restored bytes of {key:?}");
    }
    let big = report["uploaded"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == "big/multipart.bin")
        .unwrap();
    assert_eq!(big["parts"], 2, "a large object goes up in parts");
    assert!(dest.open_uploads().is_empty());

    // Everything is identical now, the multipart object too.
    let (output, report) = restore(&dest.name, &mirror, &[]);
    assert!(output.status.success());
    assert!(uploaded_keys(&report).is_empty(), "{report}");
    assert_eq!(report["skipped"].as_array().unwrap().len(), expected.len());
}

/// Keys whose copy moves between places as the bucket changes (a marker that
/// gains bytes, bytes that become a marker, a file that becomes a prefix and
/// stops being one): each keeps one copy, and restore puts back what S3 holds
/// now, never an older version found at a key's former place.
#[test]
fn keys_that_change_places_keep_one_copy_and_restore_their_current_bytes() {
    let source = Bucket::create("moving-src");
    source.put("gains/", b"");
    source.put("loses/", &data(1, 300));
    source.put("photo", &data(2, 400));
    let dir = tempfile::tempdir().unwrap();
    let mirror = mirror_of(&source, dir.path());
    source.put("gains/", &data(3, 500));
    source.put("loses/", b"");
    source.put("photo/1.jpg", &data(4, 100));
    mirror_of(&source, dir.path());
    source.delete("photo/1.jpg");
    source.put("photo", &data(5, 450));
    let (output, summary) = prefetch(&source.name, &mirror, &endpoint(), &["--prune"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary["pruned"], 1, "{summary}");

    let (entries, errors) = MirrorView::open(&mirror).unwrap().entries();
    assert!(errors.is_empty());
    let mut keys: Vec<&str> = entries.iter().map(|e| e.record.key.as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["gains/", "loses/", "photo"], "one copy per key");

    let dest = Bucket::create("moving-dst");
    let (output, report) = restore(&dest.name, &mirror, &[]);
    assert!(output.status.success(), "{}\n{report}", stderr(&output));
    assert!(dest.get("gains/") == data(3, 500));
    assert!(dest.get("loses/").is_empty());
    assert!(dest.get("photo") == data(5, 450));
}

#[test]
fn restore_skips_what_another_uploader_already_put_identically() {
    let source = Bucket::create("restore-skip-src");
    let big = data(5, 17 * MIB + 3);
    source.put_multipart("big", &big, 8 * MIB);
    source.put("small", b"small");
    source.put("docs/x", b"x");
    let dir = tempfile::tempdir().unwrap();
    let mirror = mirror_of(&source, dir.path());
    let dest = Bucket::create("restore-skip-dst");
    // Same bytes, other part size: another ETag, still identical.
    dest.put_multipart("big", &big, 16 * MIB);
    dest.put("small", b"small");
    dest.put("docs/x", b"changed");
    let (output, report) = restore(&dest.name, &mirror, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(uploaded_keys(&report), vec!["docs/x".to_string()]);
    assert_eq!(dest.get("docs/x"), b"x");
    // A prefix limits the restore to the keys under it.
    dest.delete("small");
    dest.delete("docs/x");
    let (output, report) = restore(&format!("{}/docs", dest.name), &mirror, &[]);
    assert!(output.status.success());
    assert_eq!(uploaded_keys(&report), vec!["docs/x".to_string()]);
    assert_eq!(dest.keys(), vec!["big".to_string(), "docs/x".to_string()]);
}

#[test]
fn restore_never_uploads_a_corrupt_copy() {
    let source = Bucket::create("restore-rot-src");
    source.put("good", b"good bytes");
    source.put("rotten", &data(1, 5000));
    source.put_multipart("rotten-big", &data(2, 10 * MIB), 5 * MIB);
    let dir = tempfile::tempdir().unwrap();
    let mirror = mirror_of(&source, dir.path());
    rot(&mirror.join("rotten"), 100);
    rot(&mirror.join("rotten-big"), (9 * MIB) as u64);
    let dest = Bucket::create("restore-rot-dst");
    let (output, report) = restore(&dest.name, &mirror, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(uploaded_keys(&report), vec!["good".to_string()]);
    let failed: Vec<&str> = report["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert_eq!(failed, vec!["rotten", "rotten-big"]);
    assert!(
        report["failed"][0]["error"]
            .as_str()
            .unwrap()
            .contains("corrupt")
    );
    assert_eq!(dest.keys(), vec!["good".to_string()]);
    assert!(
        dest.open_uploads().is_empty(),
        "the failed multipart upload was aborted"
    );
}

#[test]
fn restore_refuses_bad_input() {
    let source = Bucket::create("restore-bad");
    source.put("k", b"v");
    let dir = tempfile::tempdir().unwrap();
    let mirror = mirror_of(&source, dir.path());
    let run = |target: &str, mirror: &Path| {
        let mut command = admin_command(&["restore", target], &endpoint());
        command.arg("--mirror-dir").arg(mirror);
        command
    };
    let output = run("no-such-bucket-restore", &mirror).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(error_line(&output).contains("\"no-such-bucket-restore\" does not exist"));
    let missing = dir.path().join("none");
    let output = run(&source.name, &missing).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(error_line(&output).contains("no mirror at"));
    assert!(!missing.exists());
    let output = run(&source.name, &mirror)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(error_line(&output).contains("no AWS credentials"));
    let output = run("bad bucket", &mirror).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(error_line(&output).contains("not a valid bucket name"));
    let output = run(&source.name, &mirror)
        .args(["--concurrency", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(error_line(&output).contains("--concurrency"));
}

// ---- archive ----

fn archive(source: &Path, target: &str, extra: &[&str]) -> (Output, Value) {
    let mut command = admin_command(&["archive"], &endpoint());
    command.arg(source).arg(target).args(extra);
    run_json(&mut command)
}

/// Unpacks a tar.zst into `into`.
fn unpack(bytes: &[u8], into: &Path) {
    let decoder = zstd::Decoder::new(bytes).unwrap();
    let mut archive = tar::Archive::new(decoder);
    archive.set_preserve_permissions(true);
    archive.unpack(into).unwrap();
}

/// Every path under `root` with what it is: file bytes, symlink target, or a directory.
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let meta = fs::symlink_metadata(&path).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("link -> {}", fs::read_link(&path).unwrap().display())
            } else if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_string()
            } else {
                let mut bytes = Vec::new();
                fs::File::open(&path)
                    .unwrap()
                    .read_to_end(&mut bytes)
                    .unwrap();
                use md5::Digest;
                format!("file {:x}", md5::Md5::digest(&bytes))
            };
            out.insert(rel, what);
        }
    }
    out
}

fn archive_keys(bucket: &Bucket, prefix: &str) -> Vec<String> {
    bucket
        .keys()
        .into_iter()
        .filter(|k| k.starts_with(prefix) && k.ends_with(".tar.zst"))
        .collect()
}

#[test]
fn archive_streams_a_directory_that_unpacks_identically() {
    let bucket = Bucket::create("archive");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("appdata");
    fs::create_dir_all(src.join("nested/deeper")).unwrap();
    fs::create_dir_all(src.join("empty")).unwrap();
    fs::write(src.join("top.txt"), b"top").unwrap();
    fs::write(src.join("nested/a.bin"), data(1, 3000)).unwrap();
    // Random bytes do not compress: the archive needs more than one 8 MiB part.
    fs::write(src.join("nested/deeper/big.bin"), data(2, 9 * MIB)).unwrap();
    fs::write(src.join("nested/deeper/zero"), b"").unwrap();
    std::os::unix::fs::symlink("../top.txt", src.join("nested/link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", src.join("dangling")).unwrap();

    let (output, report) = archive(&src, &format!("{}/backups/app", bucket.name), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let key = report["key"].as_str().unwrap();
    let stamp = key
        .strip_prefix("backups/app/appdata-")
        .and_then(|k| k.strip_suffix(".tar.zst"))
        .unwrap_or_else(|| panic!("archive key {key}"));
    assert!(s3mirrorfs::utc::is_compact(stamp), "{key}");
    assert!(report["parts"].as_u64().unwrap() >= 2, "{report}");
    assert_eq!(report["files"], 4);
    assert_eq!(report["symlinks"], 2);
    assert_eq!(bucket.sse(key).as_deref(), Some("AES256"));
    assert!(bucket.open_uploads().is_empty());

    let out = tempfile::tempdir().unwrap();
    unpack(&bucket.get(key), out.path());
    assert_eq!(tree(&out.path().join("appdata")), tree(&src));
    assert!(out.path().join("appdata/empty").is_dir());
    assert_eq!(
        fs::read_link(out.path().join("appdata/nested/link")).unwrap(),
        Path::new("../top.txt")
    );

    // A small directory is one PUT, with the encryption asked for.
    let small = dir.path().join("small");
    fs::create_dir(&small).unwrap();
    fs::write(small.join("f"), b"f").unwrap();
    let (output, report) = archive(&small, &bucket.name, &["--sse", "aws:kms"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(report["parts"], 1);
    let key = report["key"].as_str().unwrap();
    assert!(key.starts_with("small-"), "{key}");
    assert_eq!(bucket.sse(key).as_deref(), Some("aws:kms"));
    let out = tempfile::tempdir().unwrap();
    unpack(&bucket.get(key), out.path());
    assert_eq!(fs::read(out.path().join("small/f")).unwrap(), b"f");
}

#[test]
fn archive_retention_keeps_the_newest_and_touches_nothing_else() {
    let bucket = Bucket::create("archive-keep");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("app");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"data").unwrap();
    let others = [
        "p/notes.txt",
        "p/app-extra-20200101T000000Z.tar.zst",
        "p/other-20200101T000000Z.tar.zst",
        "p/sub/app-20200101T000000Z.tar.zst",
        "q/app-20200101T000000Z.tar.zst",
    ];
    for key in others {
        bucket.put(key, b"not ours");
    }
    // An old archive of the same directory, as an earlier run left it.
    bucket.put("p/app-20200101T000000Z.tar.zst", b"old");
    let target = format!("{}/p", bucket.name);
    let mut made = Vec::new();
    for _ in 0..3 {
        let (output, report) = archive(&src, &target, &["--keep", "2"]);
        assert!(output.status.success(), "{}", stderr(&output));
        made.push(report["key"].as_str().unwrap().to_string());
    }
    made.sort();
    made.dedup();
    assert_eq!(made.len(), 3, "each run makes its own archive: {made:?}");
    let mut expected: Vec<String> = others.iter().map(|k| k.to_string()).collect();
    expected.extend(made[1..].iter().cloned());
    expected.sort();
    assert_eq!(bucket.keys(), expected);
}

#[test]
fn an_unreadable_file_aborts_the_archive_and_leaves_no_object() {
    let bucket = Bucket::create("archive-unreadable");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("app");
    fs::create_dir(&src).unwrap();
    // Enough data before the unreadable file that a multipart upload has begun.
    fs::write(src.join("a-first.bin"), data(3, 9 * MIB)).unwrap();
    fs::write(src.join("b-secret"), b"secret").unwrap();
    fs::set_permissions(src.join("b-secret"), fs::Permissions::from_mode(0o000)).unwrap();
    let mut command = admin_command(&["archive"], &endpoint());
    command.arg(&src).arg(format!("{}/p", bucket.name));
    let output = without_dac_override(&command).output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let line = error_line(&output);
    assert!(
        line.contains("b-secret") && line.contains("ermission denied"),
        "{line}"
    );
    assert!(archive_keys(&bucket, "").is_empty());
    assert!(
        bucket.open_uploads().is_empty(),
        "the multipart upload was aborted"
    );
}

#[test]
fn archive_refuses_bad_input() {
    let bucket = Bucket::create("archive-bad");
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        admin_command(&["archive"], &endpoint())
            .args(args)
            .output()
            .unwrap()
    };
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    let src_arg = src.to_str().unwrap();
    let target = format!("{}/p", bucket.name);

    let output = run(&[dir.path().join("missing").to_str().unwrap(), &target]);
    assert_eq!(output.status.code(), Some(2));
    assert!(error_line(&output).contains("missing"));
    let output = run(&[src_arg, &target, "--sse", "DES"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(error_line(&output).contains("DES"));
    let output = run(&[src_arg, &target, "--keep", "many"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(error_line(&output).contains("--keep"));
    let output = run(&[src_arg, &target, "--sse-kms-key-id", "k"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(error_line(&output).contains("--sse aws:kms"));
    let output = run(&[src_arg, "no-such-bucket-archive/p"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(error_line(&output).contains("does not exist"));
    let output = admin_command(&["archive", src_arg, &target], &endpoint())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(error_line(&output).contains("no AWS credentials"));
    assert!(bucket.keys().is_empty());
}

#[test]
fn verify_checks_copies_recorded_before_content_hashes_by_etag_or_size() {
    use s3mirrorfs::mirror::{RECORD_XATTR, Record, read_record};
    let bucket = Bucket::create("verify-old");
    bucket.put("single", &data(1, 4000));
    bucket.put_multipart("multi", &data(2, 6 * MIB), 5 * MIB);
    let dir = tempfile::tempdir().unwrap();
    let mirror = mirror_of(&bucket, dir.path());
    for key in ["single", "multi"] {
        let path = mirror.join(key);
        let old = Record {
            md5: None,
            ..read_record(&path).unwrap()
        };
        xattr::set(&path, RECORD_XATTR, &old.encode()).unwrap();
    }
    let (output, report) = verify(&bucket.name, &mirror, &[]);
    assert!(
        output.status.success(),
        "unchecked is not a failure: {report}"
    );
    assert_eq!(
        problems(&report),
        vec![("unchecked".into(), "multi".into())]
    );
    assert!(
        report["problems"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("no recorded hash")
    );
    rot(&mirror.join("single"), 5);
    rot(&mirror.join("multi"), 5);
    let (output, report) = verify(&bucket.name, &mirror, &[]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        problems(&report),
        vec![
            ("corrupt".into(), "single".into()),
            ("unchecked".into(), "multi".into())
        ]
    );
}

#[test]
fn archive_with_put_object_only_works_when_nothing_is_to_be_deleted() {
    let bucket = Bucket::create("archive-put-only");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("app");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"data").unwrap();
    bucket.put("p/app-20200101T000000Z.tar.zst", b"old");
    // A role allowed PutObject on the prefix and nothing else.
    let proxy = Proxy::start(moto_port());
    proxy.fail("list-type=2", 403, "AccessDenied");
    let target = format!("{}/p", bucket.name);
    let mut command = admin_command(&["archive"], &proxy.endpoint());
    command.arg(&src).arg(&target).args(["--keep", "0"]);
    let (output, report) = run_json(&mut command);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(report["deleted"].as_array().unwrap().len(), 0);
    // With a retention count the archive is made, and the run says the clean-up failed.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let mut command = admin_command(&["archive"], &proxy.endpoint());
    command.arg(&src).arg(&target).args(["--keep", "1"]);
    let (output, report) = run_json(&mut command);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        report["retention_error"]
            .as_str()
            .unwrap()
            .contains("access denied"),
        "{report}"
    );
    assert_eq!(archive_keys(&bucket, "p/").len(), 3, "nothing was deleted");
}

#[test]
fn a_marker_directory_from_before_marker_records_still_counts() {
    let bucket = Bucket::create("verify-marker");
    bucket.put("photos/", b"");
    bucket.put("photos/a.jpg", b"a");
    let dir = tempfile::tempdir().unwrap();
    let mirror = mirror_of(&bucket, dir.path());
    assert_eq!(status(&mirror).1["markers"], 1);
    // Older versions made the directory without a record.
    let stripped = std::process::Command::new("setfattr")
        .args(["-x", "user.s3mirrorfs"])
        .arg(mirror.join("photos"))
        .status()
        .unwrap();
    assert!(stripped.success());
    assert_eq!(status(&mirror).1["markers"], 0);
    for extra in [&[][..], &["--remote"][..]] {
        let (output, report) = verify(&bucket.name, &mirror, extra);
        assert!(output.status.success(), "{extra:?}: {report}");
    }
    // The next prefetch records it, so restore can put it back.
    let (output, _) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert!(output.status.success());
    assert_eq!(status(&mirror).1["markers"], 1);
    let dest = Bucket::create("verify-marker-dst");
    let (output, _) = restore(&dest.name, &mirror, &[]);
    assert!(output.status.success());
    assert_eq!(
        dest.keys(),
        vec!["photos/".to_string(), "photos/a.jpg".to_string()]
    );
}

#[test]
fn a_failed_part_upload_aborts_the_archive_and_names_the_s3_error() {
    let bucket = Bucket::create("archive-part-fails");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("app");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("big.bin"), data(4, 17 * MIB)).unwrap();
    let proxy = Proxy::start(moto_port());
    proxy.fail("partNumber=2", 403, "AccessDenied");
    let output = admin_command(&["archive"], &proxy.endpoint())
        .arg(&src)
        .arg(format!("{}/p", bucket.name))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let line = error_line(&output);
    assert!(line.contains("access denied: UploadPart"), "{line}");
    assert!(archive_keys(&bucket, "").is_empty());
    assert!(
        bucket.open_uploads().is_empty(),
        "the multipart upload was aborted"
    );
}

#[test]
fn status_shows_a_partial_prefetch_and_its_failed_keys() {
    let bucket = Bucket::create("status-partial");
    bucket.put("ok", b"fine");
    bucket.put("secret/one", b"denied");
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("mirror");
    let proxy = Proxy::start(moto_port());
    proxy.fail("secret/one", 403, "AccessDenied");
    let (output, _) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &[]);
    assert_eq!(output.status.code(), Some(1));
    let (output, report) = status(&mirror);
    assert!(output.status.success());
    let last = &report["last_prefetch"];
    assert_eq!(last["outcome"], "partial");
    assert_eq!(last["failed"], 1);
    assert_eq!(last["failures"][0]["key"], "secret/one");
    assert_eq!(report["objects"], 1);
    let text = s3mirrorfs()
        .args(["status", "--mirror-dir"])
        .arg(&mirror)
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("failed:       secret/one"), "{text}");
}

#[test]
fn restore_stops_when_s3_goes_away_and_lists_what_it_did_not_attempt() {
    let source = Bucket::create("restore-away-src");
    for i in 0..6 {
        source.put(&format!("k{i}"), b"v");
    }
    let dir = tempfile::tempdir().unwrap();
    let mirror = mirror_of(&source, dir.path());
    let dest = Bucket::create("restore-away-dst");
    let proxy = Proxy::start(moto_port());
    proxy.fail("x-id=PutObject", 503, "ServiceUnavailable");
    let mut command = admin_command(&["restore", &dest.name], &proxy.endpoint());
    command
        .arg("--mirror-dir")
        .arg(&mirror)
        .args(["--concurrency", "1", "--max-attempts", "1"]);
    let (output, report) = run_json(&mut command);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(error_line(&output).contains("restore stopped"));
    let failed = report["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 6, "{report}");
    let not_attempted = failed
        .iter()
        .filter(|f| f["error"].as_str().unwrap().starts_with("not attempted"))
        .count();
    assert_eq!(not_attempted, 5, "{report}");
    let puts = proxy
        .requests()
        .iter()
        .filter(|r| r.method == "PUT")
        .count();
    assert_eq!(puts, 1, "no upload after S3 went away");
    assert!(dest.keys().is_empty());
}

#[test]
fn verify_says_when_it_cannot_mark_a_corrupt_copy() {
    let bucket = Bucket::create("verify-readonly");
    bucket.put("k", &data(1, 2000));
    let dir = tempfile::tempdir().unwrap();
    let mirror = mirror_of(&bucket, dir.path());
    let path = mirror.join("k");
    rot(&path, 3);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o440)).unwrap();
    let mut command = admin_command(&["verify", &bucket.name], &endpoint());
    command.arg("--mirror-dir").arg(&mirror).arg("--json");
    let output = without_dac_override(&command).output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let detail = report["problems"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("could not be marked"), "{detail}");
    // Still unmarked: the record is what prefetch saw, and the bytes are untouched.
    assert!(!s3mirrorfs::mirror::read_record(&path).unwrap().corrupt);
}
