//! Prefetch under injected faults, through the fault-injecting proxy in front of
//! moto: throttling and server errors, resets, short and stalled bodies, objects
//! that change mid-download, corrupted bytes, another endpoint, and crashes at the
//! two critical points of a commit. Each test checks the mirror byte for byte and
//! that the summary and exit code tell the truth.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use s3mirrorfs::mirror::read_record;
use s3mirrorfs::sys::beneath::Dir;
use serde_json::Value;
use support::faults::{Fault, Rule};
use support::proxy::Proxy;
use support::{Bucket, data, endpoint, moto_port, prefetch, prefetch_command, stderr, temp_files};

type Expected = BTreeMap<String, Vec<u8>>;

fn fill(bucket: &Bucket, objects: &[(&str, Vec<u8>)]) -> Expected {
    let mut expected = Expected::new();
    for (key, bytes) in objects {
        bucket.put(key, bytes);
        expected.insert(key.to_string(), bytes.clone());
    }
    expected
}

/// The mirror holds exactly `expected` (byte for byte, each recorded with the ETag
/// S3 lists now), and no temp file.
fn assert_mirror(bucket: &Bucket, mirror: &Path, expected: &Expected) {
    let listed: BTreeMap<String, String> = bucket
        .list()
        .into_iter()
        .map(|(key, etag, _, _)| (key, etag))
        .collect();
    for (key, bytes) in expected {
        let path = mirror.join(key);
        let found = fs::read(&path).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert!(found == *bytes, "{key}: the mirrored bytes differ");
        let record = read_record(&path).unwrap_or_else(|| panic!("{key} has a record"));
        assert_eq!(record.key.as_str(), *key);
        assert_eq!(record.size, bytes.len() as u64);
        assert_eq!(
            Some(record.etag.as_str()),
            listed.get(key).map(String::as_str),
            "{key}: recorded ETag"
        );
    }
    assert_eq!(temp_files(mirror), 0, "no temp file is left");
}

fn assert_success(output: &std::process::Output, summary: &Value, n: usize) {
    assert_eq!(output.status.code(), Some(0), "{}", stderr(output));
    assert_eq!(summary["listed"], n as u64);
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(
        summary["downloaded"].as_u64().unwrap() + summary["up_to_date"].as_u64().unwrap(),
        n as u64
    );
    assert!(summary.get("error").is_none(), "{summary}");
}

fn failed_keys(summary: &Value) -> Vec<String> {
    summary["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn throttling_and_server_errors_on_listings_and_gets_are_retried() {
    let bucket = Bucket::create("throttle");
    let expected = fill(
        &bucket,
        &[
            ("slow", data(1, 3000)),
            ("busy", data(2, 4000)),
            ("broken", data(3, 5000)),
            ("fine", data(4, 10)),
        ],
    );
    let proxy = Proxy::start(moto_port());
    proxy.add(Rule::listing(Fault::slow_down()).first(1));
    proxy.add(Rule::listing(Fault::internal_error()).nth(2));
    proxy.add(Rule::object("slow", Fault::slow_down()).first(2));
    proxy.add(Rule::object("busy", Fault::too_many_requests()).first(2));
    proxy.add(Rule::object("broken", Fault::internal_error()).first(1));
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("m");
    let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &[]);
    assert_success(&output, &summary, 4);
    assert_eq!(summary["downloaded"], 4);
    assert_mirror(&bucket, &mirror, &expected);
    let lists = proxy.requests().iter().filter(|r| r.is_list()).count();
    assert_eq!(lists, 3, "two failed pages, then the listing");
    assert_eq!(proxy.gets_of("slow").len(), 3);
    assert_eq!(
        proxy.gets_of("busy").len(),
        3,
        "429 is retried as throttling"
    );
    assert_eq!(proxy.gets_of("broken").len(), 2);
    assert_eq!(proxy.gets_of("fine").len(), 1);
}

