//! Which source a mirror belongs to: `mirror.json` records the bucket, the endpoint
//! and the bucket owner; every request carries the owner when it is known; a run
//! against another endpoint or owner is refused with exit 2, before anything in the
//! mirror changes and before any request, unless `--allow-new-source` is given.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use s3mirrorfs::mount::is_mount_point;
use serde_json::{Value, json};
use support::admin::{admin_command, run_json};
use support::mount::{Mount, mount_command};
use support::proxy::Proxy;
use support::{Bucket, data, endpoint, moto_port, prefetch, s3mirrorfs, stderr};

const OWNER: &str = "123456789012";
const OTHER_OWNER: &str = "210987654321";

/// The same moto server under another name: another endpoint as far as a mirror knows.
fn localhost() -> String {
    format!("http://localhost:{}", moto_port())
}

fn mirror_json(mirror: &Path) -> Value {
    serde_json::from_slice(&fs::read(mirror.join(".s3mirrorfs/mirror.json")).unwrap()).unwrap()
}

/// Every file of the mirror, the tool's own included (temp files aside), with its
/// bytes and mtime.
fn snapshot(mirror: &Path) -> BTreeMap<PathBuf, (Vec<u8>, i64)> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![mirror.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                if !path.ends_with(".s3mirrorfs/tmp") {
                    dirs.push(path);
                }
                continue;
            }
            let rel = path.strip_prefix(mirror).unwrap().to_path_buf();
            let mtime = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
            files.insert(rel, (fs::read(&path).unwrap(), mtime));
        }
    }
    files
}

/// The one error line the tool printed.
fn error_line(output: &Output) -> String {
    let text = stderr(output);
    assert!(!text.contains("panicked"), "{text}");
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "exactly one error line in {text:?}");
    errors[0].to_string()
}

fn assert_names_all(text: &str, names: &[&str]) {
    for name in names {
        assert!(text.contains(name), "{name:?} is not named in {text:?}");
    }
}

/// The owners the requests seen by `proxy` expected.
fn owners(proxy: &Proxy) -> BTreeSet<Option<String>> {
    proxy
        .requests()
        .into_iter()
        .map(|r| r.expected_owner)
        .collect()
}

fn status(mirror: &Path) -> (Value, String) {
    let (output, report) = run_json(s3mirrorfs().args(["status", "--mirror-dir"]).arg(mirror));
    assert!(output.status.success(), "{}", stderr(&output));
    let text = s3mirrorfs()
        .args(["status", "--mirror-dir"])
        .arg(mirror)
        .output()
        .unwrap();
    (report, String::from_utf8(text.stdout).unwrap())
}

#[test]
fn another_endpoint_is_refused_until_the_user_says_the_bucket_moved() {
    let bucket = Bucket::create("id-endpoint");
    bucket.put("a", b"one");
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("m");
    let first = endpoint();
    let (output, _) = prefetch(&bucket.name, &mirror, &first, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        mirror_json(&mirror),
        json!({"bucket": bucket.name, "endpoint": first, "owner": null})
    );
    // Another spelling of the same URL is the same endpoint.
    let spelled = format!("HTTP://127.0.0.1:{}/", moto_port());
    let (output, _) = prefetch(&bucket.name, &mirror, &spelled, &[]);
    assert!(output.status.success(), "{}", stderr(&output));

    // The same server under another name is refused: nothing is downloaded or changed.
    bucket.put("b", b"two");
    let before = snapshot(&mirror);
    let (output, summary) = prefetch(&bucket.name, &mirror, &localhost(), &[]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let named = [
        format!("{:?}", first),
        format!("{:?}", localhost()),
        "--allow-new-source".to_string(),
    ];
    let named: Vec<&str> = named.iter().map(String::as_str).collect();
    assert_names_all(&error_line(&output), &named);
    assert_names_all(summary["error"].as_str().expect("error in --json"), &named);
    assert_eq!(summary["downloaded"], 0);
    assert_eq!(snapshot(&mirror), before, "the mirror is untouched");

    // Allowed: the run goes on, and the mirror now belongs to the new endpoint.
    let allow = ["--allow-new-source"];
    let (output, summary) = prefetch(&bucket.name, &mirror, &localhost(), &allow);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        (&summary["downloaded"], &summary["up_to_date"]),
        (&json!(1), &json!(1))
    );
    assert_eq!(mirror_json(&mirror)["endpoint"], localhost());
    let (output, _) = prefetch(&bucket.name, &mirror, &first, &[]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "the old endpoint is now the other one"
    );
}

