//! A full disk: the file being written is discarded, nothing else is touched, the
//! error says the mirror is out of space, and a later run completes the mirror.

mod support;

use std::fs;

use s3mirrorfs::mirror::read_record;
use support::proxy::Proxy;
use support::tmpfs::SmallFs;
use support::{Bucket, data, endpoint, moto_port, prefetch, stderr, temp_files};

#[test]
fn a_full_disk_fails_cleanly_and_a_later_run_completes() {
    let bucket = Bucket::create("full-disk");
    let small: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| (format!("small/{i:02}"), data(i, 10_000)))
        .collect();
    bucket.put_many(&small);
    let big = data(77, 6 << 20);
    bucket.put("big.bin", &big);

    let fs_ = SmallFs::mount("4m");
    let mirror = fs_.path().join("m");
    // A first run while there is room for the small files only.
    let (output, summary) = prefetch(&bucket.name, &mirror, &endpoint(), &["--concurrency", "1"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains("out of space"), "{text}");
    assert!(text.contains("big.bin"), "the failed key is named: {text}");
    let listed = summary["listed"].as_u64().unwrap();
    let counted = summary["downloaded"].as_u64().unwrap()
        + summary["up_to_date"].as_u64().unwrap()
        + summary["failed"].as_u64().unwrap();
    assert_eq!(listed, counted);
    assert!(
        !mirror.join("big.bin").exists(),
        "no partial file under the final name"
    );
    assert_eq!(
        fs::read_dir(mirror.join(".s3mirrorfs/tmp"))
            .unwrap()
            .count(),
        0,
        "the temp file is discarded"
    );
    for (key, bytes) in &small {
        if let Ok(found) = fs::read(mirror.join(key)) {
            assert!(found == *bytes, "{key} is complete");
            assert!(read_record(&mirror.join(key)).is_some());
        }
    }

    fs_.resize("64m");
    let (output, summary) = prefetch(&bucket.name, &mirror, &endpoint(), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary["failed"], 0);
    assert!(fs::read(mirror.join("big.bin")).unwrap() == big);
    for (key, bytes) in &small {
        assert!(fs::read(mirror.join(key)).unwrap() == *bytes, "{key}");
    }
}

/// A large object reserves its blocks once its first response gives its size, before
/// the other parts are asked for: on a disk without room for it, it fails with only
/// its first part requested, and nothing of it stays behind.
#[test]
fn a_large_object_without_room_fails_before_its_other_parts_are_fetched() {
    let bucket = Bucket::create("no-room");
    let big = data(78, 40 << 20);
    bucket.put("big.bin", &big);
    let proxy = Proxy::start(moto_port());
    let fs_ = SmallFs::mount("16m");
    let mirror = fs_.path().join("m");

    let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains("out of space"), "{text}");
    assert_eq!(summary["failed"], 1);
    let gets = proxy.gets_of("big.bin");
    assert!(!gets.is_empty());
    for get in &gets {
        assert_eq!(get.range_start(), Some(0), "only first parts: {gets:?}");
    }
    assert!(!mirror.join("big.bin").exists());
    assert_eq!(temp_files(&mirror), 0, "the temp file is discarded");
}