#[test]
fn faults_that_outlast_the_attempts_fail_the_key_and_leave_nothing() {
    let bucket = Bucket::create("outlast");
    let mut expected = fill(&bucket, &[("ok/1", data(5, 2000)), ("ok/2", data(6, 2000))]);
    bucket.put("doomed", &data(7, 3000));
    bucket.put("cut", &data(8, 30_000));
    bucket.put("frozen", &data(26, 30_000));
    let proxy = Proxy::start(moto_port());
    proxy.add(Rule::object("doomed", Fault::slow_down()));
    proxy.add(Rule::object("cut", Fault::TruncateAfter(1000)));
    let limit = Duration::from_secs(120);
    proxy.add(Rule::object(
        "frozen",
        Fault::StallAfter { bytes: 500, limit },
    ));
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("m");
    let started = Instant::now();
    let (output, summary) = prefetch(
        &bucket.name,
        &mirror,
        &proxy.endpoint(),
        // S3 throttling `doomed` is waited out for 3 s, then the key fails.
        &[
            "--max-attempts",
            "2",
            "--stall-timeout",
            "1",
            "--retry-for",
            "3",
        ],
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "bounded in time"
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(summary["listed"], 5);
    assert_eq!(summary["downloaded"], 2);
    assert_eq!(summary["failed"], 3);
    let mut failed = failed_keys(&summary);
    failed.sort();
    assert_eq!(failed, ["cut", "doomed", "frozen"]);
    let text = stderr(&output);
    for key in ["doomed", "cut", "frozen"] {
        assert!(text.contains(key), "{key} is named: {text}");
    }
    let errors: BTreeMap<String, String> = summary["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["key"].as_str().unwrap().into(),
                f["error"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(errors["doomed"].contains("HTTP 503 SlowDown"), "{errors:?}");
    assert!(errors["cut"].contains("after 2 attempts"), "{errors:?}");
    assert!(errors["frozen"].contains("stalled"), "{errors:?}");
    // Bounded: the request attempts, and the body attempts, are what was asked
    // for; a throttled key gets them again after each pause within --retry-for.
    let doomed = proxy.gets_of("doomed").len();
    assert!(
        doomed.is_multiple_of(2) && (4..=8).contains(&doomed),
        "{doomed} GETs"
    );
    assert_eq!(proxy.gets_of("cut").len(), 2);
    assert_eq!(proxy.gets_of("frozen").len(), 2);
    for key in ["doomed", "cut", "frozen"] {
        assert!(!mirror.join(key).exists(), "no partial {key}");
    }
    assert_mirror(&bucket, &mirror, &expected);

    // The faults end: the next run completes the mirror.
    proxy.clear_rules();
    let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &[]);
    assert_success(&output, &summary, 5);
    assert_eq!(summary["downloaded"], 3);
    expected.insert("doomed".into(), data(7, 3000));
    expected.insert("cut".into(), data(8, 30_000));
    expected.insert("frozen".into(), data(26, 30_000));
    assert_mirror(&bucket, &mirror, &expected);
}

#[test]
fn a_listing_that_keeps_failing_stops_the_run_within_bounded_time() {
    let bucket = Bucket::create("nolisting");
    bucket.put("a", b"a");
    let proxy = Proxy::start(moto_port());
    proxy.add(Rule::listing(Fault::slow_down()));
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("m");
    let started = Instant::now();
    let (output, summary) = prefetch(
        &bucket.name,
        &mirror,
        &proxy.endpoint(),
        &["--max-attempts", "3", "--retry-for", "4"],
    );
    // Asked again for --retry-for seconds, then given up.
    assert!(started.elapsed() < Duration::from_secs(40), "no hang");
    assert_eq!(output.status.code(), Some(2));
    let error = summary["error"].as_str().expect("the summary says why");
    assert!(
        error.contains("S3 kept failing") && error.contains("HTTP 503 SlowDown"),
        "{error}"
    );
    let lists = proxy.requests().iter().filter(|r| r.is_list()).count();
    assert!(
        lists >= 6 && lists.is_multiple_of(3),
        "rounds of 3 attempts: {lists}"
    );
    assert!(!mirror.join("a").exists());
    let text = stderr(&output);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "one error line: {text}"
    );
}

#[test]
fn broken_bodies_resume_with_a_range_from_the_last_byte_written() {
    let bucket = Bucket::create("resume");
    let big = data(9, (8 << 20) + 300_000);
    let mut expected = fill(
        &bucket,
        &[
            ("short", data(10, 200_000)),
            ("reset", data(11, 200_000)),
            ("refused", data(12, 5000)),
        ],
    );
    let big_etag = bucket.put("big", &big);
    expected.insert("big".into(), big);
    let short_etag = bucket
        .list()
        .into_iter()
        .find(|o| o.0 == "short")
        .unwrap()
        .1;
    let proxy = Proxy::start(moto_port());
    proxy.add(Rule::object("short", Fault::TruncateAfter(50_000)).first(1));
    proxy.add(Rule::object("reset", Fault::ResetAfter(70_000)).first(1));
    proxy.add(Rule::object("refused", Fault::ResetBeforeHeaders).first(1));
    // The second part of the big object breaks off 1000 bytes in.
    proxy.add(
        Rule::object("big", Fault::TruncateAfter(1000))
            .ranged(true)
            .nth(2),
    );
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("m");
    let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &[]);
    assert_success(&output, &summary, 4);
    assert_eq!(summary["downloaded"], 4);
    assert_mirror(&bucket, &mirror, &expected);

    let short = proxy.gets_of("short");
    assert_eq!(short.len(), 2, "{short:?}");
    assert_eq!(short[0].range, None);
    assert_eq!(short[1].range.as_deref(), Some("bytes=50000-199999"));
    assert_eq!(short[1].if_match.as_deref(), Some(short_etag.as_str()));

    let reset = proxy.gets_of("reset");
    assert_eq!(reset.len(), 2, "{reset:?}");
    let resumed = reset[1].range_start().expect("the retry is ranged");
    assert!(resumed > 0 && resumed <= 70_000, "resumed at {resumed}");
    assert!(reset[1].range.as_deref().unwrap().ends_with("-199999"));
    assert!(reset[1].if_match.is_some(), "pinned");

    assert_eq!(proxy.gets_of("refused").len(), 2);

    let parts = proxy.gets_of("big");
    let second = (8u64 << 20).to_string();
    let resumed: Vec<_> = parts
        .iter()
        .filter(|r| r.range_start() == Some((8 << 20) + 1000))
        .collect();
    assert_eq!(resumed.len(), 1, "{parts:?}");
    assert!(
        parts
            .iter()
            .any(|r| r.range.as_deref() == Some(&format!("bytes={second}-{}", (8 << 20) + 299_999)))
    );
    assert!(
        parts[1..]
            .iter()
            .all(|r| r.if_match.as_deref() == Some(big_etag.as_str())),
        "every part after the first is pinned: {parts:?}"
    );
    // Every byte came once: what was received before a fault was kept, not fetched again.
    let total: u64 = expected.values().map(|v| v.len() as u64).sum();
    assert_eq!(summary["bytes"], total);
}

