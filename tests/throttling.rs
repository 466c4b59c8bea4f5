//! A storm of 503 SlowDown from a real S3-compatible server (moto behind the
//! fault proxy): the run slows down and finishes, with no key failed.

mod support;

use std::fs;
use std::time::Duration;

use support::faults::{Fault, Rule};
use support::proxy::Proxy;
use support::{Bucket, data, moto_port, prefetch, stderr};

#[test]
fn a_slowdown_storm_slows_the_run_and_fails_no_key() {
    let bucket = Bucket::create("throttle");
    let objects: Vec<(String, Vec<u8>)> = (0..300u64)
        .map(|i| (format!("photos/{i:04}.jpg"), data(i, 4096)))
        .collect();
    bucket.put_many(&objects);
    let proxy = Proxy::start(moto_port());
    // Three requests in five, listings and downloads alike, answered SlowDown for 10 s:
    // more than the SDK's own attempts of one request absorb.
    proxy.add(
        Rule::matching("", Fault::slow_down())
            .share(60)
            .during(Duration::from_secs(10)),
    );
    let tmp = tempfile::tempdir().unwrap();
    let mirror = tmp.path().join("mirror");
    let (output, summary) = prefetch(&bucket.name, &mirror, &proxy.endpoint(), &[]);
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["downloaded"], 300, "{summary}");
    let slowed = proxy
        .requests()
        .iter()
        .filter(|r| r.fault == Some("error"))
        .count();
    assert!(
        slowed > 100,
        "the storm happened: {slowed} SlowDown answers"
    );
    assert!(log.contains("S3 asks to slow down"), "{log}");
    for (key, bytes) in &objects {
        assert_eq!(&fs::read(mirror.join(key)).unwrap(), bytes, "{key}");
    }
}
