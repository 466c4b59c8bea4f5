//! Bad input gets a clear one-line error and a non-zero exit, never a panic, and
//! touches nothing in the mirror.

mod support;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use s3mirrorfs::mirror::Mirror;
use support::proxy::Proxy;
use support::{
    Bucket, endpoint, free_port, moto_port, prefetch, prefetch_command, s3mirrorfs, stderr,
};

/// The error line the tool printed (log lines aside).
fn error_line(output: &std::process::Output) -> String {
    let text = stderr(output);
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "exactly one error line in {text:?}");
    assert!(!text.contains("panicked"), "{text}");
    errors[0].to_string()
}

#[test]
fn an_unknown_flag_is_one_line_and_exit_2() {
    let output = s3mirrorfs()
        .args(["prefetch", "bucket", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(error_line(&output).contains("--no-such-flag"));
    assert_eq!(stderr(&output).lines().count(), 1);
}

#[test]
fn a_bad_concurrency_is_refused() {
    let output = s3mirrorfs()
        .args(["prefetch", "bucket", "--concurrency", "0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(error_line(&output).contains("--concurrency"));
}

#[test]
fn a_refused_endpoint_fails_fast_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let (output, summary) = prefetch("bucket", &dir.path().join("m"), &url, &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(started.elapsed() < Duration::from_secs(60));
    let line = error_line(&output);
    assert!(
        line.contains("cannot reach") && line.contains(&url),
        "{line}"
    );
    assert!(summary["error"].as_str().unwrap().contains("cannot reach"));
    assert_eq!(summary["listed"], 0);
}

#[test]
fn a_silent_endpoint_times_out_within_a_minute() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // Accept connections and never answer.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (output, _) = prefetch("bucket", &dir.path().join("m"), &url, &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        error_line(&output).contains("timed out"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_missing_bucket_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (output, _) = prefetch(
        "no-such-bucket-here",
        &dir.path().join("m"),
        &endpoint(),
        &[],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(error_line(&output).contains("\"no-such-bucket-here\" does not exist"));
}

#[test]
fn missing_credentials_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let output = prefetch_command("bucket", &dir.path().join("m"), &endpoint(), &[])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        error_line(&output).contains("no AWS credentials"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn an_unusable_mirror_directory_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let (output, _) = prefetch("bucket", &file.join("m"), &endpoint(), &[]);
    assert_eq!(output.status.code(), Some(2));
    let line = error_line(&output);
    assert!(
        line.contains("cannot be created or written") && line.contains("a-file/m"),
        "{line}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

#[test]
fn a_second_run_on_a_locked_mirror_names_the_holder() {
    let bucket = Bucket::create("locked");
    bucket.put("k", b"v");
    let dir = tempfile::tempdir().unwrap();
    let mirror = Mirror::open(&dir.path().join("m"), &bucket.name).unwrap();
    let lock = mirror.lock("pid 4242 (a test holder)").unwrap();
    let (output, summary) = prefetch(&bucket.name, mirror.root(), &endpoint(), &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(error_line(&output).contains("in use by pid 4242 (a test holder)"));
    assert_eq!(summary["downloaded"], 0);
    assert!(!mirror.root().join("k").exists());
    drop(lock);
    let (output, summary) = prefetch(&bucket.name, mirror.root(), &endpoint(), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary["downloaded"], 1);
}

#[test]
fn a_mirror_of_another_bucket_is_refused() {
    let one = Bucket::create("one");
    let two = Bucket::create("two");
    one.put("k", b"1");
    two.put("k", b"2");
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("m");
    let (output, _) = prefetch(&one.name, &mirror, &endpoint(), &[]);
    assert!(output.status.success());
    let (output, _) = prefetch(&two.name, &mirror, &endpoint(), &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(error_line(&output).contains("belongs to bucket"));
    assert_eq!(std::fs::read(mirror.join("k")).unwrap(), b"1");
}

#[test]
fn access_denied_on_one_key_fails_that_key_and_names_it() {
    let bucket = Bucket::create("denied");
    bucket.put("open/a", b"a");
    bucket.put("secret/b", b"b");
    bucket.put("open/c", b"c");
    let proxy = Proxy::start(moto_port());
    proxy.fail("secret/b", 403, "AccessDenied");
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("m");
    let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &[]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        (summary["downloaded"].as_u64(), summary["failed"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(summary["failures"][0]["key"], "secret/b");
    let text = stderr(&output);
    assert!(
        text.contains("access denied: GetObject on s3://") && text.contains("/secret/b"),
        "{text}"
    );
    assert_eq!(std::fs::read(mirror.join("open/c")).unwrap(), b"c");
    assert!(!mirror.join("secret/b").exists());
}

#[test]
fn access_denied_on_the_listing_stops_the_run_and_says_so() {
    let bucket = Bucket::create("nolist");
    bucket.put("a", b"a");
    let proxy = Proxy::start(moto_port());
    proxy.fail("list-type=2", 403, "AccessDenied");
    let dir = tempfile::tempdir().unwrap();
    let (output, _) = prefetch(&bucket.name, &dir.path().join("m"), &proxy.endpoint(), &[]);
    assert_eq!(output.status.code(), Some(2));
    let line = error_line(&output);
    assert!(
        line.contains("access denied: ListObjectsV2 on s3://"),
        "{line}"
    );
}