#[test]
fn a_stalled_body_is_timed_out_and_resumed() {
    let bucket = Bucket::create("stall");
    let expected = fill(
        &bucket,
        &[
            ("stuck", data(13, 100_000)),
            ("mute", data(24, 3000)),
            ("slowpoke", data(25, 2000)),
            ("other", data(14, 1000)),
        ],
    );
    let proxy = Proxy::start(moto_port());
    let limit = Duration::from_secs(120);
    proxy.add(
        Rule::object(
            "stuck",
            Fault::StallAfter {
                bytes: 20_000,
                limit,
            },
        )
        .first(1),
    );
    // A response whose head never comes is cut by the first-byte timeout, retried.
    proxy.add(Rule::object("mute", Fault::StallBeforeHeaders { limit }).first(1));
    // A body that is slow but never stalls is not cut, though it takes longer than
    // the attempt timeout (which ends with the response head for a GET).
    let every = Duration::from_millis(400);
    proxy.add(Rule::object("slowpoke", Fault::Drip { bytes: 200, every }).first(1));
    // A listing page that stops mid-body is cut by the attempt timeout and asked again.
    proxy.add(Rule::listing(Fault::StallAfter { bytes: 50, limit }).first(1));
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("m");
    let started = Instant::now();
    let (output, summary) = prefetch(
        &bucket.name,
        &mirror,
        &proxy.endpoint(),
        &["--stall-timeout", "1"],
    );
    let took = started.elapsed();
    assert_success(&output, &summary, 4);
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_eq!(proxy.gets_of("mute").len(), 2);
    assert_eq!(proxy.gets_of("slowpoke").len(), 1, "one slow GET, not cut");
    assert_mirror(&bucket, &mirror, &expected);
    let stuck = proxy.gets_of("stuck");
    assert_eq!(stuck.len(), 2, "{stuck:?}");
    assert_eq!(stuck[1].range.as_deref(), Some("bytes=20000-99999"));
    assert_eq!(proxy.requests().iter().filter(|r| r.is_list()).count(), 2);
}

