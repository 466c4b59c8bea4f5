//! `s3mirrorfs prefetch --inventory` against a real S3-compatible server (moto on
//! 127.0.0.1), with reports built in S3 Inventory's own format: a manifest.json
//! and gzip CSV data files in an inventory bucket, keys URL-encoded as S3 does.

mod support;

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use s3mirrorfs::mirror::read_record;
use s3mirrorfs::utc;
use serde_json::Value;
use support::proxy::Proxy;
use support::{Bucket, data, endpoint, moto_port, prefetch, stderr};

/// A key as S3 Inventory writes it in CSV: form URL encoding, as Java's
/// URLEncoder does (letters, digits and `.-*_` stay, a space is `+`, every
/// other byte of the UTF-8 is `%XX`).
fn inventory_encode(key: &str) -> String {
    let mut out = String::new();
    for byte in key.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// A CSV field in double quotes, as S3 writes every field.
fn quoted(field: &str) -> String {
    format!("\"{}\"", field.replace('"', "\"\""))
}

fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(text.as_bytes()).unwrap();
    encoder.finish().unwrap()
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest;
    format!("{:x}", md5::Md5::digest(bytes))
}

const SCHEMA: &str = "Bucket, Key, Size, LastModifiedDate, ETag, StorageClass, IsMultipartUploaded";

/// One CSV row per object of `source` as S3 lists it now, for `keys` only.
fn rows_of(source: &Bucket, keys: &[&str]) -> Vec<String> {
    source
        .list()
        .into_iter()
        .filter(|(key, ..)| keys.contains(&key.as_str()))
        .map(|(key, etag, size, mtime)| {
            let time = utc::rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(mtime as u64));
            let time = time.replace('Z', ".000Z");
            [
                source.name.as_str(),
                &inventory_encode(&key),
                &size.to_string(),
                &time,
                etag.trim_matches('"'),
                "STANDARD",
                "false",
            ]
            .iter()
            .map(|f| quoted(f))
            .collect::<Vec<_>>()
            .join(",")
        })
        .collect()
}

/// A report of `source_name` in `inventory`, delivered at `dir` (a
/// `YYYY-MM-DDTHH-MMZ` name) and created at `created`: `files` data files of
/// CSV rows. `bad_md5` gives data file N a checksum that does not match it.
/// Returns the manifest's key.
fn deliver(
    inventory: &Bucket,
    source_name: &str,
    dir: &str,
    created: SystemTime,
    files: &[Vec<String>],
    bad_md5: Option<usize>,
) -> String {
    let base = format!("reports/{source_name}/daily");
    let mut listed = Vec::new();
    for (n, rows) in files.iter().enumerate() {
        let key = format!("{base}/data/{dir}-{n}.csv.gz");
        let mut text = rows.join("\n");
        text.push('\n');
        let bytes = gzip(&text);
        inventory.put(&key, &bytes);
        let md5 = match bad_md5 {
            Some(bad) if bad == n => md5_hex(b"something else"),
            _ => md5_hex(&bytes),
        };
        listed.push(serde_json::json!({"key": key, "size": bytes.len(), "MD5checksum": md5}));
    }
    let manifest = serde_json::json!({
        "sourceBucket": source_name,
        "destinationBucket": format!("arn:aws:s3:::{}", inventory.name),
        "version": "2016-11-30",
        "creationTimestamp": utc::unix_ms(created).to_string(),
        "fileFormat": "CSV",
        "fileSchema": SCHEMA,
        "files": listed,
    });
    let key = format!("{base}/{dir}/manifest.json");
    inventory.put(&key, manifest.to_string().as_bytes());
    inventory.put(&format!("{base}/{dir}/manifest.checksum"), b"unused");
    key
}

/// The report's URL for `--inventory`.
fn url(inventory: &Bucket, key: &str) -> String {
    format!("s3://{}/{key}", inventory.name)
}

fn keys_of(summary: &Value, field: &str) -> Vec<String> {
    summary[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["key"].as_str().unwrap().to_string())
        .collect()
}

/// The mirror holds `key` with exactly `bytes` and its record.
fn assert_copy(mirror: &Path, key: &str, bytes: &[u8]) {
    let path = mirror.join(key);
    let found = fs::read(&path).unwrap_or_else(|e| panic!("{key:?}: {e}"));
    assert!(found == bytes, "content of {key:?}");
    let record = read_record(&path).unwrap_or_else(|| panic!("record of {key:?}"));
    assert_eq!(record.key.as_str(), key);
    assert_eq!(record.md5.as_deref(), Some(md5_hex(bytes).as_str()));
}

