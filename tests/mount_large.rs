//! Large objects through a real mount, against moto behind the fault-injecting
//! proxy: they come in ranged parts pinned to the listed version and land in the
//! mirror byte for byte, verified; a part whose body fails is resumed; a download
//! that cannot complete gives the reader EIO and leaves nothing in the mirror; a
//! change during the download is never committed as a splice of two versions.

mod support;

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use s3mirrorfs::mirror::{Record, read_record};
use support::faults::{Fault, Rule};
use support::mount::{Mount, read_until_error};
use support::proxy::Proxy;
use support::{Bucket, data, moto_port, temp_files};

const MIB: u64 = 1 << 20;
/// Five parts of the smallest size (8 MiB), the last one short.
const SIZE: usize = 36 * (1 << 20) + 12_345;

fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest;
    format!("{:x}", md5::Md5::digest(bytes))
}

/// The ETag S3 lists for `key` now.
fn listed_etag(bucket: &Bucket, key: &str) -> String {
    let listed = bucket.list().into_iter().find(|o| o.0 == key);
    listed.expect("the key is listed").1
}

/// Waits until the mirror holds `key` at the listed ETag with exactly `bytes`,
/// recorded with their MD5; returns the record.
fn wait_verified(bucket: &Bucket, mirror: &Path, key: &str, bytes: &[u8]) -> Record {
    let etag = listed_etag(bucket, key);
    let path = mirror.join(key);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(record) = read_record(&path)
            && record.etag.as_str() == etag
        {
            assert!(fs::read(&path).unwrap() == bytes, "{key}: mirrored bytes");
            assert_eq!(record.size, bytes.len() as u64);
            assert_eq!(record.md5.as_deref(), Some(md5_hex(bytes).as_str()));
            return record;
        }
        assert!(Instant::now() < deadline, "{key} was never persisted");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A mount of `bucket` through `proxy`, its mirror in `dir/m`.
fn mount(bucket: &Bucket, proxy: &Proxy, dir: &Path, args: &[&str]) -> Mount {
    let mirror = dir.join("m");
    Mount::start(
        &bucket.name,
        &dir.join("mnt"),
        &mirror,
        &proxy.endpoint(),
        args,
    )
}

#[test]
fn a_large_object_comes_whole_in_pinned_parts_and_lands_verified() {
    let bucket = Bucket::create("lwhole");
    let bytes = data(61, SIZE);
    bucket.put("big/one", &bytes);
    let proxy = Proxy::start(moto_port());
    let dir = tempfile::tempdir().unwrap();
    let mount = mount(&bucket, &proxy, dir.path(), &[]);

    let read = fs::read(mount.path("big/one")).unwrap();
    assert!(read == bytes, "the reader gets every byte, in order");
    let record = wait_verified(&bucket, &dir.path().join("m"), "big/one", &bytes);

    let gets = proxy.gets_of("big/one");
    let mut starts: Vec<u64> = gets.iter().map(|g| g.range_start().unwrap()).collect();
    starts.sort_unstable();
    assert_eq!(
        starts,
        [0, 8 * MIB, 16 * MIB, 24 * MIB, 32 * MIB],
        "{gets:?}"
    );
    assert!(
        gets.iter()
            .all(|g| g.if_match.as_deref() == Some(record.etag.as_str())),
        "every part is pinned to the listed version: {gets:?}"
    );
    // Read again at once: the same bytes, and no request.
    assert!(fs::read(mount.path("big/one")).unwrap() == bytes);
    assert_eq!(proxy.gets_of("big/one").len(), gets.len());
    assert_eq!(temp_files(&dir.path().join("m")), 0);
}

/// The kernel's cached pages of a large file read cold are dropped behind its
/// reader: a second reader behind the first, and the first reading its start
/// again, still get the right bytes.
#[test]
fn readers_behind_the_dropped_pages_still_get_every_byte() {
    use std::io::Read;
    use std::os::unix::fs::FileExt;

    let bucket = Bucket::create("lbehind");
    let bytes = data(67, SIZE);
    bucket.put("big/two", &bytes);
    let proxy = Proxy::start(moto_port());
    let dir = tempfile::tempdir().unwrap();
    let mount = mount(&bucket, &proxy, dir.path(), &[]);
    let path = mount.path("big/two");

    let mut ahead = fs::File::open(&path).unwrap();
    let mut behind = fs::File::open(&path).unwrap();
    let mut first = vec![0u8; MIB as usize];
    behind.read_exact(&mut first).unwrap();
    let mut all = Vec::new();
    ahead.read_to_end(&mut all).unwrap();
    assert!(all == bytes, "the reader ahead gets every byte");
    let mut again = vec![0u8; 20 * MIB as usize];
    ahead.read_exact_at(&mut again, 3 * MIB).unwrap();
    assert!(
        again == bytes[3 * MIB as usize..23 * MIB as usize],
        "and the same bytes again"
    );
    let mut rest = Vec::new();
    behind.read_to_end(&mut rest).unwrap();
    first.extend_from_slice(&rest);
    assert!(first == bytes, "the reader behind gets every byte");
    drop((ahead, behind));
    wait_verified(&bucket, &dir.path().join("m"), "big/two", &bytes);
    assert!(
        fs::read(&path).unwrap() == bytes,
        "and so does the next open"
    );
}

#[test]
fn a_part_whose_body_breaks_is_resumed_and_the_copy_is_whole() {
    let bucket = Bucket::create("lresume");
    let bytes = data(62, SIZE);
    bucket.put("big/two", &bytes);
    let proxy = Proxy::start(moto_port());
    proxy.add(Rule::object("big/two", Fault::ResetAfter(100_000)).nth(3));
    let dir = tempfile::tempdir().unwrap();
    let mount = mount(&bucket, &proxy, dir.path(), &[]);

    let read = fs::read(mount.path("big/two")).unwrap();
    assert!(read == bytes, "the reader gets every byte");
    let record = wait_verified(&bucket, &dir.path().join("m"), "big/two", &bytes);
    let gets = proxy.gets_of("big/two");
    assert_eq!(gets.len(), 6, "five parts and one resume: {gets:?}");
    let resumed: Vec<_> = gets
        .iter()
        .filter(|g| g.range_start().is_some_and(|s| s % (8 * MIB) == 100_000))
        .collect();
    assert_eq!(resumed.len(), 1, "resumed from the last byte: {gets:?}");
    assert_eq!(resumed[0].if_match.as_deref(), Some(record.etag.as_str()));
}

#[test]
fn a_download_that_cannot_complete_fails_its_reader_with_eio_and_leaves_nothing() {
    let bucket = Bucket::create("lfail");
    let bytes = data(63, SIZE);
    bucket.put("big/three", &bytes);
    let proxy = Proxy::start(moto_port());
    // The first two parts come; every other body breaks after a few bytes.
    proxy.add(Rule::object("big/three", Fault::ResetAfter(1000)).after(2));
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("m");
    let mount = mount(&bucket, &proxy, dir.path(), &[]);

    let (read, error) = read_until_error(&mount.path("big/three"));
    let error = error.expect("the read fails");
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    assert!(bytes.starts_with(&read), "what arrived is right");
    assert!(read.len() < bytes.len());
    let deadline = Instant::now() + Duration::from_secs(10);
    while temp_files(&mirror) > 0 {
        assert!(Instant::now() < deadline, "the temp file is removed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!mirror.join("big/three").exists(), "nothing in the mirror");

    // The next open tries again, and gets it all.
    proxy.clear_rules();
    assert!(fs::read(mount.path("big/three")).unwrap() == bytes);
    wait_verified(&bucket, &mirror, "big/three", &bytes);
    assert_eq!(temp_files(&mirror), 0);
}

#[test]
fn an_object_that_changes_between_parts_is_never_committed_spliced() {
    let bucket = Arc::new(Bucket::create("lchange"));
    let old = data(64, SIZE);
    let new = data(65, SIZE);
    bucket.put("big/four", &old);
    let proxy = Proxy::start(moto_port());
    let (writer, replacement) = (Arc::clone(&bucket), new.clone());
    let change = Fault::HookAfter(
        1000,
        Arc::new(move || {
            writer.put("big/four", &replacement);
        }),
    );
    proxy.add(Rule::object("big/four", change).nth(1));
    let dir = tempfile::tempdir().unwrap();
    let mirror = dir.path().join("m");
    let mount = mount(&bucket, &proxy, dir.path(), &["--metadata-ttl", "1"]);

    let (read, error) = read_until_error(&mount.path("big/four"));
    match error {
        None => assert!(read == old, "a complete read is the old version"),
        Some(e) => {
            assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
            assert!(old.starts_with(&read), "what arrived is the old version's");
        }
    }
    if let Ok(found) = fs::read(mirror.join("big/four")) {
        assert!(found == old || found == new, "one version, whole");
    }
    // Once the listing names the new version, the mount and the mirror follow.
    std::thread::sleep(Duration::from_secs(2));
    assert!(fs::read(mount.path("big/four")).unwrap() == new);
    wait_verified(&bucket, &mirror, "big/four", &new);
    assert_eq!(temp_files(&mirror), 0);
}