#[test]
fn an_object_changed_while_its_first_part_streams_is_stored_as_one_version() {
    let bucket = Arc::new(Bucket::create("changing"));
    let size = (8 << 20) + 100_000;
    let old = data(17, size);
    let new = data(18, size);
    let old_etag = bucket.put("clip", &old);
    let proxy = Proxy::start(moto_port());
    let writer = Arc::clone(&bucket);
    let replacement = new.clone();
    // The other parts may be asked for before or after the change: either way the
    // file holds one version, whole, under the ETag of those bytes.
    proxy.add(
        Rule::object(
            "clip",
            Fault::HookAfter(
                1000,
                Arc::new(move || {
                    writer.put("clip", &replacement);
                }),
            ),
        )
        .nth(1),
    );
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("m");
    let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary["failed"], 0);
    let file = fs::read(mirror.join("clip")).unwrap();
    let record = read_record(&mirror.join("clip")).unwrap();
    if file == old {
        assert_eq!(record.etag.as_str(), old_etag);
    } else {
        assert!(file == new, "one version, whole; never a splice");
        assert_eq!(record.etag.as_str(), bucket.list()[0].1);
    }
    // Whichever it stored, the next run leaves the mirror at the current version.
    let (output, _) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(fs::read(mirror.join("clip")).unwrap() == new);
}

#[test]
fn an_object_changed_mid_download_is_fetched_again_as_a_whole() {
    let bucket = Arc::new(Bucket::create("changed"));
    let size = (8 << 20) + 100_000;
    let old = data(15, size);
    let new = data(16, size);
    let old_etag = bucket.put("video", &old);
    let proxy = Proxy::start(moto_port());
    let writer = Arc::clone(&bucket);
    let replacement = new.clone();
    // A new version is uploaded just before the second part's request reaches
    // the server (the first part is already on its way).
    proxy.add(
        Rule::object("video", {
            let writer = Arc::clone(&writer);
            Fault::HookBefore(Arc::new(move || {
                writer.put("video", &replacement);
            }))
        })
        .nth(2),
    );
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("m");
    let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &[]);
    assert_success(&output, &summary, 1);
    assert_eq!(summary["downloaded"], 1);
    let file = fs::read(mirror.join("video")).unwrap();
    assert!(file == new, "the new version, whole; never a splice");
    let record = read_record(&mirror.join("video")).unwrap();
    let new_etag = bucket.list()[0].1.clone();
    assert_ne!(new_etag, old_etag);
    assert_eq!(
        record.etag.as_str(),
        new_etag,
        "the ETag of the bytes stored"
    );
    let gets = proxy.gets_of("video");
    assert!(
        gets.iter()
            .any(|r| r.if_match.as_deref() == Some(old_etag.as_str())),
        "the second part was pinned to the first version: {gets:?}"
    );
    assert!(
        gets.iter()
            .any(|r| r.if_match.as_deref() == Some(new_etag.as_str())),
        "the new version was fetched in parts too: {gets:?}"
    );
    let expected = Expected::from([("video".to_string(), new)]);
    assert_mirror(&bucket, &mirror, &expected);

    // The listing now agrees with the record: nothing to fetch.
    proxy.clear();
    let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &[]);
    assert_success(&output, &summary, 1);
    assert_eq!(summary["up_to_date"], 1);
    assert!(proxy.requests().iter().all(|r| r.is_list()));
}