#[test]
fn a_report_mirrors_every_object_without_listing_the_bucket() {
    let source = Bucket::create("inv-src");
    let inventory = Bucket::create("inv-reports");
    let objects: HashMap<&str, Vec<u8>> = [
        ("photos/été 2024/a b.jpg", data(1, 70_000)),
        ("docs/a,b \"quoted\".txt", data(2, 300)),
        ("math/1+1=2.txt", data(3, 10)),
        ("plain.txt", data(4, 1)),
        ("empty", Vec::new()),
    ]
    .into_iter()
    .collect();
    for (key, bytes) in &objects {
        source.put(key, bytes);
    }
    let keys: Vec<&str> = objects.keys().copied().collect();
    let mut rows = rows_of(&source, &keys);
    assert_eq!(rows.len(), objects.len());
    // A row of another bucket sharing the report is no object of this one.
    rows.push(format!(
        "\"another-bucket\",\"plain.txt\",\"5\",\"2026-01-01T00:00:00.000Z\",\"{}\",\"STANDARD\",\"false\"",
        md5_hex(b"other")
    ));
    let now = SystemTime::now();
    let (first, second) = rows.split_at(3);
    deliver(
        &inventory,
        &source.name,
        "2026-01-01T00-00Z",
        now - Duration::from_secs(86_400 * 30),
        &[first.to_vec()],
        None,
    );
    deliver(
        &inventory,
        &source.name,
        "2099-01-01T00-00Z",
        now - Duration::from_secs(3600),
        &[first.to_vec(), second.to_vec()],
        None,
    );

    let proxy = Proxy::start(moto_port());
    let mirror = tempfile::tempdir().unwrap();
    // The prefix form finds the newest report (the other one, a month old,
    // would be refused).
    let report = url(&inventory, &format!("reports/{}/daily/", source.name));
    let (output, summary) = prefetch(
        &source.name,
        mirror.path(),
        &proxy.endpoint(),
        &["--inventory", &report],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary["source"], "inventory");
    assert!(
        summary["inventory_manifest"]
            .as_str()
            .unwrap()
            .ends_with("/2099-01-01T00-00Z/manifest.json"),
        "{summary}"
    );
    let created = summary["inventory_created"].as_str().unwrap();
    assert!(utc::parse_rfc3339(created).is_ok(), "{created}");
    assert_eq!(summary["listed"], objects.len() as u64);
    assert_eq!(summary["downloaded"], objects.len() as u64);
    assert_eq!(summary["failed"], 0);
    for (key, bytes) in &objects {
        assert_copy(mirror.path(), key, bytes);
    }
    let lists_of_source: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.is_list() && r.target.starts_with(&format!("/{}?", source.name)))
        .collect();
    assert!(
        lists_of_source.is_empty(),
        "the source bucket was listed: {lists_of_source:?}"
    );

    // A listing run agrees with the report: nothing to do.
    let (output, summary) = prefetch(&source.name, mirror.path(), &proxy.endpoint(), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary["source"], "listing");
    assert!(summary.get("inventory_created").is_none(), "{summary}");
    assert_eq!(summary["up_to_date"], objects.len() as u64);
}

