//! The listing of a large prefix, cut into parts listed side by side, against a
//! real S3-compatible server (moto on 127.0.0.1): exactly the serial listing;
//! pages that fail for a while are asked again; a listing that gives up still
//! has what it listed fetched, and prunes nothing.

mod support;

use std::collections::BTreeSet;
use std::fs;

use s3mirrorfs::store::split::split_points;
use serde_json::Value;
use support::faults::{Fault, Rule};
use support::proxy::Proxy;
use support::{Bucket, moto_port, prefetch, stderr};

/// Keys around the points a split of `flat/` picks: each point, a key just
/// before it, keys that extend it, and a run of keys long enough to split.
fn straddling_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for i in 0..1500u32 {
        keys.insert(format!("flat/img-{i:07}.jpg"));
    }
    let first_page = ("flat/img-0000000.jpg", "flat/img-0000999.jpg");
    for point in split_points(first_page.0, first_page.1, None, "flat/".len()) {
        keys.insert(point.clone());
        keys.insert(format!("{point}0"));
        keys.insert(format!("{point}/x"));
        keys.insert(format!("{point} é"));
        let mut before = point.into_bytes();
        *before.last_mut().unwrap() -= 1;
        keys.insert(String::from_utf8(before).unwrap());
    }
    for d in 0..12 {
        for f in 0..5 {
            keys.insert(format!("tree/d{d:02}/f{f}.jpg"));
        }
    }
    keys.extend(["a", "a-b", "z", "flat/img-0000999.jpg0"].map(String::from));
    keys
}

fn listed_keys(mirror: &std::path::Path, summary: &Value, keys: &BTreeSet<String>) -> usize {
    let renamed: BTreeSet<&str> = summary["renamed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    keys.iter()
        .filter(|k| renamed.contains(k.as_str()) || mirror.join(k).exists())
        .count()
}

#[test]
fn a_listing_in_parts_is_the_serial_listing() {
    let bucket = Bucket::create("splitlist");
    let keys = straddling_keys();
    let objects: Vec<(String, Vec<u8>)> = keys.iter().map(|k| (k.clone(), Vec::new())).collect();
    bucket.put_many(&objects);
    let proxy = Proxy::start(moto_port());
    let tmp = tempfile::tempdir().unwrap();
    for workers in ["1", "8"] {
        proxy.clear();
        let mirror = tmp.path().join(format!("mirror-{workers}"));
        let args = ["--list-workers", workers];
        let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &args);
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(
            summary["listed"],
            keys.len(),
            "{workers} workers: {summary}"
        );
        assert_eq!(summary["failed"], 0, "{summary}");
        assert_eq!(listed_keys(&mirror, &summary, &keys), keys.len());
        let lists: Vec<_> = proxy
            .requests()
            .into_iter()
            .filter(|r| r.is_list())
            .collect();
        let split = lists
            .iter()
            .filter(|r| r.target.contains("start-after="))
            .count();
        if workers == "8" {
            assert!(split > 0, "the listing was cut into parts: {lists:?}");
        }
    }
}

#[test]
fn a_listing_page_that_fails_for_a_while_is_asked_again() {
    let bucket = Bucket::create("listretry");
    bucket.put("photos/a.jpg", b"aaa");
    bucket.put("photos/b.jpg", b"bbb");
    let proxy = Proxy::start(moto_port());
    // More failures in a row than one request's own attempts.
    proxy.add(Rule::listing(Fault::slow_down()).first(5));
    let tmp = tempfile::tempdir().unwrap();
    let mirror = tmp.path().join("mirror");
    let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary["downloaded"], 2, "{summary}");
    assert!(
        stderr(&output).contains("asking again"),
        "{}",
        stderr(&output)
    );
    assert_eq!(fs::read(mirror.join("photos/b.jpg")).unwrap(), b"bbb");
}

#[test]
fn a_listing_that_gives_up_still_fetches_what_it_listed_and_prunes_nothing() {
    let bucket = Bucket::create("listgiveup");
    let objects: Vec<(String, Vec<u8>)> = (0..1500u32)
        .map(|i| (format!("flat/img-{i:05}.jpg"), i.to_le_bytes().to_vec()))
        .collect();
    bucket.put_many(&objects);
    bucket.put("flat/zzz-gone.jpg", b"kept");
    let tmp = tempfile::tempdir().unwrap();
    let mirror = tmp.path().join("mirror");
    let proxy = Proxy::start(moto_port());
    let (output, _) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    bucket.delete("flat/zzz-gone.jpg");
    for (key, _) in &objects[1000..] {
        fs::remove_file(mirror.join(key)).unwrap();
    }

    // Every listing request after the first page fails, for longer than --retry-for.
    proxy.add(Rule::listing(Fault::internal_error()).after(1));
    let args = ["--prune", "--retry-for", "1", "--list-workers", "1"];
    let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &args);
    let log = stderr(&output);
    assert!(!output.status.success(), "{log}");
    assert!(
        summary["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{summary}"
    );
    assert!(log.contains("the listing stopped after"), "{log}");
    assert_eq!(summary["pruned"], 0, "{summary}");
    assert_eq!(fs::read(mirror.join("flat/zzz-gone.jpg")).unwrap(), b"kept");
    let listed = summary["listed"].as_u64().unwrap();
    assert!((1000..1501).contains(&listed), "{summary}");
    // What was listed is in the mirror, including copies removed by hand since.
    let present = objects
        .iter()
        .filter(|(key, data)| fs::read(mirror.join(key)).is_ok_and(|d| d == *data))
        .count();
    assert_eq!(present as u64, listed.min(1500), "{summary}");
}