#[test]
fn bytes_that_contradict_their_checksum_or_md5_etag_are_never_persisted() {
    let bucket = Bucket::create("flip");
    let mut expected = fill(
        &bucket,
        &[("crc", data(17, 10_000)), ("md5", data(18, 10_000))],
    );
    bucket.put("always", &data(19, 10_000));
    let proxy = Proxy::start(moto_port());
    // Caught by the checksum the server sends with a whole-object GET...
    proxy.add(Rule::object("crc", Fault::FlipByte(5000)).first(1));
    // ... and, without one, by the MD5 ETag.
    proxy.add(Rule::object("md5", Fault::FlipByteUnchecked(9999)).first(1));
    proxy.add(Rule::object("always", Fault::FlipByteUnchecked(0)));
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("m");
    let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(
        (summary["downloaded"].as_u64(), summary["failed"].as_u64()),
        (Some(2), Some(1)),
        "{summary}"
    );
    assert_eq!(failed_keys(&summary), ["always"]);
    let error = summary["failures"][0]["error"].as_str().unwrap();
    assert!(error.contains("do not match"), "{error}");
    for key in ["crc", "md5"] {
        let gets = proxy.gets_of(key);
        assert_eq!(gets.len(), 2, "{key} fetched again once: {gets:?}");
        assert_eq!(
            gets[1].range, None,
            "{key} fetched again whole, not resumed"
        );
    }
    assert_eq!(
        proxy.gets_of("always").len() as u32,
        s3mirrorfs::fetch::WHOLE_ATTEMPTS
    );
    assert!(!mirror.join("always").exists(), "never persisted");
    assert_mirror(&bucket, &mirror, &expected);

    proxy.clear_rules();
    let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &[]);
    assert_success(&output, &summary, 3);
    expected.insert("always".into(), data(19, 10_000));
    assert_mirror(&bucket, &mirror, &expected);
}

#[test]
fn a_mirror_is_refreshed_through_another_endpoint_without_downloading() {
    let bucket = Bucket::create("endpoint");
    let expected = fill(&bucket, &[("a/1", data(19, 5000)), ("b", data(20, 700))]);
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("m");
    let (output, summary) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert_success(&output, &summary, 2);
    let proxy = Proxy::start(moto_port());
    // Another endpoint in front of the same server, as a VPC endpoint is for S3: the
    // user says the bucket is the same one.
    let allow = ["--allow-new-source"];
    let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &allow);
    assert_success(&output, &summary, 2);
    assert_eq!(summary["up_to_date"], 2);
    assert_eq!(summary["bytes"], 0);
    let requests = proxy.requests();
    assert!(
        !requests.is_empty(),
        "the run went through the other endpoint"
    );
    assert!(requests.iter().all(|r| r.is_list()), "no GET: {requests:?}");
    assert_mirror(&bucket, &mirror, &expected);
}