#[test]
fn a_data_file_that_does_not_match_its_manifest_fails_before_anything_changes() {
    let source = Bucket::create("inv-src");
    let inventory = Bucket::create("inv-reports");
    source.put("kept.txt", b"first version");
    source.put("deleted.txt", b"will be deleted");
    let proxy = Proxy::start(moto_port());
    let mirror = tempfile::tempdir().unwrap();
    let (output, _) = prefetch(&source.name, mirror.path(), &proxy.endpoint(), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    source.put("kept.txt", b"second version");
    source.put("new.txt", b"new");
    source.delete("deleted.txt");
    // Copies old enough for a prune against the report.
    let old = SystemTime::now() - Duration::from_secs(86_400 * 3);
    for key in ["kept.txt", "deleted.txt"] {
        let file = fs::File::options()
            .write(true)
            .open(mirror.path().join(key))
            .unwrap();
        file.set_modified(old).unwrap();
    }
    let manifest = deliver(
        &inventory,
        &source.name,
        "2026-12-03T00-00Z",
        SystemTime::now(),
        &[
            rows_of(&source, &["kept.txt"]),
            rows_of(&source, &["new.txt"]),
        ],
        Some(1),
    );

    proxy.clear();
    let (output, summary) = prefetch(
        &source.name,
        mirror.path(),
        &proxy.endpoint(),
        &["--inventory", &url(&inventory, &manifest), "--prune"],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let bad_file = format!(
        "s3://{}/reports/{}/daily/data/2026-12-03T00-00Z-1.csv.gz",
        inventory.name, source.name
    );
    let message = stderr(&output);
    assert!(message.contains(&bad_file), "{message}");
    assert!(message.contains("MD5checksum"), "{message}");
    assert!(summary["error"].as_str().unwrap().contains(&bad_file));
    assert_eq!(
        (&summary["downloaded"], &summary["pruned"]),
        (&0.into(), &0.into())
    );
    assert_copy(mirror.path(), "kept.txt", b"first version");
    assert_copy(mirror.path(), "deleted.txt", b"will be deleted");
    assert!(!mirror.path().join("new.txt").exists());
    let source_requests: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.target.starts_with(&format!("/{}", source.name)))
        .collect();
    assert!(
        source_requests.is_empty(),
        "the source bucket was asked: {source_requests:?}"
    );
}

#[test]
fn reports_of_another_bucket_or_too_old_are_refused() {
    let source = Bucket::create("inv-src");
    let inventory = Bucket::create("inv-reports");
    source.put("a.txt", b"a");
    let rows = rows_of(&source, &["a.txt"]);
    let other = deliver(
        &inventory,
        "some-other-bucket",
        "2026-12-03T00-00Z",
        SystemTime::now(),
        std::slice::from_ref(&rows),
        None,
    );
    let old = deliver(
        &inventory,
        &source.name,
        "2026-12-03T00-00Z",
        SystemTime::now() - Duration::from_secs(8 * 86_400),
        &[rows],
        None,
    );
    let mirror = tempfile::tempdir().unwrap();
    for (manifest, expected) in [
        (other, "the report is of bucket \"some-other-bucket\""),
        (old, "more than 7 days ago"),
    ] {
        let (output, summary) = prefetch(
            &source.name,
            mirror.path(),
            &endpoint(),
            &["--inventory", &url(&inventory, &manifest)],
        );
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        assert!(stderr(&output).contains(expected), "{}", stderr(&output));
        assert_eq!(summary["downloaded"], 0);
        assert!(!mirror.path().join("a.txt").exists());
    }
}

#[test]
fn prune_against_a_report_keeps_copies_newer_than_the_report() {
    let source = Bucket::create("inv-src");
    let inventory = Bucket::create("inv-reports");
    source.put("stays.txt", b"stays");
    source.put("deleted-long-ago.txt", b"old");
    let mirror = tempfile::tempdir().unwrap();
    let (output, _) = prefetch(&source.name, mirror.path(), &endpoint(), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    // This object dates from well before the report, and is deleted before it.
    let file = fs::File::options()
        .write(true)
        .open(mirror.path().join("deleted-long-ago.txt"))
        .unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(3 * 86_400))
        .unwrap();
    source.delete("deleted-long-ago.txt");
    source.put("deleted-after-the-report.txt", b"short-lived");
    let created = SystemTime::now() - Duration::from_secs(600);
    let manifest = deliver(
        &inventory,
        &source.name,
        "2026-12-03T00-00Z",
        created,
        &[rows_of(
            &source,
            &["stays.txt", "deleted-after-the-report.txt"],
        )],
        None,
    );
    source.delete("deleted-after-the-report.txt");
    // Created after the report (the follower of event notifications mirrors such
    // objects as they come): the report cannot show it.
    source.put("created-after-the-report.txt", b"new");
    let (output, _) = prefetch(&source.name, mirror.path(), &endpoint(), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_copy(mirror.path(), "created-after-the-report.txt", b"new");

    let (output, summary) = prefetch(
        &source.name,
        mirror.path(),
        &endpoint(),
        &["--inventory", &url(&inventory, &manifest), "--prune"],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary["listed"], 2);
    // In the report but deleted since, before the mirror had it: not a failure.
    assert_eq!(
        (&summary["gone"], &summary["failed"]),
        (&1.into(), &0.into())
    );
    assert_eq!(keys_of(&summary, "pruned_files"), ["deleted-long-ago.txt"]);
    assert!(!mirror.path().join("deleted-long-ago.txt").exists());
    assert_copy(mirror.path(), "created-after-the-report.txt", b"new");
    assert_copy(mirror.path(), "stays.txt", b"stays");
}
