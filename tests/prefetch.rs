//! `s3mirrorfs prefetch` against a real S3-compatible server (moto on 127.0.0.1).

mod support;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use s3mirrorfs::mirror::read_record;
use serde_json::Value;
use support::proxy::Proxy;
use support::{Bucket, data, endpoint, moto_port, prefetch, stderr};

/// Where the summary says each renamed key went.
fn renamed_map(summary: &Value) -> HashMap<String, String> {
    summary["renamed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_string(),
                r["path"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Checks that the mirror holds every object of the bucket, byte for byte, with its
/// record, mtime and mode, and returns the number of objects checked.
fn assert_mirror_complete(
    bucket: &Bucket,
    mirror: &Path,
    expected: &HashMap<String, Vec<u8>>,
    summary: &Value,
) -> usize {
    let renamed = renamed_map(summary);
    let listed = bucket.list();
    for (key, etag, size, mtime) in &listed {
        if *size == 0 && key.ends_with('/') && !renamed.contains_key(key) {
            let dir = mirror.join(key.trim_end_matches('/'));
            assert!(dir.is_dir(), "directory marker {key:?}");
            continue;
        }
        let rel = renamed.get(key).cloned().unwrap_or_else(|| key.clone());
        let path = mirror.join(&rel);
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{key:?} at {rel:?}: {e}"));
        assert!(bytes == expected[key], "content of {key:?} at {rel:?}");
        let record = read_record(&path).unwrap_or_else(|| panic!("record of {key:?}"));
        assert_eq!(
            (record.key.as_str(), record.etag.as_str(), record.size),
            (key.as_str(), etag.as_str(), *size)
        );
        let md5 = {
            use md5::Digest;
            format!("{:x}", md5::Md5::digest(&expected[key]))
        };
        assert_eq!(record.md5.as_ref(), Some(&md5), "recorded MD5 of {key:?}");
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mtime(), *mtime, "mtime of {key:?}");
        assert_eq!(meta.permissions().mode() & 0o777, 0o640, "mode of {key:?}");
    }
    listed.len()
}

fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            out.extend(all_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn mirrors_a_bucket_and_a_rerun_makes_only_list_requests() {
    let bucket = Bucket::create("full");
    let mut expected = HashMap::new();
    let mut objects = Vec::new();
    for i in 0..2100u64 {
        let key = format!("img/{:02}/{i:05}.jpg", i % 7);
        objects.push((key, data(i, (i % 50) as usize * 37)));
    }
    objects.push(("empty".to_string(), Vec::new()));
    objects.push(("dir/empty-child".to_string(), Vec::new()));
    objects.push(("marker/".to_string(), Vec::new()));
    objects.push(("marker/nested/".to_string(), Vec::new()));
    bucket.put_many(&objects);
    expected.extend(objects);
    let big = data(99, 11 << 20);
    let etag = bucket.put_multipart("video/big.bin", &big, 5 << 20);
    assert!(etag.ends_with("-3\""), "multipart ETag {etag}");
    expected.insert("video/big.bin".to_string(), big);
    let small_single = data(100, 9 << 20);
    bucket.put("video/single.bin", &small_single);
    expected.insert("video/single.bin".to_string(), small_single);

    let proxy = Proxy::start(moto_port());
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("backup");
    let (out, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let n = expected.len() as u64;
    assert_eq!(summary["listed"], n);
    assert_eq!(summary["downloaded"], n);
    assert_eq!(summary["up_to_date"], 0);
    assert_eq!(summary["failed"], 0);
    assert_eq!(summary["pruned"], 0);
    assert_eq!(summary["renamed"].as_array().unwrap().len(), 0);
    let total: u64 = expected.values().map(|v| v.len() as u64).sum();
    assert_eq!(summary["bytes"], total);
    assert!(summary["seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(
        assert_mirror_complete(&bucket, &mirror, &expected, &summary),
        expected.len()
    );
    assert_eq!(
        fs::metadata(mirror.join("img/03")).unwrap().mode() & 0o777,
        0o750
    );
    assert!(mirror.join("marker/nested").is_dir());
    // The big objects came in ranged parts.
    let ranged = proxy
        .requests()
        .iter()
        .filter(|r| r.target.contains("video/"))
        .count();
    assert!(
        ranged >= 3,
        "large objects are fetched in parts ({ranged} GETs)"
    );
    // Nothing of the tool's outside its state directory, and no temp files left.
    let tmp = mirror.join(".s3mirrorfs/tmp");
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);

    proxy.clear();
    let serial = ["--list-workers", "1"];
    let (out, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &serial);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(summary["listed"], n);
    assert_eq!(summary["up_to_date"], n);
    assert_eq!(summary["downloaded"], 0);
    assert_eq!(summary["bytes"], 0);
    let requests = proxy.requests();
    assert!(
        requests.iter().all(|r| r.is_list()),
        "only LIST requests: {requests:?}"
    );
    assert_eq!(
        requests.len(),
        3,
        "2,106 keys take three pages, listed serially"
    );
}

/// Keys that cannot be paths and go to `.s3mirrorfs/renamed/`.
const RENAMED_KEYS: &[&str] = &[
    "../x",
    "dir/../../x",
    "/abs/x",
    "a//b",
    "./x",
    "x/./y",
    "x/..",
    "x/.",
    "..",
    ".s3mirrorfs",
    ".s3mirrorfs/lock",
    ".s3mirrorfs/tmp/x",
    ".s3mirrorfs/renamed/y",
    "photo",
    "nonempty-slash/",
];

/// Odd but valid keys, stored under their own name.
const VERBATIM_KEYS: &[&str] = &[
    "photo/1.jpg",
    "ctl\u{1}key",
    "tab\tkey",
    "caf\u{e9}",
    "cafe\u{301}",
    "a b+c",
    "deep/dir/file",
];

#[test]
fn hostile_keys_stay_inside_the_mirror_and_lose_nothing() {
    let bucket = Bucket::create("hostile");
    let long = "n".repeat(256);
    let keys: Vec<String> = RENAMED_KEYS
        .iter()
        .chain(VERBATIM_KEYS)
        .map(|k| k.to_string())
        .chain([long.clone(), format!("d/{long}/x")])
        .collect();
    let mut expected = HashMap::new();
    for (i, key) in keys.iter().enumerate() {
        let body = data(i as u64 + 1, 100 + i);
        bucket.put(key, &body);
        expected.insert(key.clone(), body);
    }
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("sandbox/backup");
    let (out, summary) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(summary["listed"], keys.len());
    assert_eq!(summary["downloaded"], keys.len());
    assert_mirror_complete(&bucket, &mirror, &expected, &summary);

    // Nothing escaped: the sandbox holds the mirror alone, and every file in the
    // mirror is either a verbatim key or in the renamed directory.
    let sandbox: Vec<_> = fs::read_dir(dir.path().join("sandbox"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(sandbox, vec![std::ffi::OsString::from("backup")]);
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

    let renamed = renamed_map(&summary);
    for key in RENAMED_KEYS.iter().copied().chain([long.as_str()]) {
        let path = renamed
            .get(key)
            .unwrap_or_else(|| panic!("{key:?} is listed in renamed"));
        assert!(
            path.starts_with(".s3mirrorfs/renamed/"),
            "{key:?} -> {path}"
        );
    }
    for &key in VERBATIM_KEYS {
        assert!(!renamed.contains_key(key), "{key:?} is stored verbatim");
        assert!(mirror.join(key).is_file(), "{key:?}");
    }
    let paths: std::collections::HashSet<_> = renamed.values().collect();
    assert_eq!(paths.len(), renamed.len(), "renamed paths are distinct");
    // The tool's own state is untouched by keys that name it.
    assert!(mirror.join(".s3mirrorfs/lock").metadata().unwrap().mode() & 0o777 == 0o600);
    for file in all_files(&mirror) {
        let rel = file
            .strip_prefix(&mirror)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        if rel.starts_with(".s3mirrorfs/") && !rel.starts_with(".s3mirrorfs/renamed/") {
            continue;
        }
        let record = read_record(&file).unwrap_or_else(|| panic!("{rel:?} has a record"));
        assert!(expected.contains_key(record.key.as_str()));
    }
    // Deterministic: a second mirror of the same bucket places everything alike.
    let again = dir.path().join("again");
    let (_, summary2) = prefetch(&bucket.name, &again, &endpoint(), &[]);
    assert_eq!(renamed_map(&summary2), renamed);
}

#[test]
fn changed_deleted_and_truncated_copies_are_fetched_again() {
    let bucket = Bucket::create("changes");
    bucket.put("same-size", b"aaaa");
    bucket.put("grows", b"1");
    bucket.put("local-deleted", b"keep me");
    bucket.put("local-truncated", b"full length");
    bucket.put("untouched", b"u");
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("m");
    let (out, _) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    bucket.put("same-size", b"bbbb");
    bucket.put("grows", b"12345");
    fs::remove_file(mirror.join("local-deleted")).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(mirror.join("local-truncated"))
        .unwrap()
        .set_len(3)
        .unwrap();
    let (out, summary) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(summary["downloaded"], 4);
    assert_eq!(summary["up_to_date"], 1);
    assert_eq!(fs::read(mirror.join("same-size")).unwrap(), b"bbbb");
    assert_eq!(fs::read(mirror.join("grows")).unwrap(), b"12345");
    assert_eq!(fs::read(mirror.join("local-deleted")).unwrap(), b"keep me");
    assert_eq!(
        fs::read(mirror.join("local-truncated")).unwrap(),
        b"full length"
    );
}

#[test]
fn deleted_objects_are_kept_unless_pruned() {
    let bucket = Bucket::create("prune");
    bucket.put("keep/a", b"a");
    bucket.put("gone/b", b"b");
    bucket.put("../gone", b"c");
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("m");
    let (_, first) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    let renamed_gone = renamed_map(&first)["../gone"].clone();
    fs::write(mirror.join("my-own-notes.txt"), b"not from S3").unwrap();
    bucket.delete("gone/b");
    bucket.delete("../gone");

    let (out, summary) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(summary["listed"], 1);
    assert_eq!(summary["pruned"], 0);
    assert_eq!(
        fs::read(mirror.join("gone/b")).unwrap(),
        b"b",
        "backup keeps deleted objects"
    );
    assert!(mirror.join(&renamed_gone).exists());

    let (out, summary) = prefetch(&bucket.name, &mirror, &endpoint(), &["--prune"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(summary["pruned"], 2);
    let mut pruned: Vec<_> = summary["pruned_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["key"].as_str().unwrap().to_string())
        .collect();
    pruned.sort();
    assert_eq!(pruned, vec!["../gone".to_string(), "gone/b".to_string()]);
    assert!(!mirror.join("gone/b").exists());
    assert!(!mirror.join(&renamed_gone).exists());
    assert_eq!(fs::read(mirror.join("keep/a")).unwrap(), b"a");
    assert_eq!(
        fs::read(mirror.join("my-own-notes.txt")).unwrap(),
        b"not from S3"
    );
}

#[test]
fn a_prefix_limits_the_run_and_keeps_full_keys() {
    let bucket = Bucket::create("prefix");
    bucket.put("photos/a.jpg", b"a");
    bucket.put("photos/sub/b.jpg", b"b");
    bucket.put("photos2/c.jpg", b"c");
    bucket.put("other/d.jpg", b"d");
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("m");
    let (out, summary) = prefetch(
        &format!("{}/photos", bucket.name),
        &mirror,
        &endpoint(),
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(summary["listed"], 2);
    assert_eq!(fs::read(mirror.join("photos/sub/b.jpg")).unwrap(), b"b");
    assert!(!mirror.join("photos2").exists() && !mirror.join("other").exists());
    // A whole-bucket run afterwards reuses what the prefix run fetched.
    let (_, summary) = prefetch(&bucket.name, &mirror, &endpoint(), &["--prune"]);
    assert_eq!(
        (
            summary["downloaded"].as_u64(),
            summary["up_to_date"].as_u64()
        ),
        (Some(2), Some(2))
    );
}

#[test]
fn a_file_that_becomes_a_prefix_moves_aside_without_loss() {
    let bucket = Bucket::create("conflict");
    bucket.put("photo", b"the file");
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("m");
    prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert_eq!(fs::read(mirror.join("photo")).unwrap(), b"the file");
    bucket.put("photo/1.jpg", b"child");
    let (out, summary) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let renamed = renamed_map(&summary);
    assert_eq!(
        fs::read(mirror.join(&renamed["photo"])).unwrap(),
        b"the file"
    );
    assert_eq!(fs::read(mirror.join("photo/1.jpg")).unwrap(), b"child");
    assert_eq!(summary["up_to_date"], 1, "the moved copy is still current");
    // The child is deleted, the object stays: the directory of kept copies keeps the name.
    bucket.delete("photo/1.jpg");
    let (out, summary) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(renamed_map(&summary)["photo"], renamed["photo"]);
    assert_eq!(summary["up_to_date"], 1);
}
