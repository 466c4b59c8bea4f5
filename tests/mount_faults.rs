//! The mount under injected faults, through the fault-injecting proxy in front of
//! moto: readers get every byte through throttling, resets, short and stalled
//! bodies; a reader of a version that changes gets that version or EIO, never a
//! mix; a denied file fails alone; a full disk costs the reader nothing; the
//! mirror is byte for byte right afterwards.

mod support;

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use s3mirrorfs::mirror::read_record;
use support::faults::{Fault, Rule};
use support::mount::{Mount, ProxiedMount, read_until_error};
use support::proxy::Proxy;
use support::tmpfs::SmallFs;
use support::{Bucket, data, endpoint, moto_port, prefetch, temp_files};

/// Waits until the mirror holds `key` with exactly `bytes` and a record with the
/// ETag S3 lists now.
fn wait_persisted(bucket: &Bucket, mirror: &Path, key: &str, bytes: &[u8]) {
    let etag = bucket
        .list()
        .into_iter()
        .find(|o| o.0 == key)
        .map(|o| o.1)
        .unwrap();
    let path = mirror.join(key);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(record) = read_record(&path)
            && record.etag.as_str() == etag
        {
            assert!(fs::read(&path).unwrap() == bytes, "{key}: mirrored bytes");
            assert_eq!(
                (record.key.as_str(), record.size),
                (key, bytes.len() as u64)
            );
            return;
        }
        assert!(Instant::now() < deadline, "{key} was never persisted");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn readers_get_every_byte_through_throttling_resets_short_and_stalled_bodies() {
    let bucket = Bucket::create("mfaults");
    // One file per directory, so background fetches of siblings stay out of the counts.
    let objects = [
        ("a/slow", data(1, 3000)),
        ("b/short", data(2, 200_000)),
        ("c/reset", data(3, 200_000)),
        ("d/stuck", data(4, 100_000)),
        ("e/refused", data(5, 5000)),
        ("f/busy", data(6, 4000)),
    ];
    for (key, bytes) in &objects {
        bucket.put(key, bytes);
    }
    let stall = Fault::StallAfter {
        bytes: 20_000,
        limit: Duration::from_secs(120),
    };
    let rules = vec![
        Rule::listing(Fault::slow_down()).first(1),
        Rule::object("a/slow", Fault::slow_down()).first(2),
        Rule::object("b/short", Fault::TruncateAfter(50_000)).first(1),
        Rule::object("c/reset", Fault::ResetAfter(70_000)).first(1),
        Rule::object("d/stuck", stall).first(1),
        Rule::object("e/refused", Fault::ResetBeforeHeaders).first(1),
        Rule::object("f/busy", Fault::too_many_requests()).first(2),
    ];
    let mount = ProxiedMount::start(&bucket.name, rules, &["--stall-timeout", "1"]);
    let (proxy, mirror) = (&mount.proxy, &mount.mirror);
    let started = Instant::now();
    for (key, bytes) in &objects {
        let read = fs::read(mount.path(key)).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert!(read == *bytes, "{key}: the reader got the object's bytes");
    }
    assert!(started.elapsed() < Duration::from_secs(30), "no hang");
    for (key, bytes) in &objects {
        wait_persisted(&bucket, mirror, key, bytes);
    }
    assert_eq!(temp_files(mirror), 0);

    assert_eq!(proxy.gets_of("a/slow").len(), 3);
    assert_eq!(proxy.gets_of("f/busy").len(), 3);
    let short = proxy.gets_of("b/short");
    assert_eq!(
        short[1].range.as_deref(),
        Some("bytes=50000-199999"),
        "{short:?}"
    );
    let reset = proxy.gets_of("c/reset");
    let resumed = reset[1].range_start().expect("the retry is ranged");
    assert!(resumed > 0 && resumed <= 70_000, "{reset:?}");
    let stuck = proxy.gets_of("d/stuck");
    assert_eq!(
        stuck[1].range.as_deref(),
        Some("bytes=20000-99999"),
        "{stuck:?}"
    );
    assert_eq!(proxy.gets_of("e/refused").len(), 2);
    // Every resumed request is pinned to the version it started with.
    let resumes: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.range_start().is_some_and(|s| s > 0))
        .collect();
    assert!(resumes.len() >= 3, "{resumes:?}");
    assert!(resumes.iter().all(|r| r.if_match.is_some()), "{resumes:?}");
}