#[test]
fn the_bucket_owner_goes_with_every_request_and_another_is_refused() {
    let bucket = Bucket::create("id-owner");
    bucket.put("k1", &data(1, 2000));
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("m");
    // The proxy answers as S3 does for a bucket that OWNER owns.
    let proxy = Proxy::start(moto_port());
    proxy.set_bucket_owner(OWNER);
    let s3 = proxy.endpoint();
    let owner = |account: &str| Some(account.to_string());
    let (output, summary) = prefetch(
        &bucket.name,
        &mirror,
        &s3,
        &["--expected-bucket-owner", OWNER],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary["downloaded"], 1);
    assert_eq!(mirror_json(&mirror)["owner"], OWNER);
    assert_eq!(
        owners(&proxy),
        BTreeSet::from([owner(OWNER)]),
        "list and get"
    );

    // A later run that names no owner sends the recorded one.
    bucket.put("k2", &data(2, 2000));
    proxy.clear();
    let (output, summary) = prefetch(&bucket.name, &mirror, &s3, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary["downloaded"], 1);
    assert_eq!(owners(&proxy), BTreeSet::from([owner(OWNER)]));

    // Another owner is refused before any request.
    bucket.put("k3", &data(3, 2000));
    proxy.clear();
    let before = snapshot(&mirror);
    let other = ["--expected-bucket-owner", OTHER_OWNER];
    let (output, summary) = prefetch(&bucket.name, &mirror, &s3, &other);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let named = [OWNER, OTHER_OWNER, "bucket owner", "--allow-new-source"];
    assert_names_all(&error_line(&output), &named);
    assert_names_all(summary["error"].as_str().unwrap(), &named);
    assert!(proxy.requests().is_empty(), "{:?}", proxy.requests());
    assert_eq!(snapshot(&mirror), before);

    // Allowed, the requests expect the new owner, and S3 refuses them.
    let (output, _) = prefetch(
        &bucket.name,
        &mirror,
        &s3,
        &[other[0], other[1], "--allow-new-source"],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let expected = format!("the bucket's owner is not the expected account {OTHER_OWNER}");
    assert_names_all(&error_line(&output), &["access denied", &expected]);
    assert_eq!(owners(&proxy), BTreeSet::from([owner(OTHER_OWNER)]));
    assert_eq!(
        mirror_json(&mirror)["owner"],
        OWNER,
        "S3 did not confirm the new owner"
    );
}

#[test]
fn an_older_mirror_json_is_completed_by_the_next_run_and_status_shows_the_source() {
    let bucket = Bucket::create("id-old");
    bucket.put("k", b"v");
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("m");
    let (output, _) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    // What an older version wrote.
    let old = json!({"bucket": bucket.name}).to_string();
    fs::write(mirror.join(".s3mirrorfs/mirror.json"), old).unwrap();
    let (report, text) = status(&mirror);
    assert_eq!(
        (&report["endpoint"], &report["owner"]),
        (&Value::Null, &Value::Null)
    );
    assert!(
        text.contains("source:         endpoint not recorded yet, bucket owner not known"),
        "{text}"
    );

    // The next run adopts what is missing, from wherever it comes: here the
    // endpoint comes from the environment.
    let output = s3mirrorfs()
        .args(["prefetch", &bucket.name, "--mirror-dir"])
        .arg(&mirror)
        .args(["--force-path-style", "--expected-bucket-owner", OWNER])
        .env("AWS_ENDPOINT_URL_S3", localhost())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        mirror_json(&mirror),
        json!({"bucket": bucket.name, "endpoint": localhost(), "owner": OWNER})
    );
    let (report, text) = status(&mirror);
    assert_eq!(
        (&report["endpoint"], &report["owner"]),
        (&json!(localhost()), &json!(OWNER))
    );
    let line = format!("source:         {}, bucket owner {OWNER}", localhost());
    assert!(text.contains(&line), "{text}");
}

