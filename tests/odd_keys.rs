//! Keys that are not valid UTF-8, from a server that holds them: they never stop
//! a listing, are stored renamed, reported escaped, and read byte for byte.
//! moto keeps only UTF-8 keys, so the test proxy plays such a server: it shows
//! moto's `U+FFFD` as the byte 0xFF and asks moto for `U+FFFD` where the tool
//! sends 0xFF.

mod support;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;

use s3mirrorfs::mirror::read_record;
use support::mount::Mount;
use support::proxy::Proxy;
use support::{Bucket, data, moto_port, prefetch, stderr};

/// The byte 0xFF in a URL, and how moto stores and spells it (U+FFFD).
const ODD: &str = "%FF";
const MOTO: &str = "%EF%BF%BD";

fn odd_bucket(tag: &str) -> (Bucket, Proxy, Vec<u8>, Vec<u8>) {
    let bucket = Bucket::create(tag);
    let (plain, odd) = (data(1, 70_000), data(2, 5_000));
    bucket.put("photos/plain.jpg", &plain);
    bucket.put("photos/odd-\u{FFFD}.jpg", &odd);
    let proxy = Proxy::start(moto_port());
    proxy.respell(MOTO, ODD);
    (bucket, proxy, plain, odd)
}

#[test]
fn a_key_that_is_not_utf8_is_stored_renamed_and_reported() {
    let (bucket, proxy, plain, odd) = odd_bucket("oddkey");
    let tmp = tempfile::tempdir().unwrap();
    let mirror = tmp.path().join("mirror");
    let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &[]);
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    assert_eq!(summary["listed"], 2, "{summary}");
    assert_eq!(summary["downloaded"], 2, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    // The tool asked for the key's own byte, not for a replacement character.
    assert!(
        proxy
            .requests()
            .iter()
            .any(|r| r.method == "GET" && r.target.contains("/photos/odd-%FF.jpg")),
        "{:?}",
        proxy.requests()
    );
    assert_eq!(fs::read(mirror.join("photos/plain.jpg")).unwrap(), plain);

    // Reported: in the summary's renamed list, and escaped in the log.
    let renamed = summary["renamed"].as_array().unwrap();
    assert_eq!(renamed.len(), 1, "{summary}");
    let rel = renamed[0]["path"].as_str().unwrap();
    assert!(rel.starts_with(".s3mirrorfs/renamed/"), "{rel}");
    assert!(rel.ends_with("-odd-_.jpg"), "{rel}");
    assert_eq!(fs::read(mirror.join(rel)).unwrap(), odd);
    let record = read_record(&mirror.join(rel)).unwrap();
    assert_eq!(record.key.as_str(), renamed[0]["key"].as_str().unwrap());
    assert!(!record.key.is_utf8());
    assert!(
        log.contains("photos/odd-\\xff.jpg") && log.contains("not valid UTF-8"),
        "{log}"
    );
    assert!(
        !log.contains('\u{10FFFF}'),
        "the stand-in character is never logged: {log}"
    );

    // A rerun finds both current, without a GET.
    proxy.clear();
    let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(summary["up_to_date"], 2, "{summary}");
    assert!(
        proxy.requests().iter().all(|r| r.is_list()),
        "{:?}",
        proxy.requests()
    );
}

#[test]
fn the_mount_shows_a_key_that_is_not_utf8_under_its_own_bytes() {
    let (bucket, proxy, plain, odd) = odd_bucket("oddmount");
    let tmp = tempfile::tempdir().unwrap();
    let mount = Mount::start(
        &bucket.name,
        &tmp.path().join("mnt"),
        &tmp.path().join("mirror"),
        &proxy.endpoint(),
        &[],
    );
    let names: Vec<Vec<u8>> = fs::read_dir(mount.path("photos"))
        .unwrap()
        .map(|e| e.unwrap().file_name().as_bytes().to_vec())
        .collect();
    assert!(names.contains(&b"odd-\xff.jpg".to_vec()), "{names:?}");
    assert!(names.contains(&b"plain.jpg".to_vec()), "{names:?}");
    let odd_path = mount
        .path("photos")
        .join(OsStr::from_bytes(b"odd-\xff.jpg"));
    assert_eq!(fs::read(&odd_path).unwrap(), odd);
    assert_eq!(fs::read(mount.path("photos/plain.jpg")).unwrap(), plain);
}