/// A bucket of `n` empty keys `p/k00000`..., a proxy in front of moto, and a
/// directory for the mirror.
fn empty_keys(tag: &str, n: u32) -> (Bucket, Proxy, tempfile::TempDir) {
    let bucket = Bucket::create(tag);
    let objects: Vec<(String, Vec<u8>)> =
        (0..n).map(|i| (format!("p/k{i:05}"), Vec::new())).collect();
    bucket.put_many(&objects);
    (
        bucket,
        Proxy::start(moto_port()),
        tempfile::tempdir().unwrap(),
    )
}

/// Runs a serial prefetch whose listing pages take a second each and kills
/// it (SIGKILL) once `pages` pages are recorded; the proxy is left clear.
fn kill_after_pages(bucket: &Bucket, mirror: &std::path::Path, proxy: &Proxy, pages: usize) {
    let slow = std::sync::Arc::new(|| std::thread::sleep(std::time::Duration::from_secs(1)));
    proxy.add(Rule::listing(Fault::HookBefore(slow)));
    proxy.clear();
    let serial = ["--list-workers", "1"];
    let mut child = support::prefetch_command(&bucket.name, mirror, &proxy.endpoint(), &serial)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The next page is asked for once the one before is recorded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while proxy.requests().iter().filter(|r| r.is_list()).count() < pages + 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            proxy.requests()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let journals = fs::read_dir(mirror.join(".s3mirrorfs/listing"))
        .unwrap()
        .count();
    assert_eq!(journals, 1, "the listing's progress is kept");
    proxy.clear_rules();
    proxy.clear();
}

#[test]
fn a_resumed_listing_prunes_nothing_and_the_next_run_does() {
    let (bucket, proxy, tmp) = empty_keys("resumeprune", 1100);
    let mirror = tmp.path().join("mirror");
    let (output, _) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    // Deleted from the part the stopped run lists, it is missing from the
    // resumed listing; so would be a key deleted and created again since.
    bucket.delete("p/k00001");
    kill_after_pages(&bucket, &mirror, &proxy, 1);
    let args = ["--list-workers", "1", "--prune"];
    let (output, resumed) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &args);
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    assert!(log.contains("going on with an earlier listing"), "{log}");
    assert_eq!(resumed["pruned"], 0, "{resumed}");
    assert_eq!(resumed["deleted"], 0, "{resumed}");
    assert!(mirror.join("p/k00001").exists(), "kept until a new listing");
    let (output, next) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &args);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(next["pruned"], 1, "{next}");
    assert!(!mirror.join("p/k00001").exists());
}

#[test]
fn a_listing_killed_half_way_goes_on_where_it_stopped() {
    let (bucket, proxy, tmp) = empty_keys("listresume", 2100);
    let mirror = tmp.path().join("mirror");
    let serial = ["--list-workers", "1"];
    kill_after_pages(&bucket, &mirror, &proxy, 2);
    let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &serial);
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    assert_eq!(summary["listed"], 2100, "{summary}");
    // What the killed run downloaded while it listed is current now.
    let settled = summary["downloaded"].as_u64().unwrap() + summary["up_to_date"].as_u64().unwrap();
    assert_eq!(settled, 2100, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert!(log.contains("going on with an earlier listing"), "{log}");
    let lists: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.is_list())
        .collect();
    assert_eq!(lists.len(), 1, "only the page not listed yet: {lists:?}");
    assert!(
        lists[0].target.contains("start-after=p%2Fk01999"),
        "{lists:?}"
    );
    let journals = fs::read_dir(mirror.join(".s3mirrorfs/listing"))
        .unwrap()
        .count();
    assert_eq!(journals, 0, "a finished listing drops its journal");
}

#[test]
fn new_objects_are_downloaded_while_the_listing_goes_on() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    let bucket = Bucket::create("pipeline");
    let objects: Vec<(String, Vec<u8>)> = ["a", "b"]
        .iter()
        .flat_map(|dir| (0..10).map(move |i| (format!("{dir}/k{i:02}"), vec![i as u8; 100])))
        .collect();
    bucket.put_many(&objects);
    let proxy = Arc::new(Proxy::start(moto_port()));
    // The listing of b/ waits until a download of a key of a/ has started (or
    // 20 s): it ends only after that if downloads start during the listing.
    let downloaded_first = Arc::new(AtomicBool::new(false));
    let (seen, flag) = (Arc::clone(&proxy), Arc::clone(&downloaded_first));
    let hold_b = Arc::new(move || {
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            let requests = seen.requests();
            if requests.iter().any(|r| {
                (0..10).any(|i| r.is_get_of(&format!("k{i:02}")) && r.target.contains("/a/"))
            }) {
                flag.store(true, Ordering::SeqCst);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    proxy.add(Rule::matching("prefix=b%2F", Fault::HookBefore(hold_b)).first(1));
    let tmp = tempfile::tempdir().unwrap();
    let mirror = tmp.path().join("mirror");
    let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        downloaded_first.load(Ordering::SeqCst),
        "a download started before the listing of b/ was answered"
    );
    for (key, data) in &objects {
        assert_eq!(&fs::read(mirror.join(key)).unwrap(), data, "{key}");
    }
    // Each key counts once, as downloaded, however it was fetched.
    assert_eq!(summary["downloaded"], 20, "{summary}");
    assert_eq!(summary["up_to_date"], 0, "{summary}");
    let gets = proxy
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && !r.is_list())
        .count();
    assert_eq!(gets, 20, "one GET an object");
    // A second run finds every copy current and downloads nothing.
    let (output, again) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(again["up_to_date"], 20, "{again}");
    assert_eq!(again["downloaded"], 0, "{again}");
}
