//! History, point-in-time restore and the mass change guard, against a real
//! S3-compatible server (moto on 127.0.0.1) and, for the mount, the kernel.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use s3mirrorfs::mirror::read_record;
use serde_json::Value;
use support::admin::{admin_command, run_json};
use support::mount::Mount;
use support::{Bucket, data, endpoint, prefetch, prefetch_command, s3mirrorfs, stderr};

type Objects = BTreeMap<String, Vec<u8>>;

fn fill(bucket: &Bucket, objects: &Objects) {
    for (key, body) in objects {
        bucket.put(key, body);
    }
}

/// Every file of the key tree (history and state aside) with its bytes.
fn key_tree(mirror: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![mirror.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().is_some_and(|n| n == ".s3mirrorfs") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(mirror).unwrap().to_path_buf();
                files.insert(rel, fs::read(&path).unwrap());
            }
        }
    }
    files
}

fn history(mirror: &Path, key: &str) -> (std::process::Output, Value) {
    let mut command = s3mirrorfs();
    command.args(["history", key, "--mirror-dir"]).arg(mirror);
    run_json(&mut command)
}

/// The bytes of each version `history KEY --json` lists, newest first.
fn version_bytes(mirror: &Path, report: &Value) -> Vec<Vec<u8>> {
    report["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| fs::read(mirror.join(v["path"].as_str().unwrap())).unwrap())
        .collect()
}

fn rfc3339_now() -> String {
    s3mirrorfs::utc::rfc3339(SystemTime::now())
}

fn restore(target: &str, mirror: &Path, extra: &[&str]) -> (std::process::Output, Value) {
    let mut args = vec!["restore", target, "--mirror-dir", mirror.to_str().unwrap()];
    args.extend_from_slice(extra);
    run_json(&mut admin_command(&args, &endpoint()))
}

fn bucket_contents(bucket: &Bucket) -> Objects {
    bucket
        .keys()
        .into_iter()
        .map(|k| (k.clone(), bucket.get(&k)))
        .collect()
}

#[test]
fn replaced_and_deleted_objects_are_kept_and_restored_as_of_a_time() {
    let bucket = Bucket::create("hist");
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("m");
    let old: Objects = (0..12)
        .map(|i| {
            (
                format!("photos/{i:02}.jpg"),
                data(i, 2000 + 100 * i as usize),
            )
        })
        .chain([("x/../renamed.jpg".to_string(), data(50, 700))])
        .collect();
    fill(&bucket, &old);
    let (out, first) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(first["downloaded"], 13);
    std::thread::sleep(Duration::from_millis(1100));
    let between = rfc3339_now();
    std::thread::sleep(Duration::from_millis(1100));

    // Same size, other size, a renamed key; two deletions.
    bucket.put("photos/00.jpg", &data(100, 2000));
    bucket.put("photos/01.jpg", &data(101, 5));
    bucket.put("x/../renamed.jpg", &data(150, 900));
    bucket.delete("photos/02.jpg");
    bucket.delete("photos/03.jpg");
    let (out, second) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        (second["replaced"].as_u64(), second["deleted"].as_u64()),
        (Some(3), Some(2))
    );
    // Without --prune the copies of deleted keys stay where they are.
    assert_eq!(
        fs::read(mirror.join("photos/02.jpg")).unwrap(),
        old["photos/02.jpg"]
    );

    for key in ["photos/00.jpg", "photos/01.jpg", "x/../renamed.jpg"] {
        let (out, report) = history(&mirror, key);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(report["key"], key);
        let versions = report["versions"].as_array().unwrap();
        assert_eq!(versions.len(), 2, "{report}");
        assert_eq!(versions[0]["current"], true);
        assert!(versions[0]["replaced_at"].is_null());
        assert_eq!(versions[1]["current"], false);
        assert!(versions[1]["replaced_at"].as_str().unwrap() > between.as_str());
        assert_eq!(versions[1]["size"], old[key].len());
        let bytes = version_bytes(&mirror, &report);
        assert_eq!(bytes[0], bucket.get(key));
        assert_eq!(bytes[1], old[key], "the old version is byte-identical");
        let md5 = format!("{:x}", md5::Md5::digest(&old[key]));
        assert_eq!(versions[1]["md5"], md5);
        assert!(
            versions[1]["path"]
                .as_str()
                .unwrap()
                .starts_with(".s3mirrorfs/history/")
        );
    }
    let (_, deleted) = history(&mirror, "photos/02.jpg");
    assert!(
        deleted["versions"][0]["deleted_at"].is_string(),
        "{deleted}"
    );

    // Pruning moves the copies of deleted keys into history.
    let (out, third) = prefetch(&bucket.name, &mirror, &endpoint(), &["--prune"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(third["pruned"], 2);
    assert!(!mirror.join("photos/02.jpg").exists());
    let (_, pruned) = history(&mirror, "photos/02.jpg");
    assert_eq!(
        version_bytes(&mirror, &pruned),
        vec![old["photos/02.jpg"].clone()]
    );

    // The bucket as it was between the runs, into a fresh bucket.
    let dest = Bucket::create("hist-dest");
    let (out, report) = restore(&dest.name, &mirror, &["--as-of", &between]);
    assert!(out.status.success(), "{}\n{report}", stderr(&out));
    assert_eq!(bucket_contents(&dest), old);
    // Without --as-of, the bucket as it is now (the kept copies of deleted keys aside).
    let now_dest = Bucket::create("hist-now");
    let (out, _) = restore(&now_dest.name, &mirror, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(bucket_contents(&now_dest), bucket_contents(&bucket));

    // status counts the versions; --keep-history 0 keeps nothing.
    let (_, status) = run_json(s3mirrorfs().args(["status", "--mirror-dir"]).arg(&mirror));
    assert_eq!(status["history"]["versions"], 5, "{status}");
    let (out, last) = prefetch(&bucket.name, &mirror, &endpoint(), &["--keep-history", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(last["expired_versions"], 5);
    let (_, status) = run_json(s3mirrorfs().args(["status", "--mirror-dir"]).arg(&mirror));
    assert_eq!(status["history"]["versions"], 0, "{status}");
}

use md5::Digest as _;

/// A bucket of 20 keys (`k00`..`k19`, `data(i, 300)`) mirrored into `m` in the
/// returned directory: the start of the mass change guard's tests.
fn twenty_mirrored(tag: &str) -> (Bucket, tempfile::TempDir) {
    let bucket = Bucket::create(tag);
    let dir = tempfile::tempdir().unwrap();
    let old: Objects = (0..20)
        .map(|i| (format!("k{i:02}"), data(i, 300)))
        .collect();
    fill(&bucket, &old);
    let (out, _) = prefetch(&bucket.name, &dir.path().join("m"), &endpoint(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    (bucket, dir)
}

#[test]
fn a_run_that_would_replace_most_of_the_mirror_is_refused() {
    let (bucket, dir) = twenty_mirrored("guard");
    let mirror = dir.path().join("m");
    let before = key_tree(&mirror);
    for i in 0..16 {
        bucket.put(&format!("k{i:02}"), &data(1000 + i, 300));
    }
    let (out, refused) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let error = refused["error"].as_str().unwrap();
    assert!(error.contains("16") && error.contains("20"), "{error}");
    assert!(error.contains("--max-change"), "{error}");
    assert!(stderr(&out).contains("--max-change"));
    assert_eq!(key_tree(&mirror), before, "the mirror is unchanged");
    assert_eq!(refused["downloaded"], 0);

    // Deletions count too, with --prune.
    let (out, _) = prefetch(&bucket.name, &mirror, &endpoint(), &["--max-change", "90"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for i in 0..12 {
        bucket.delete(&format!("k{i:02}"));
    }
    let (out, refused) = prefetch(&bucket.name, &mirror, &endpoint(), &["--prune"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        refused["error"].as_str().unwrap().contains("remove 12"),
        "{refused}"
    );
    assert!(mirror.join("k00").exists());
    let (out, passed) = prefetch(
        &bucket.name,
        &mirror,
        &endpoint(),
        &["--prune", "--max-change", "100"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(passed["pruned"], 12);
    // A bad value is a clear error.
    let out = prefetch_command(&bucket.name, &mirror, &endpoint(), &["--max-change", "101"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--max-change"), "{}", stderr(&out));
}

/// New objects may be fetched while the listing goes on; they replace nothing,
/// and must not count among the copies the guard weighs the changes against.
#[test]
fn a_bucket_emptied_and_filled_with_new_keys_is_refused_its_prune() {
    let (bucket, dir) = twenty_mirrored("guard-new");
    let mirror = dir.path().join("m");
    for i in 0..12 {
        bucket.delete(&format!("k{i:02}"));
    }
    let new: Objects = (0..60)
        .map(|i| (format!("n{i:02}"), data(2000 + i, 300)))
        .collect();
    fill(&bucket, &new);
    let (out, refused) = prefetch(&bucket.name, &mirror, &endpoint(), &["--prune"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let error = refused["error"].as_str().unwrap();
    assert!(error.contains("remove 12 of the 20 copies"), "{error}");
    assert_eq!(refused["pruned"], 0, "{refused}");
    for i in 0..20 {
        let copy = mirror.join(format!("k{i:02}"));
        assert_eq!(fs::read(&copy).unwrap(), data(i, 300), "{copy:?}");
    }
    // What it fetched is new and whole, and counted.
    let downloaded = refused["downloaded"].as_u64().unwrap();
    let fetched: Vec<_> = (0..60)
        .filter(|i| mirror.join(format!("n{i:02}")).exists())
        .collect();
    assert_eq!(fetched.len() as u64, downloaded, "{refused}");
    for i in fetched {
        assert_eq!(
            fs::read(mirror.join(format!("n{i:02}"))).unwrap(),
            data(2000 + i, 300)
        );
    }
}

#[test]
fn a_file_the_mirror_did_not_write_is_moved_into_history_not_destroyed() {
    let bucket = Bucket::create("own");
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("m");
    bucket.put("notes.txt", b"from s3");
    fs::create_dir_all(&mirror).unwrap();
    fs::write(mirror.join("notes.txt"), b"my own notes").unwrap();
    let (out, _) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("moved into history"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read(mirror.join("notes.txt")).unwrap(), b"from s3");
    let (_, report) = history(&mirror, "notes.txt");
    assert_eq!(version_bytes(&mirror, &report)[1], b"my own notes");
    assert_eq!(report["versions"][1]["unrecorded"], true);
    // Expiry never takes it.
    let (out, _) = prefetch(&bucket.name, &mirror, &endpoint(), &["--keep-history", "0"]);
    assert!(out.status.success());
    let (_, report) = history(&mirror, "notes.txt");
    assert_eq!(report["versions"].as_array().unwrap().len(), 2);
}

#[test]
fn history_of_an_unknown_key_is_exit_1() {
    let bucket = Bucket::create("unknown");
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("m");
    bucket.put("a", b"a");
    let (out, _) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert!(out.status.success());
    let out = s3mirrorfs()
        .args(["history", "nope"])
        .arg("--mirror-dir")
        .arg(&mirror)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("nope"), "{}", stderr(&out));
    let out = s3mirrorfs()
        .args(["restore", "b", "--as-of", "yesterday", "--mirror-dir"])
        .arg(&mirror)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("RFC 3339"), "{}", stderr(&out));
}

#[test]
fn a_mirror_copied_without_extended_attributes_still_restores_every_key() {
    let bucket = Bucket::create("noxattr");
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("m");
    let objects: Objects = [
        ("a.jpg", data(1, 1000)),
        ("dir/b.jpg", data(2, 3000)),
        ("x/../escape.jpg", data(3, 500)),
        ("//twice", data(4, 10)),
        ("empty", Vec::new()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    fill(&bucket, &objects);
    bucket.put_multipart("big.bin", &data(5, 6 << 20), 5 << 20);
    let (out, _) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let copy = dir.path().join("copy");
    let cp = std::process::Command::new("cp")
        .args(["-r", "--no-preserve=all"])
        .arg(&mirror)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(cp.success());
    assert!(
        read_record(&copy.join("a.jpg")).is_none(),
        "the copy has no xattrs"
    );
    let dest = Bucket::create("noxattr-dest");
    let (out, report) = restore(&dest.name, &copy, &[]);
    assert!(out.status.success(), "{}\n{report}", stderr(&out));
    assert_eq!(bucket_contents(&dest), bucket_contents(&bucket));

    // A prefetch into the copy finds every copy vouched for by the index: nothing
    // is fetched again, nothing is taken for a file of the user's.
    let (out, summary) = prefetch(&bucket.name, &copy, &endpoint(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(summary["downloaded"], 0, "{summary}");
    assert_eq!(summary["up_to_date"], 6);
    assert!(
        read_record(&copy.join("a.jpg")).is_some(),
        "the record is back"
    );
    assert!(!copy.join(".s3mirrorfs/history").exists());
    // A file whose bytes no longer match the index is not vouched for: it is
    // fetched again, and kept in history as a file the mirror did not write.
    let stripped = copy.join("dir/b.jpg");
    fs::remove_file(&stripped).unwrap();
    fs::write(&stripped, data(9, 3000)).unwrap();
    let mirror = copy;
    let (out, summary) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(summary["downloaded"], 1, "{summary}");
    let (_, report) = history(&mirror, "dir/b.jpg");
    assert_eq!(version_bytes(&mirror, &report)[1], data(9, 3000));
}

#[test]
fn the_mount_keeps_the_copy_it_replaces() {
    let bucket = Bucket::create("mnt-hist");
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("m");
    let old = data(7, 4000);
    bucket.put("pic.jpg", &old);
    let mount = Mount::start(
        &bucket.name,
        &dir.path().join("mnt"),
        &mirror,
        &endpoint(),
        &["--metadata-ttl", "1"],
    );
    assert_eq!(fs::read(mount.dir.join("pic.jpg")).unwrap(), old);
    let new = data(8, 5000);
    bucket.put("pic.jpg", &new);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(fs::read(mount.dir.join("pic.jpg")).unwrap(), new);
    drop(mount);
    let (_, report) = history(&mirror, "pic.jpg");
    assert_eq!(version_bytes(&mirror, &report), vec![new, old]);
}
