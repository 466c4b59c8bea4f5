//! Archived objects (S3 Glacier Flexible Retrieval, Glacier Deep Archive,
//! Intelligent-Tiering archive tiers) against moto on 127.0.0.1, through the
//! request-logging proxy: counted, not failed; no request for them on a rerun;
//! restores requested once and fetched when done; a copy mirrored before the
//! object went cold stays current and is read through the mount; an archived
//! object the mirror does not hold fails at once in the mount, with one log line.
//!
//! Where moto differs from S3, and what plays S3's part here:
//! - moto stores GLACIER and DEEP_ARCHIVE objects and answers their GET with
//!   403 InvalidObjectState, as S3 does; its listings carry the StorageClass.
//! - moto completes a restore at once (S3 takes minutes to 48 hours), so the
//!   second run finds it done; "in progress" is never seen. The proxy answers
//!   `RestoreAlreadyInProgress` to play a restore still on its way.
//! - moto lists no RestoreStatus even when asked; S3 lists a restored Glacier
//!   object as restored, so a plain run reads it. Here the HEAD of
//!   `--restore-archived` is what finds the restore done.
//! - moto cannot put an INTELLIGENT_TIERING object into an archive tier (its
//!   GET always succeeds): the proxy answers that GET with InvalidObjectState,
//!   naming the class and the tier, as S3 answers it.

mod support;

use std::fs;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use support::admin::{admin_command, run_json};
use support::faults::{Fault, Rule};
use support::mount::{Mount, sh};
use support::proxy::Proxy;
use support::{Bucket, data, moto_port, prefetch, s3mirrorfs, stderr};

/// A bucket with one object of each kind; the last two are archived.
const MIXED: [(&str, &str); 7] = [
    ("std.jpg", "STANDARD"),
    ("ia.jpg", "STANDARD_IA"),
    ("onezone.jpg", "ONEZONE_IA"),
    ("ir.jpg", "GLACIER_IR"),
    ("tiering.jpg", "INTELLIGENT_TIERING"),
    ("old/deep.jpg", "DEEP_ARCHIVE"),
    ("old/glacier.jpg", "GLACIER"),
];

fn mixed_bucket(tag: &str) -> Bucket {
    let bucket = Bucket::create(tag);
    for (i, (key, class)) in MIXED.iter().enumerate() {
        bucket.put_with_class(key, &data(i as u64, 1000 + i), class);
    }
    bucket
}

