//! kill -9 at random moments of a prefetch never leaves a partial or mismatched file
//! under a final name, never loses a version the mirror held (a replaced copy is
//! in history), and the next run completes the mirror exactly.

mod support;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use s3mirrorfs::mirror::history::read_all_histories;
use s3mirrorfs::mirror::read_record;
use s3mirrorfs::sys::beneath::Dir;
use support::{Bucket, data, endpoint, prefetch, prefetch_command, stderr};

/// Every file in the mirror that is under a final name (not a temp file).
fn final_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path == root.join(".s3mirrorfs/tmp") {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else if !path.starts_with(root.join(".s3mirrorfs"))
                || path.starts_with(root.join(".s3mirrorfs/renamed"))
            {
                out.push(path);
            }
        }
    }
    out
}

type Versions = HashMap<(String, String), Vec<u8>>;

/// Every (key, ETag) the mirror holds: its current copies and the versions kept
/// in history, each checked byte for byte against what was uploaded.
fn held(mirror: &Path, versions: &Versions, trial: usize) -> HashSet<(String, String)> {
    let mut held = HashSet::new();
    for history in read_all_histories(&Dir::open_root(mirror).unwrap()).unwrap() {
        for v in &history.versions {
            let id = (
                v.key.clone(),
                v.etag.clone().expect("every copy was recorded"),
            );
            let bytes = fs::read(mirror.join(history.path_of(v))).unwrap();
            assert!(
                versions.get(&id) == Some(&bytes),
                "trial {trial}: kept version {id:?} holds other bytes"
            );
            held.insert(id);
        }
    }
    for file in final_files(mirror) {
        if let Some(record) = read_record(&file) {
            held.insert((record.key.as_str().to_owned(), record.etag.to_string()));
        }
    }
    held
}

fn put(versions: &mut Versions, bucket: &Bucket, key: &str, bytes: Vec<u8>, multipart: bool) {
    let etag = if multipart {
        bucket.put_multipart(key, &bytes, 5 << 20)
    } else {
        bucket.put(key, &bytes)
    };
    versions.insert((key.to_string(), etag), bytes);
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn kill_9_at_random_points_never_exposes_a_partial_file() {
    let bucket = Bucket::create("crash");
    // (key, etag) -> bytes, for every version ever uploaded.
    let mut versions: Versions = HashMap::new();
    let mut objects = Vec::new();
    for i in 0..300u64 {
        objects.push((
            format!("small/{:02}/{i:04}.jpg", i % 10),
            data(i, 1000 + (i as usize * 97) % 20_000),
        ));
    }
    bucket.put_many(&objects);
    for (key, etag, _, _) in bucket.list() {
        let i: u64 = key[9..13].parse().unwrap();
        versions.insert((key, etag), data(i, 1000 + (i as usize * 97) % 20_000));
    }
    put(
        &mut versions,
        &bucket,
        "large/a.bin",
        data(1001, 24 << 20),
        false,
    );
    put(
        &mut versions,
        &bucket,
        "large/b.bin",
        data(1002, 17 << 20),
        true,
    );
    put(
        &mut versions,
        &bucket,
        "large/c.bin",
        data(1003, 9 << 20),
        false,
    );

    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill -9 trials, seed {seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("m");
    let check = |versions: &Versions, trial: usize| {
        for file in final_files(&mirror) {
            let record = read_record(&file)
                .unwrap_or_else(|| panic!("trial {trial}: {} has no record", file.display()));
            let expected = versions
                .get(&(record.key.as_str().to_owned(), record.etag.to_string()))
                .unwrap_or_else(|| {
                    panic!(
                        "trial {trial}: {} records an unknown version",
                        file.display()
                    )
                });
            let bytes = fs::read(&file).unwrap();
            assert!(
                bytes == *expected,
                "trial {trial}: {} holds other bytes than its record says",
                file.display()
            );
            assert_eq!(record.size, bytes.len() as u64);
        }
    };

    // Every version the mirror ever held must stay held: current or in history.
    let mut ever_held: HashSet<(String, String)> = HashSet::new();
    let mut no_loss = |versions: &Versions, trial: usize| {
        let now = held(&mirror, versions, trial);
        let lost: Vec<_> = ever_held.difference(&now).collect();
        assert!(lost.is_empty(), "trial {trial}: versions lost: {lost:?}");
        ever_held.extend(now);
    };
    let trials: usize = std::env::var("CRASH_TRIALS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(12);
    for trial in 0..trials {
        if trial >= 6 {
            // Change objects between runs, so kills also land while copies are replaced.
            let i = trial as u64;
            put(
                &mut versions,
                &bucket,
                "large/a.bin",
                data(2000 + i, 24 << 20),
                false,
            );
            put(
                &mut versions,
                &bucket,
                "large/b.bin",
                data(2100 + i, 17 << 20),
                true,
            );
            for j in 0..10 {
                let key = format!("small/0{j}/00{}{j}.jpg", i % 10);
                put(
                    &mut versions,
                    &bucket,
                    &key,
                    data(3000 + i * 10 + j, 5000),
                    false,
                );
            }
        }
        let mut child = prefetch_command(
            &bucket.name,
            &mirror,
            &endpoint(),
            &["--concurrency", "8", "--quiet"],
        )
        .spawn()
        .unwrap();
        std::thread::sleep(Duration::from_millis(20 + rng.below(1200)));
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait();
        check(&versions, trial);
        no_loss(&versions, trial);
        let temps = fs::read_dir(mirror.join(".s3mirrorfs/tmp")).map_or(0, |d| d.count());
        eprintln!(
            "trial {trial}: {} files in place, {temps} temp files left",
            final_files(&mirror).len()
        );
    }

    let (output, summary) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary["failed"], 0);
    check(&versions, 99);
    no_loss(&versions, 99);
    let listed = bucket.list();
    assert_eq!(summary["listed"], listed.len());
    for (key, etag, size, _) in &listed {
        let record = read_record(&mirror.join(key)).unwrap_or_else(|| panic!("{key} is mirrored"));
        assert_eq!(
            (record.etag.as_str(), record.size),
            (etag.as_str(), *size),
            "{key} is at the current version"
        );
    }
    assert_eq!(
        fs::read_dir(mirror.join(".s3mirrorfs/tmp"))
            .unwrap()
            .count(),
        0,
        "stale temp files are cleaned"
    );
    // And the run after that has nothing left to do.
    let (_, summary) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert_eq!(summary["up_to_date"], listed.len());
}