#[test]
fn a_crash_between_write_and_rename_or_rename_and_fsync_leaves_a_consistent_mirror() {
    let bucket = Bucket::create("faultpoint");
    let expected = fill(
        &bucket,
        &[
            ("d/first", data(21, 4000)),
            ("d/second", data(22, 6000)),
            ("d/third", data(23, 8000)),
        ],
    );
    for point in ["before-rename", "after-rename"] {
        let dir = tempfile::tempdir().unwrap();
        let mirror = dir.path().join("m");
        let output = prefetch_command(&bucket.name, &mirror, &endpoint(), &["--concurrency", "1"])
            .env("S3MIRRORFS_FAULT_POINT", format!("{point}:d/second"))
            .output()
            .unwrap();
        assert_eq!(
            output.status.signal(),
            Some(libc::SIGKILL),
            "{point}: killed there: {}",
            stderr(&output)
        );
        assert!(output.stdout.is_empty(), "no summary from a killed run");
        let second = mirror.join("d/second");
        match point {
            "before-rename" => {
                assert!(!second.exists(), "nothing under the final name");
                assert_eq!(temp_files(&mirror), 1, "the dead run's temp file");
            }
            _ => {
                assert!(
                    fs::read(&second).unwrap() == expected["d/second"],
                    "complete"
                );
                assert!(read_record(&second).is_some(), "and recorded");
                assert_eq!(temp_files(&mirror), 0);
            }
        }
        // Whatever is under a final name is complete and recorded.
        for (key, bytes) in &expected {
            let path = mirror.join(key);
            if path.exists() {
                assert!(fs::read(&path).unwrap() == *bytes, "{point}: {key}");
                assert_eq!(read_record(&path).unwrap().key.as_str(), *key);
            }
        }
        // The restart cleans the temp file and completes the mirror.
        let (output, summary) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
        assert_success(&output, &summary, 3);
        assert_mirror(&bucket, &mirror, &expected);
    }
}

#[test]
fn a_crash_while_replacing_a_copy_leaves_old_or_new_bytes_and_the_old_ones_kept() {
    use s3mirrorfs::mirror::history::read_key_history;
    let bucket = Bucket::create("replacecrash");
    let old = data(31, 7000);
    let new = data(32, 9000);
    for point in ["after-history-link", "before-rename", "after-rename"] {
        bucket.put("d/photo.jpg", &old);
        let dir = tempfile::tempdir().unwrap();
        let mirror = dir.path().join("m");
        let (output, _) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
        assert!(output.status.success(), "{}", stderr(&output));
        bucket.put("d/photo.jpg", &new);
        let output = prefetch_command(&bucket.name, &mirror, &endpoint(), &[])
            .env("S3MIRRORFS_FAULT_POINT", format!("{point}:d/photo.jpg"))
            .output()
            .unwrap();
        assert_eq!(output.status.signal(), Some(libc::SIGKILL), "{point}");
        let kept = |mirror: &Path| -> Vec<Vec<u8>> {
            let history =
                read_key_history(&Dir::open_root(mirror).unwrap(), "d/photo.jpg").unwrap();
            history
                .versions
                .iter()
                .map(|v| fs::read(mirror.join(history.path_of(v))).unwrap())
                .collect()
        };
        let current = fs::read(mirror.join("d/photo.jpg")).unwrap();
        if current == new {
            assert_eq!(
                kept(&mirror),
                vec![old.clone()],
                "{point}: the old bytes are kept"
            );
        } else {
            assert_eq!(current, old, "{point}: old or new bytes, nothing else");
        }
        // The next run completes the replacement and keeps the old bytes once.
        let (output, summary) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
        assert_success(&output, &summary, 1);
        assert_eq!(fs::read(mirror.join("d/photo.jpg")).unwrap(), new);
        assert_eq!(kept(&mirror), vec![old.clone()], "{point}: kept once");
    }
}