fn count(summary: &serde_json::Value, field: &str) -> u64 {
    summary[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {summary}"))
}

/// (downloaded, up_to_date, failed, archived), which add up to `listed`.
fn counts(summary: &serde_json::Value) -> (u64, u64, u64, u64) {
    let four = (
        count(summary, "downloaded"),
        count(summary, "up_to_date"),
        count(summary, "failed"),
        count(summary, "archived"),
    );
    assert_eq!(
        four.0 + four.1 + four.2 + four.3,
        count(summary, "listed"),
        "every listed key counts once: {summary}"
    );
    four
}

fn exit(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

fn restore_posts(proxy: &Proxy) -> Vec<String> {
    proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.target.contains("restore"))
        .map(|r| r.target)
        .collect()
}

#[test]
fn a_mixed_bucket_mirrors_with_exit_0_and_a_rerun_asks_nothing_of_the_archived() {
    let bucket = mixed_bucket("glacier-mixed");
    assert_eq!(
        bucket.get_error_code("old/glacier.jpg").as_deref(),
        Some("InvalidObjectState"),
        "moto refuses the GET as S3 does"
    );
    let proxy = Proxy::start(moto_port());
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("mirror");
    let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &[]);
    let err = stderr(&output);
    assert_eq!(exit(&output), 0, "{err}");
    assert_eq!(counts(&summary), (5, 0, 0, 2), "{summary}");
    assert_eq!(
        summary["archived_keys"],
        serde_json::json!(["old/deep.jpg", "old/glacier.jpg"])
    );
    assert!(summary.get("restore_requested").is_none(), "{summary}");
    assert!(
        err.contains("2 objects are archived") && err.contains("--restore-archived DAYS"),
        "one line says how many and how to get them: {err}"
    );
    assert!(!err.to_lowercase().contains("denied"), "{err}");
    assert!(
        proxy.gets_of("old/glacier.jpg").is_empty() && proxy.gets_of("old/deep.jpg").is_empty(),
        "the listing's class tells: no GET"
    );
    assert!(!mirror.join("old/glacier.jpg").exists());

    proxy.clear();
    let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &[]);
    assert_eq!(exit(&output), 0, "{}", stderr(&output));
    assert_eq!(counts(&summary), (0, 5, 0, 2));
    let asked: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|r| !r.is_list())
        .map(|r| format!("{} {}", r.method, r.target))
        .collect();
    assert!(
        asked.is_empty(),
        "a rerun makes LIST requests only: {asked:?}"
    );

    let (output, report) = run_json(&mut admin_command(
        &[
            "verify",
            &bucket.name,
            "--mirror-dir",
            mirror.to_str().unwrap(),
            "--remote",
        ],
        &proxy.endpoint(),
    ));
    assert_eq!(exit(&output), 0, "{report}");
    assert_eq!(
        (report["archived"].as_u64(), report["missing"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(report["whole"], true);
    let kinds: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["archived", "archived"]);
    let mut status = s3mirrorfs();
    status.args(["status", "--mirror-dir", mirror.to_str().unwrap()]);
    let (_, status) = run_json(&mut status);
    assert_eq!(status["last_prefetch"]["archived"], 2);
    assert_eq!(status["last_prefetch"]["outcome"], "success");
}

#[test]
fn restore_archived_requests_each_restore_once_and_fetches_them_when_done() {
    let bucket = mixed_bucket("glacier-restore");
    let proxy = Proxy::start(moto_port());
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("mirror");
    let restore = ["--restore-archived", "2", "--restore-tier", "Standard"];
    let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &restore);
    assert_eq!(exit(&output), 0, "{}", stderr(&output));
    assert_eq!(counts(&summary), (5, 0, 0, 2));
    assert_eq!(count(&summary, "restore_requested"), 2);
    assert_eq!(count(&summary, "restore_in_progress"), 0);
    let posts = restore_posts(&proxy);
    assert_eq!(posts.len(), 2, "{posts:?}");
    let (restored, class) = bucket.restore_header("old/deep.jpg");
    assert_eq!(class.as_deref(), Some("DEEP_ARCHIVE"));
    assert!(
        restored.is_some_and(|h| h.contains("ongoing-request=\"false\"")),
        "moto completes a restore at once"
    );

    proxy.clear();
    let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &restore);
    assert_eq!(exit(&output), 0, "{}", stderr(&output));
    assert_eq!(counts(&summary), (2, 5, 0, 0), "{summary}");
    assert_eq!(count(&summary, "restore_requested"), 0);
    assert!(
        restore_posts(&proxy).is_empty(),
        "a done restore is not asked again"
    );
    for (i, (key, _)) in MIXED.iter().enumerate() {
        let copy = fs::read(mirror.join(key)).unwrap();
        assert_eq!(copy, data(i as u64, 1000 + i), "{key}");
    }

    proxy.clear();
    let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &[]);
    assert_eq!(exit(&output), 0);
    assert_eq!(
        counts(&summary),
        (0, 7, 0, 0),
        "restored copies are ordinary copies"
    );
    assert!(proxy.requests().iter().all(|r| r.is_list()));
}

#[test]
fn a_restore_already_on_its_way_is_never_requested_again() {
    let bucket = Bucket::create("glacier-inprogress");
    bucket.put_with_class("cold.jpg", b"cold", "GLACIER");
    let proxy = Proxy::start(moto_port());
    // moto completes restores at once; S3 would answer the second request so
    // while the first is running. HEAD shows no restore yet (as S3's does for a
    // restore requested by someone else a moment ago).
    proxy.add(
        Rule::matching(
            "restore",
            Fault::Error {
                status: 409,
                code: "RestoreAlreadyInProgress",
            },
        )
        .method("POST"),
    );
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("mirror");
    let restore = ["--restore-archived", "1"];
    let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &restore);
    let err = stderr(&output);
    assert_eq!(exit(&output), 0, "{err}");
    assert_eq!(counts(&summary), (0, 0, 0, 1));
    assert_eq!(count(&summary, "restore_in_progress"), 1);
    assert_eq!(count(&summary, "restore_requested"), 0);
    assert!(err.contains("already on their way"), "{err}");
}

