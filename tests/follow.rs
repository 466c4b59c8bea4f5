//! `s3mirrorfs follow` against one moto server serving both S3 and SQS, whose
//! buckets send their event notifications to its queues.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use md5::Digest as _;
use s3mirrorfs::mirror::history::read_key_history;
use s3mirrorfs::sys::beneath::Dir;
use serde_json::Value;
use support::queue::Queue;
use support::{Bucket, data, endpoint, s3mirrorfs, stderr};

fn follow_command(bucket: &str, queue: &Queue, mirror: &Path, args: &[&str]) -> Command {
    let mut command = s3mirrorfs();
    command
        .args(["follow", bucket, "--queue-url", &queue.url, "--mirror-dir"])
        .arg(mirror)
        .args(["--endpoint-url", &endpoint(), "--force-path-style"])
        .args(args);
    command
}

fn start(bucket: &str, queue: &Queue, mirror: &Path) -> Child {
    follow_command(bucket, queue, mirror, &["--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Stops a follower with SIGTERM; returns its output and how long it took.
fn stop(child: Child) -> (Output, Duration) {
    let asked = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let output = child.wait_with_output().unwrap();
    (output, asked.elapsed())
}

fn json(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "one JSON line: {stdout:?}\n{}",
        stderr(output)
    );
    serde_json::from_str(lines[0]).unwrap()
}

/// Waits until every key's copy holds its bytes (keys stored verbatim).
fn wait_for(mirror: &Path, expected: &BTreeMap<String, Vec<u8>>, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let missing: Vec<&String> = expected
            .iter()
            .filter(|(key, bytes)| fs::read(mirror.join(key)).ok().as_ref() != Some(*bytes))
            .map(|(key, _)| key)
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not mirrored in time: {missing:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn setup(tag: &str, visibility: Duration) -> (Bucket, Queue, tempfile::TempDir) {
    let bucket = Bucket::create(tag);
    let queue = Queue::create(visibility);
    bucket.notify(&queue);
    (bucket, queue, tempfile::tempdir().unwrap())
}

#[test]
fn created_overwritten_and_deleted_objects_are_mirrored_within_seconds() {
    let (bucket, queue, dir) = setup("follow", Duration::from_secs(30));
    let mirror = dir.path().join("m");
    let child = start(&bucket.name, &queue, &mirror);
    let mut expected = BTreeMap::new();
    for (i, key) in [
        "plain.jpg",
        "with space/and+plus.jpg",
        "percent%20literal.jpg",
        "caf\u{e9}/\u{1f600}.png",
        "deep/a/b/c.jpg",
    ]
    .iter()
    .enumerate()
    {
        let body = data(i as u64, 1000 + i * 500);
        bucket.put(key, &body);
        expected.insert(key.to_string(), body);
    }
    let big = data(99, 6 << 20);
    bucket.put_multipart("big.bin", &big, 5 << 20);
    expected.insert("big.bin".into(), big);
    wait_for(&mirror, &expected, Duration::from_secs(20));

    // Overwritten: the new bytes, the old ones in history. Deleted: kept.
    let old = expected["plain.jpg"].clone();
    let new = data(500, 777);
    bucket.put("plain.jpg", &new);
    expected.insert("plain.jpg".into(), new);
    bucket.delete("deep/a/b/c.jpg");
    wait_for(&mirror, &expected, Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(20);
    while read_key_history(&Dir::open_root(&mirror).unwrap(), "deep/a/b/c.jpg")
        .unwrap()
        .deletions
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the deletion is recorded");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        fs::read(mirror.join("deep/a/b/c.jpg")).unwrap(),
        expected["deep/a/b/c.jpg"]
    );
    let history = read_key_history(&Dir::open_root(&mirror).unwrap(), "plain.jpg").unwrap();
    let kept = fs::read(mirror.join(history.path_of(&history.versions[0]))).unwrap();
    assert_eq!(kept, old);

    let (output, took) = stop(child);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(took < Duration::from_secs(10), "stopped in {took:?}");
    let report = json(&output);
    assert_eq!(report["fetched"], 7, "{report}");
    assert_eq!(report["deleted"], 1);
    assert_eq!(report["failed"], 0);
    assert!(report["lag_seconds"].is_number(), "{report}");
}

#[test]
fn once_drains_the_queue_and_drops_what_is_not_ours() {
    let (bucket, queue, dir) = setup("once", Duration::from_secs(30));
    let mirror = dir.path().join("m");
    bucket.put("a.jpg", b"aaa");
    bucket.put("b.jpg", b"bbb");
    queue.send("this is not JSON");
    queue.send(r#"{"Records":[{"eventName":"ObjectCreated:Put","eventTime":"2026-01-01T00:00:00Z","s3":{"bucket":{"name":"someone-else"},"object":{"key":"x","size":1,"eTag":"00"}}}]}"#);
    queue.send(r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"%zz"}}}]}"#);
    let output = follow_command(&bucket.name, &queue, &mirror, &["--once", "--json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report = json(&output);
    assert_eq!(report["fetched"], 2, "{report}");
    assert_eq!(report["dropped"], 3, "{report}");
    assert_eq!(fs::read(mirror.join("a.jpg")).unwrap(), b"aaa");
    assert_eq!(fs::read(mirror.join("b.jpg")).unwrap(), b"bbb");
    assert_eq!(queue.depth(), 0, "every message handled is deleted");
    let log = stderr(&output);
    assert!(log.contains("not an S3 event"), "{log}");
    assert!(log.contains("another bucket"), "{log}");
}

#[test]
fn an_object_uploaded_into_glacier_is_left_to_prefetch_not_retried() {
    let (bucket, queue, dir) = setup("glacier", Duration::from_secs(30));
    let mirror = dir.path().join("m");
    bucket.put_with_class("cold.jpg", b"cold", "GLACIER");
    bucket.put("warm.jpg", b"warm");
    let output = follow_command(&bucket.name, &queue, &mirror, &["--once", "--json"])
        .output()
        .unwrap();
    let log = stderr(&output);
    assert_eq!(output.status.code(), Some(0), "{log}");
    let report = json(&output);
    assert_eq!(
        (report["fetched"].as_u64(), report["skipped"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(queue.depth(), 0, "not left in the queue to fail again");
    assert!(!mirror.join("cold.jpg").exists());
    assert!(
        log.contains("InvalidObjectState") && !log.contains("denied"),
        "{log}"
    );
}

#[test]
fn a_stale_event_never_replaces_newer_bytes() {
    let (bucket, queue, dir) = setup("stale", Duration::from_secs(30));
    let mirror = dir.path().join("m");
    bucket.put("k.jpg", b"version one");
    bucket.put("k.jpg", b"version two");
    let output = follow_command(&bucket.name, &queue, &mirror, &["--once", "--json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(fs::read(mirror.join("k.jpg")).unwrap(), b"version two");
    // An event for the first version, delivered late.
    let old_etag = format!("{:x}", md5::Md5::digest(b"version one"));
    queue.send(&format!(
        r#"{{"Records":[{{"eventName":"ObjectCreated:Put","eventTime":"2020-01-01T00:00:00.000Z","s3":{{"bucket":{{"name":"{}"}},"object":{{"key":"k.jpg","size":11,"eTag":"{old_etag}"}}}}}}]}}"#,
        bucket.name
    ));
    let output = follow_command(&bucket.name, &queue, &mirror, &["--once", "--json"])
        .output()
        .unwrap();
    let report = json(&output);
    assert_eq!(
        (report["skipped"].as_u64(), report["fetched"].as_u64()),
        (Some(1), Some(0)),
        "{report}"
    );
    assert_eq!(fs::read(mirror.join("k.jpg")).unwrap(), b"version two");
}

#[test]
fn kill_9_in_a_burst_and_a_restart_lose_nothing() {
    let (bucket, queue, dir) = setup("burst", Duration::from_secs(2));
    let mirror = dir.path().join("m");
    let objects: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| (format!("burst/{i:03}.jpg"), data(i, 3000 + i as usize)))
        .collect();
    let child = start(&bucket.name, &queue, &mirror);
    bucket.put_many(&objects);
    std::thread::sleep(Duration::from_millis(700));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait_with_output();
    let child = start(&bucket.name, &queue, &mirror);
    let expected: BTreeMap<String, Vec<u8>> = objects.into_iter().collect();
    wait_for(&mirror, &expected, Duration::from_secs(60));
    // Started, not merely spawned, before it is asked to stop.
    std::thread::sleep(Duration::from_secs(1));
    let (output, _) = stop(child);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let temps = fs::read_dir(mirror.join(".s3mirrorfs/tmp"))
        .unwrap()
        .count();
    assert_eq!(temps, 0, "temp files of the killed run are cleaned");
}

#[test]
fn a_queue_that_does_not_exist_is_exit_2_at_once() {
    let bucket = Bucket::create("noqueue");
    let dir = tempfile::tempdir().unwrap();
    let missing = Queue::at(&format!("{}/123456789012/no-such-queue", endpoint()));
    let started = Instant::now();
    let output = follow_command(&bucket.name, &missing, &dir.path().join("m"), &[])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("no-such-queue"),
        "{}",
        stderr(&output)
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}