#[test]
fn a_bad_account_id_is_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("m");
    for command in ["prefetch", "verify", "restore"] {
        let output = s3mirrorfs()
            .args([
                command,
                "bucket",
                "--expected-bucket-owner",
                "abc",
                "--mirror-dir",
            ])
            .arg(&mirror)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{command}");
        let line = error_line(&output);
        assert_names_all(&line, &["--expected-bucket-owner", "'abc'", "12 digits"]);
        assert_eq!(stderr(&output).lines().count(), 1, "{command}: one line");
    }
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let output = mount_command(
        "bucket",
        &mnt,
        &mirror,
        &endpoint(),
        &["-o", "expected_bucket_owner=abc"],
    )
    .output()
    .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_names_all(
        &error_line(&output),
        &["expected_bucket_owner=abc", "12 digits"],
    );
    assert!(!mirror.exists(), "nothing was created");
}

#[test]
fn a_mount_of_a_mirror_from_another_endpoint_is_refused_with_exit_2() {
    let bucket = Bucket::create("id-mount");
    bucket.put("a", b"a");
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("m");
    let (output, _) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let proxy = Proxy::start(moto_port());
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    // Daemonized (the parent hears it from the daemon) and in the foreground.
    for extra in [&[][..], &["--foreground"][..]] {
        let output = mount_command(&bucket.name, &mnt, &mirror, &proxy.endpoint(), extra)
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(2),
            "{extra:?}: {}",
            stderr(&output)
        );
        let named = [
            format!("{:?}", endpoint()),
            format!("{:?}", proxy.endpoint()),
            "--allow-new-source".to_string(),
        ];
        let named: Vec<&str> = named.iter().map(String::as_str).collect();
        assert_names_all(&error_line(&output), &named);
        assert!(!is_mount_point(&fs::canonicalize(&mnt).unwrap()));
    }
    assert!(proxy.requests().is_empty(), "refused before any request");

    // Allowed as an /etc/fstab option: mounted, and the mirror records the new endpoint.
    let mount = Mount::start(
        &bucket.name,
        &mnt,
        &mirror,
        &proxy.endpoint(),
        &["-o", "allow_new_source"],
    );
    assert_eq!(fs::read(mount.path("a")).unwrap(), b"a");
    drop(mount);
    assert_eq!(mirror_json(&mirror)["endpoint"], proxy.endpoint());
}

#[test]
fn uploads_and_deletes_carry_the_expected_owner_too() {
    let bucket = Bucket::create("id-archive");
    bucket.put("p/app-20200101T000000Z.tar.zst", b"old");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("app");
    fs::create_dir(&src).unwrap();
    // Random bytes do not compress: a multipart upload of two parts.
    fs::write(src.join("big.bin"), data(5, 9 << 20)).unwrap();
    let proxy = Proxy::start(moto_port());
    proxy.set_bucket_owner(OWNER);
    let target = format!("{}/p", bucket.name);
    let mut command = admin_command(&["archive"], &proxy.endpoint());
    command
        .arg(&src)
        .arg(&target)
        .args(["--keep", "1", "--expected-bucket-owner", OWNER]);
    let (output, report) = run_json(&mut command);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(report["parts"].as_u64().unwrap() >= 2, "{report}");
    let methods: BTreeSet<String> = proxy.requests().into_iter().map(|r| r.method).collect();
    assert_eq!(
        methods,
        BTreeSet::from(["DELETE", "GET", "POST", "PUT"].map(String::from)),
        "list, create and complete, parts, retention"
    );
    assert_eq!(owners(&proxy), BTreeSet::from([Some(OWNER.to_string())]));
}