#[test]
fn an_intelligent_tiering_archive_tier_is_learned_from_its_get_and_remembered() {
    let bucket = Bucket::create("glacier-tiering");
    bucket.put_with_class("t/cold.jpg", b"cold bytes", "INTELLIGENT_TIERING");
    bucket.put_with_class("t/warm.jpg", b"warm bytes", "INTELLIGENT_TIERING");
    let proxy = Proxy::start(moto_port());
    proxy.add(Rule::object(
        "t/cold.jpg",
        Fault::Archived {
            storage_class: "INTELLIGENT_TIERING",
            access_tier: Some("ARCHIVE_ACCESS"),
        },
    ));
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("mirror");
    let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &[]);
    let err = stderr(&output);
    assert_eq!(exit(&output), 0, "{err}");
    assert_eq!(counts(&summary), (1, 0, 0, 1));
    assert_eq!(summary["archived_keys"], serde_json::json!(["t/cold.jpg"]));
    assert!(
        err.contains("InvalidObjectState") && err.contains("ARCHIVE_ACCESS"),
        "the log names what S3 said: {err}"
    );
    assert!(!err.to_lowercase().contains("denied"), "{err}");
    assert_eq!(proxy.gets_of("t/cold.jpg").len(), 1, "one GET, not retried");

    proxy.clear();
    let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &[]);
    assert_eq!(exit(&output), 0);
    assert_eq!(counts(&summary), (0, 1, 0, 1));
    assert!(
        proxy.gets_of("t/cold.jpg").is_empty(),
        "remembered: no request"
    );

    // A new version is tried again (and is readable now).
    proxy.clear_rules();
    bucket.put_with_class("t/cold.jpg", b"new version", "INTELLIGENT_TIERING");
    let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &[]);
    assert_eq!(exit(&output), 0);
    assert_eq!(counts(&summary), (1, 1, 0, 0));
    assert_eq!(fs::read(mirror.join("t/cold.jpg")).unwrap(), b"new version");
    let saved = fs::read_to_string(mirror.join(".s3mirrorfs/archived.jsonl")).unwrap();
    assert!(
        saved.is_empty(),
        "nothing archived is left to remember: {saved:?}"
    );
}

#[test]
fn listings_ask_for_the_restore_status_unless_the_endpoint_refuses_it() {
    let bucket = mixed_bucket("glacier-optional");
    let proxy = Proxy::start(moto_port());
    // An S3-compatible server that does not know the optional attribute.
    proxy.add(
        Rule::listing(Fault::Error {
            status: 501,
            code: "NotImplemented",
        })
        .first(1),
    );
    let dir = tempfile::tempdir().unwrap();
    let (output, summary) = prefetch(&bucket.name, &dir.path().join("m"), &proxy.endpoint(), &[]);
    assert_eq!(exit(&output), 0, "{}", stderr(&output));
    assert_eq!(
        counts(&summary),
        (5, 0, 0, 2),
        "the class alone still tells"
    );
    let listings: Vec<(Option<String>, Option<&str>)> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.is_list())
        .map(|r| (r.optional_attributes, r.fault))
        .collect();
    assert_eq!(
        listings[0],
        (Some("RestoreStatus".to_string()), Some("error")),
        "asked once"
    );
    assert!(
        listings.len() > 1 && listings[1..].iter().all(|l| *l == (None, None)),
        "then listed without it: {listings:?}"
    );
}

