//! One reader must not hurt everyone, on a real FUSE mount through the
//! fault-injecting proxy in front of moto: a download its reader left stops and
//! leaves nothing behind, and reads the mirror can answer are served while
//! reads that wait on S3 hang.

mod support;

use std::fs;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use s3mirrorfs::mirror::read_record;
use support::faults::{Fault, Rule};
use support::mount::{ProxiedMount, sh_ok};
use support::{Bucket, data, temp_files};

/// Waits until the mirror holds a copy of `key` (with its record).
fn wait_mirrored(mirror: &Path, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while read_record(&mirror.join(key)).is_none() {
        assert!(Instant::now() < deadline, "{key} was never mirrored");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `work` on a thread of its own and gives its result, or `None` if it took
/// longer than `limit` (the thread is then left to finish on its own).
fn within<T: Send + 'static>(
    limit: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(work());
    });
    rx.recv_timeout(limit).ok()
}

#[test]
fn a_download_is_cancelled_when_its_only_reader_closes() {
    let bucket = Bucket::create("fcancel");
    let bytes = data(31, 64 << 20);
    bucket.put("huge/file", &bytes);
    // About 1.3 MB/s a request: the whole object would take several seconds.
    let drip = Fault::Drip {
        bytes: 64 << 10,
        every: Duration::from_millis(50),
    };
    let mount = ProxiedMount::start(&bucket.name, vec![Rule::object("huge/file", drip)], &[]);
    let (proxy, mirror) = (&mount.proxy, &mount.mirror);
    let path = mount.path("huge/file");
    let first = sh_ok(&format!("head -c1 '{}' | od -An -tu1", path.display()));
    assert_eq!(
        first.trim(),
        bytes[0].to_string(),
        "the reader got its byte"
    );

    // The reader is gone: the transfer stops.
    std::thread::sleep(Duration::from_secs(2));
    let stopped = proxy.bytes_served();
    std::thread::sleep(Duration::from_secs(2));
    let later = proxy.bytes_served();
    eprintln!("served {stopped} bytes when the reader left, {later} two seconds later");
    assert_eq!(later, stopped, "no byte is fetched for nobody");
    assert!(stopped < 32 << 20, "the download stopped early: {stopped}");
    let gets = proxy.gets_of("huge/file").len();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(proxy.gets_of("huge/file").len(), gets, "no request either");

    // Nothing half-written is left, under a temp name or the final one.
    let deadline = Instant::now() + Duration::from_secs(5);
    while temp_files(mirror) > 0 {
        assert!(Instant::now() < deadline, "the temp file is removed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!mirror.join("huge/file").exists(), "no mirror file");

    // A later reader starts over and gets every byte, and the mirror its copy.
    proxy.clear_rules();
    assert!(fs::read(&path).unwrap() == bytes, "a full read after");
    wait_mirrored(mirror, "huge/file");
    assert!(fs::read(mirror.join("huge/file")).unwrap() == bytes);
    assert_eq!(temp_files(mirror), 0);
}

#[test]
fn a_cached_read_is_served_while_32_cold_reads_hang_on_a_stalled_server() {
    let bucket = Bucket::create("fstall");
    let warm: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| (format!("warm/f{i}"), data(40 + i, 100_000)))
        .collect();
    let cold: Vec<(String, Vec<u8>)> = (0..32)
        .map(|i| (format!("cold/c{i:02}"), data(50 + i, 200_000)))
        .collect();
    bucket.put_many(&warm);
    bucket.put_many(&cold);
    let mount = ProxiedMount::start(&bucket.name, Vec::new(), &[]);
    let (proxy, mirror) = (&mount.proxy, &mount.mirror);
    // The warm files in the mirror, both directories listed (and the names looked up).
    for (key, bytes) in &warm {
        assert!(fs::read(mount.path(key)).unwrap() == *bytes);
        wait_mirrored(mirror, key);
    }
    sh_ok(&format!(
        "ls -l '{}' '{}'",
        mount.path("warm").display(),
        mount.path("cold").display()
    ));

    // From now on S3 answers nothing.
    proxy.add(Rule::matching(
        "",
        Fault::StallBeforeHeaders {
            limit: Duration::from_secs(120),
        },
    ));
    let readers: Vec<_> = cold
        .iter()
        .map(|(key, _)| {
            let path = mount.path(key);
            std::thread::spawn(move || fs::read(path))
        })
        .collect();
    // Every cold read is waiting on S3 by now.
    std::thread::sleep(Duration::from_secs(2));

    let path = mount.path("warm/f0");
    let started = Instant::now();
    let read = within(Duration::from_secs(5), move || fs::read(path));
    let took = started.elapsed();
    eprintln!("a cached file was read in {took:?} while 32 cold reads hung");
    let read = read.expect("a cached read does not wait behind reads that wait on S3");
    assert!(read.unwrap() == warm[0].1, "its bytes");

    let path = mount.path("warm");
    let started = Instant::now();
    let listed = within(Duration::from_secs(5), move || {
        let mut names: Vec<String> = fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    });
    eprintln!("a cached directory was listed in {:?}", started.elapsed());
    let listed = listed.expect("a cached directory is listed while S3 hangs");
    assert_eq!(listed, ["f0", "f1", "f2", "f3"]);

    // S3 comes back: the cold readers get their bytes (after the SDK's timeout).
    proxy.clear_rules();
    for ((key, bytes), reader) in cold.iter().zip(readers) {
        let read = reader.join().unwrap();
        let read = read.unwrap_or_else(|e| panic!("{key}: {e}"));
        assert!(read == *bytes, "{key}: its bytes");
    }
    drop(mount);
}