#[test]
fn a_reader_of_a_version_that_changes_gets_it_whole_or_eio_never_a_mix() {
    let bucket = Arc::new(Bucket::create("mchanged"));
    let size = (8 << 20) + 200_000;
    let old = data(7, size);
    let new = data(8, size);
    bucket.put("v/video", &old);
    let writer = Arc::clone(&bucket);
    let replacement = new.clone();
    let change = Rule::object(
        "v/video",
        Fault::HookAfter(
            1000,
            Arc::new(move || {
                writer.put("v/video", &replacement);
            }),
        ),
    )
    .nth(1);
    let mount = ProxiedMount::start(&bucket.name, vec![change], &["--metadata-ttl", "1"]);
    let mirror = &mount.mirror;
    let (bytes, error) = read_until_error(&mount.path("v/video"));
    match error {
        None => assert!(bytes == old, "a complete read is the old version"),
        Some(e) => {
            assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
            assert!(old.starts_with(&bytes), "what arrived is the old version's");
        }
    }
    // The mirror never holds a splice: the file is absent or one whole version.
    let path = mirror.join("v/video");
    if let Ok(found) = fs::read(&path) {
        assert!(found == new || found == old, "one version, whole");
    }
    // Once the listing is refreshed, readers get the new version, and so does the mirror.
    std::thread::sleep(Duration::from_secs(2));
    let read = fs::read(mount.path("v/video")).unwrap();
    assert!(read == new, "the new version");
    wait_persisted(&bucket, mirror, "v/video", &new);
    assert_eq!(temp_files(mirror), 0);
}

#[test]
fn a_denied_or_failing_file_fails_alone() {
    let bucket = Bucket::create("mdenied");
    bucket.put("open/a", &data(9, 1000));
    bucket.put("secret/b", &data(10, 1000));
    bucket.put("busy/c", &data(15, 1000));
    let rules = vec![
        Rule::object("secret/b", Fault::access_denied()),
        Rule::object("busy/c", Fault::slow_down()),
    ];
    let mount = ProxiedMount::start(&bucket.name, rules, &["--max-attempts", "2"]);
    let (proxy, mirror) = (&mount.proxy, &mount.mirror);
    let err = fs::read(mount.path("secret/b")).unwrap_err();
    assert!(
        [Some(libc::EIO), Some(libc::EACCES)].contains(&err.raw_os_error()),
        "{err}"
    );
    let started = Instant::now();
    let err = fs::read(mount.path("busy/c")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20), "bounded");
    // The reader's download and the background fetch of the directory each make
    // --max-attempts requests, no more.
    std::thread::sleep(Duration::from_millis(500));
    let gets = proxy.gets_of("busy/c").len();
    assert!((2..=4).contains(&gets), "{gets} GETs");
    assert!(fs::read(mount.path("open/a")).unwrap() == data(9, 1000));
    wait_persisted(&bucket, mirror, "open/a", &data(9, 1000));
    assert!(!mirror.join("secret/b").exists());
    assert!(!mirror.join("busy/c").exists());
    assert_eq!(
        fs::read_dir(mount.path("secret")).unwrap().count(),
        1,
        "the denied file is still listed"
    );
    // The faults end: the next open reads it.
    proxy.clear_rules();
    assert!(fs::read(mount.path("busy/c")).unwrap() == data(15, 1000));
    wait_persisted(&bucket, mirror, "busy/c", &data(15, 1000));
}

#[test]
fn a_mount_through_another_endpoint_reads_the_mirror_without_downloading() {
    let bucket = Bucket::create("mendpoint");
    bucket.put("p/photo", &data(11, 50_000));
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("m");
    let (output, summary) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert!(output.status.success());
    assert_eq!(summary["downloaded"], 1);
    let proxy = Proxy::start(moto_port());
    let mount = Mount::start(
        &bucket.name,
        &dir.path().join("mnt"),
        &mirror,
        &proxy.endpoint(),
        &["--allow-new-source"],
    );
    assert!(fs::read(mount.path("p/photo")).unwrap() == data(11, 50_000));
    assert!(!proxy.requests().is_empty(), "the mount listed through it");
    assert_eq!(proxy.gets_of("p/photo").len(), 0, "no GET");
}