#[test]
fn a_real_403_is_still_access_denied_and_other_codes_are_named() {
    let bucket = Bucket::create("glacier-codes");
    bucket.put("a/denied.jpg", b"x");
    bucket.put("a/disabled.jpg", b"y");
    let proxy = Proxy::start(moto_port());
    proxy.add(Rule::object("a/denied.jpg", Fault::access_denied()));
    proxy.add(Rule::object(
        "a/disabled.jpg",
        Fault::Error {
            status: 403,
            code: "AllAccessDisabled",
        },
    ));
    let dir = tempfile::tempdir().unwrap();
    let (output, summary) = prefetch(&bucket.name, &dir.path().join("m"), &proxy.endpoint(), &[]);
    assert_eq!(exit(&output), 1);
    assert_eq!(counts(&summary), (0, 0, 2, 0));
    let failures = summary["failures"].as_array().unwrap();
    let error_of = |key: &str| {
        failures
            .iter()
            .find(|f| f["key"] == key)
            .map(|f| f["error"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert!(error_of("a/denied.jpg").starts_with("access denied: GetObject"));
    let disabled = error_of("a/disabled.jpg");
    assert!(
        disabled.contains("HTTP 403 AllAccessDisabled") && !disabled.contains("denied"),
        "{disabled}"
    );
}

/// Waits until `log` holds `needle` (the daemon writes it a moment after the read).
fn wait_for_log(log: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_mount_reads_a_copy_mirrored_before_it_went_cold_and_refuses_others_at_once() {
    let bucket = Bucket::create("glacier-mount");
    let photo = data(7, 5000);
    let etag = bucket.put("photos/2019/beach.jpg", &photo);
    bucket.put_with_class("photos/2019/never.jpg", b"never mirrored", "GLACIER");
    let proxy = Proxy::start(moto_port());
    bucket.put_with_class("tiers/tier.jpg", b"archive tier", "INTELLIGENT_TIERING");
    proxy.add(Rule::object(
        "tiers/tier.jpg",
        Fault::Archived {
            storage_class: "INTELLIGENT_TIERING",
            access_tier: Some("DEEP_ARCHIVE_ACCESS"),
        },
    ));
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("mirror");
    let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &[]);
    assert_eq!(exit(&output), 0);
    assert_eq!(counts(&summary), (1, 0, 0, 2));

    // A lifecycle rule moves the mirrored photo to Glacier: same bytes, same ETag.
    assert_eq!(bucket.set_class("photos/2019/beach.jpg", "GLACIER"), etag);
    assert_eq!(
        bucket.get_error_code("photos/2019/beach.jpg").as_deref(),
        Some("InvalidObjectState"),
        "S3 (and moto) can no longer serve it"
    );
    proxy.clear();
    let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &[]);
    assert_eq!(exit(&output), 0);
    assert_eq!(
        counts(&summary),
        (0, 1, 0, 2),
        "a class change alone downloads nothing"
    );
    assert!(proxy.requests().iter().all(|r| r.is_list()));

    let log = dir.path().join("mount.log");
    let mount = Mount::start_logged(
        &bucket.name,
        &dir.path().join("mnt"),
        &mirror,
        &proxy.endpoint(),
        &[],
        &log,
        &[],
    );
    let beach = mount.path("photos/2019/beach.jpg");
    assert_eq!(fs::read(&beach).unwrap(), photo, "served from the mirror");
    let never = mount.path("photos/2019/never.jpg");
    assert_eq!(
        fs::metadata(&never).unwrap().len(),
        14,
        "listed with its size"
    );
    proxy.clear();
    let started = Instant::now();
    let cat = sh(&format!("cat '{}'", never.display()));
    assert!(started.elapsed() < Duration::from_secs(5), "fails at once");
    assert!(!cat.status.success());
    let said = String::from_utf8_lossy(&cat.stderr);
    assert!(said.contains("No data available"), "ENODATA: {said}");
    let err = fs::read(&never).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENODATA));
    assert!(
        proxy.gets_of("photos/2019/never.jpg").is_empty(),
        "no request"
    );
    let text = wait_for_log(&log, "is archived");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("is archived in"))
        .collect();
    assert_eq!(lines.len(), 1, "one line per key, not per read: {text}");
    let line = lines[0];
    for needle in [
        "photos/2019/never.jpg",
        "GLACIER",
        &format!("s3mirrorfs prefetch {} ", bucket.name),
        "--restore-archived DAYS",
    ] {
        assert!(line.contains(needle), "{needle:?} in {line}");
    }

    // An Intelligent-Tiering archive tier: the listing cannot tell, the one GET
    // does (never retried), and the next open fails without asking again.
    let tier = mount.path("tiers/tier.jpg");
    let started = Instant::now();
    let err = fs::read(&tier).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "fails at once");
    assert_eq!(err.raw_os_error(), Some(libc::ENODATA));
    assert_eq!(proxy.gets_of("tiers/tier.jpg").len(), 1);
    let again = fs::read(&tier).unwrap_err();
    assert_eq!(again.raw_os_error(), Some(libc::ENODATA));
    assert_eq!(proxy.gets_of("tiers/tier.jpg").len(), 1, "remembered");
    let text = wait_for_log(&log, "tiers/tier.jpg is archived");
    assert!(
        text.contains("tiers/tier.jpg is archived in INTELLIGENT_TIERING"),
        "{text}"
    );
}