/// Keeps the `## Faults` part of doc/SEMANTICS.md true to the code.
#[test]
fn the_faults_section_of_the_semantics_matches_the_code() {
    use clap::CommandFactory;
    use s3mirrorfs::fetch::{FetchConfig, WHOLE_ATTEMPTS};
    use s3mirrorfs::s3::{ATTEMPT_STALLS, MAX_BACKOFF, S3Options};

    let doc = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/doc/SEMANTICS.md"))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let faults = &doc[doc.find("## Faults").expect("a Faults section")..];
    let quoted = |text: &str| assert!(faults.contains(text), "## Faults mentions {text:?}");
    let s3 = S3Options::default();
    let fetch = FetchConfig::default();
    quoted(&format!(
        "{} attempts in all, the first included",
        s3.max_attempts
    ));
    quoted(&format!("each pause at most {} s", MAX_BACKOFF.as_secs()));
    quoted(&format!(
        "A connection is given {} s, the first byte of a response {} s",
        s3.connect_timeout.as_secs(),
        s3.read_timeout.as_secs()
    ));
    quoted(&format!("at most {ATTEMPT_STALLS} stall timeouts"));
    quoted(&format!(
        "no byte for the stall timeout, {} s",
        fetch.stall_timeout.as_secs()
    ));
    quoted(&format!("up to {} attempts per part", fetch.max_attempts));
    quoted(&format!("up to {WHOLE_ATTEMPTS} times in all"));
    quoted(&format!(
        "never waits more than {} s",
        s3mirrorfs::fs::READ_WAIT.as_secs()
    ));
    quoted(&format!(
        "`{}=<point>:<key>`",
        s3mirrorfs::fault::FAULT_POINT_VAR
    ));
    for point in s3mirrorfs::fault::POINTS {
        quoted(&format!("`{point}`"));
    }
    // The flags' defaults are the ones the code uses.
    let cli = s3mirrorfs::cli::Cli::command();
    for command in ["prefetch", "mount"] {
        let sub = cli.find_subcommand(command).unwrap();
        let default = |id: &str| {
            let arg = sub.get_arguments().find(|a| a.get_id() == id).unwrap();
            arg.get_default_values()[0].to_str().unwrap().to_string()
        };
        assert_eq!(
            default("stall_timeout"),
            fetch.stall_timeout.as_secs().to_string()
        );
        assert_eq!(default("max_attempts"), s3.max_attempts.to_string());
    }
    assert_eq!(s3.stall_timeout, fetch.stall_timeout);
    assert_eq!(s3.max_attempts, fetch.max_attempts);
}

/// The proxy carries uploads too (bodies with a length, chunked, or behind
/// `Expect: 100-continue`), so write-side tests can put it in front of moto.
#[test]
fn the_proxy_carries_uploads_and_downloads_unchanged() {
    use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_s3::primitives::ByteStream;

    let bucket = Bucket::create("carry");
    let proxy = Proxy::start(moto_port());
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(support::REGION))
        .endpoint_url(proxy.endpoint())
        .force_path_style(true)
        .credentials_provider(Credentials::new(
            support::ACCESS_KEY,
            support::SECRET_KEY,
            None,
            None,
            "tests",
        ))
        .build();
    let client = aws_sdk_s3::Client::from_conf(config);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let big = data(27, 3 << 20);
    rt.block_on(async {
        for (key, bytes) in [("up/small", data(28, 100)), ("up/big", big.clone())] {
            client
                .put_object()
                .bucket(&bucket.name)
                .key(key)
                .body(ByteStream::from(bytes.clone()))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{key}: {}", aws_sdk_s3::error::DisplayErrorContext(e)));
            let got = client
                .get_object()
                .bucket(&bucket.name)
                .key(key)
                .send()
                .await
                .unwrap()
                .body
                .collect()
                .await
                .unwrap()
                .into_bytes();
            assert!(got.as_ref() == bytes.as_slice(), "{key} round-trips");
        }
    });
    assert_eq!(
        proxy
            .requests()
            .iter()
            .filter(|r| r.method == "PUT")
            .count(),
        2
    );
    let listed: Vec<_> = bucket.list().into_iter().map(|o| (o.0, o.2)).collect();
    assert_eq!(
        listed,
        [
            ("up/big".to_string(), big.len() as u64),
            ("up/small".to_string(), 100)
        ]
    );
}