#[test]
fn a_full_disk_costs_the_reader_nothing_and_the_mirror_stays_usable() {
    let bucket = Bucket::create("mfull");
    let big = data(12, 3 << 20);
    bucket.put("big/file", &big);
    let small = SmallFs::mount("1m");
    let mirror = small.path().join("m");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mount.log");
    let mount = Mount::start_logged(
        &bucket.name,
        &dir.path().join("mnt"),
        &mirror,
        &endpoint(),
        &[],
        &log,
        &[],
    );
    let read = fs::read(mount.path("big/file")).unwrap();
    assert!(read == big, "the reader gets every byte");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!mirror.join("big/file").exists(), "nothing partial");
    assert_eq!(temp_files(&mirror), 0, "the temp file is removed");
    let text = fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("cannot persist") && text.contains("out of space"),
        "the failure is logged: {text}"
    );

    // Room again: the next read persists the file.
    small.resize("16m");
    assert!(fs::read(mount.path("big/file")).unwrap() == big);
    wait_persisted(&bucket, &mirror, "big/file", &big);
    assert_eq!(temp_files(&mirror), 0);
}

#[test]
fn a_mount_killed_mid_commit_restarts_on_a_consistent_mirror() {
    let bucket = Bucket::create("mkill");
    let objects = [("k/one", data(13, 30_000)), ("k/two", data(14, 40_000))];
    for (key, bytes) in &objects {
        bucket.put(key, bytes);
    }
    for point in ["before-rename", "after-rename"] {
        let dir = tempfile::tempdir().unwrap();
        let mirror = dir.path().join("m");
        let mnt = dir.path().join("mnt");
        let log = dir.path().join("mount.log");
        let fault = format!("{point}:k/two");
        let mut mount = Mount::start_logged(
            &bucket.name,
            &mnt,
            &mirror,
            &endpoint(),
            &[],
            &log,
            &[("S3MIRRORFS_FAULT_POINT", &fault)],
        );
        // The read may or may not finish before the daemon dies; the mirror is what counts.
        let _ = fs::read(mount.path("k/two"));
        let status = mount.wait_exit(Duration::from_secs(20));
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "{point}: {}",
            fs::read_to_string(&log).unwrap()
        );
        drop(mount);
        for (key, bytes) in &objects {
            let path = mirror.join(key);
            if path.exists() {
                assert!(
                    fs::read(&path).unwrap() == *bytes,
                    "{point}: {key} complete"
                );
                assert_eq!(
                    read_record(&path).unwrap().key.as_str(),
                    *key,
                    "{point}: recorded"
                );
            }
        }
        if point == "before-rename" {
            assert!(
                !mirror.join("k/two").exists(),
                "nothing under the final name"
            );
        }

        let mount = Mount::start(&bucket.name, &mnt, &mirror, &endpoint(), &[]);
        assert_eq!(
            temp_files(&mirror),
            0,
            "{point}: stale temp files are cleaned"
        );
        for (key, bytes) in &objects {
            assert!(
                fs::read(mount.path(key)).unwrap() == *bytes,
                "{point}: {key}"
            );
            wait_persisted(&bucket, &mirror, key, bytes);
        }
        assert_eq!(temp_files(&mirror), 0);
    }
}

#[test]
fn a_directory_that_cannot_be_listed_fails_alone_and_only_when_nothing_is_known() {
    let bucket = Bucket::create("moutage");
    for key in ["known/a", "unknown/b", "other/c", "later/d"] {
        bucket.put(key, b"x");
    }
    let mount = ProxiedMount::start(&bucket.name, Vec::new(), &["--metadata-ttl", "1"]);
    let proxy = &mount.proxy;
    // Named directly, not from a listing of the root, which would list them all ahead.
    let ls = |name: &str| fs::read_dir(mount.path(name)).map(|d| d.count());
    assert_eq!(ls("known").unwrap(), 1);
    // S3 fails the listings of one directory: that one fails, others do not.
    proxy.add(Rule::matching("prefix=unknown", Fault::internal_error()));
    let err = ls("unknown").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(ls("other").unwrap(), 1, "listed from S3 meanwhile");
    let asked = || {
        let requests = proxy.requests().into_iter();
        requests
            .filter(|r| r.target.contains("prefix=unknown"))
            .count()
    };
    let before = asked();
    assert_eq!(ls("unknown").unwrap_err().raw_os_error(), Some(libc::EIO));
    assert_eq!(asked(), before, "a failed directory backs off");
    // S3 is down: a directory with a saved listing still lists; an unknown one fails.
    proxy.clear_rules();
    proxy.set_down(true);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(ls("known").unwrap(), 1);
    let err = ls("later").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    proxy.set_down(false);
}
