use std::io::Write;

use super::*;
use crate::store::memory::MemoryStore;

const NOW_MS: u64 = 1_796_266_841_000;

fn now() -> SystemTime {
    utc::from_unix_ms(NOW_MS)
}

/// Reads the report at `at` for bucket `images`, everything under it.
async fn read_images(store: &MemoryStore, at: &ReportLocation) -> Result<Report, InventoryError> {
    read(
        store,
        at,
        "images",
        "",
        now(),
        tempfile::tempfile().unwrap(),
    )
    .await
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

fn manifest(source: &str, created_ms: u64, schema: &str, files: &[(&str, &[u8])]) -> String {
    let files: Vec<serde_json::Value> = files
        .iter()
        .map(|(key, bytes)| {
            serde_json::json!({"key": key, "size": bytes.len(), "MD5checksum": md5_hex(bytes)})
        })
        .collect();
    serde_json::json!({
        "sourceBucket": source,
        "destinationBucket": "arn:aws:s3:::inv",
        "version": "2016-11-30",
        "creationTimestamp": created_ms.to_string(),
        "fileFormat": "CSV",
        "fileSchema": schema,
        "files": files,
    })
    .to_string()
}

const SCHEMA: &str = "Bucket, Key, Size, LastModifiedDate, ETag, StorageClass";

fn location(text: &str) -> ReportLocation {
    text.parse().unwrap()
}

#[test]
fn locations_parse() {
    let manifest = location("s3://inv/images/cfg/2026-12-03T00-00Z/manifest.json");
    assert_eq!(manifest.bucket, "inv");
    assert!(!manifest.is_prefix());
    assert!(location("s3://inv/images/cfg/").is_prefix());
    assert!(location("s3://inv").is_prefix());
    for bad in [
        "inv/x/manifest.json",
        "s3:///x/",
        "s3://inv/x",
        "s3://bad bucket/",
    ] {
        assert!(bad.parse::<ReportLocation>().is_err(), "{bad}");
    }
}

#[test]
fn report_directories_are_recognized() {
    assert!(is_report_dir("2016-11-06T21-32Z"));
    for other in [
        "data",
        "hive",
        "2016-11-06T21-32",
        "2016-11-06T21:32Z",
        "x016-11-06T21-32Z",
    ] {
        assert!(!is_report_dir(other), "{other}");
    }
}

fn columns(schema: &str) -> Columns {
    Columns::new(&location("s3://inv/m.json"), schema).unwrap()
}

fn row(fields: &[&str]) -> Vec<String> {
    fields.iter().map(|f| f.to_string()).collect()
}

#[test]
fn rows_become_objects_as_a_listing_shows_them() {
    let columns = columns(SCHEMA);
    let filter = Filter {
        columns: &columns,
        bucket: "images",
        prefix: "photos/",
    };
    let object = filter
        .object(&row(&[
            "images",
            "photos/%C3%A9t%C3%A9+2024/a+b%2Bc%2C%22.jpg",
            "12",
            "2026-12-01T03:00:00.250Z",
            "5d41402abc4b2a76b9719d911017c592",
            "GLACIER",
        ]))
        .unwrap()
        .unwrap();
    assert_eq!(object.key.as_str(), "photos/été 2024/a b+c,\".jpg");
    assert_eq!(object.size, 12);
    assert_eq!(object.etag.as_str(), "\"5d41402abc4b2a76b9719d911017c592\"");
    assert_eq!(utc::unix_ms(object.last_modified), 1_796_094_000_250);
    assert_eq!(object.storage_class, StorageClass::Glacier);
    let other_bucket = row(&["other", "photos/a", "1", "", "e", ""]);
    assert!(filter.object(&other_bucket).unwrap().is_none());
    let outside = row(&["images", "notes/a", "1", "", "e", ""]);
    assert!(filter.object(&outside).unwrap().is_none());
    let short = filter.object(&row(&["images", "photos/a"]));
    assert!(matches!(
        short,
        Err(BadRow::Fields {
            expected: 6,
            found: 2
        })
    ));
    let size = filter.object(&row(&["images", "photos/a", "x", "", "e", ""]));
    assert!(matches!(size, Err(BadRow::Size(_))));
    let key = filter.object(&row(&["images", "photos/%zz", "1", "", "e", ""]));
    assert!(matches!(key, Err(BadRow::Key(_))));
}

#[test]
fn old_versions_and_delete_markers_are_skipped() {
    let columns = columns("Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, ETag");
    let filter = Filter {
        columns: &columns,
        bucket: "images",
        prefix: "",
    };
    let current = row(&["images", "a", "v2", "true", "false", "3", "e"]);
    let old = row(&["images", "a", "v1", "false", "false", "3", "d"]);
    let marker = row(&["images", "b", "v3", "true", "true", "", ""]);
    assert!(filter.object(&current).unwrap().is_some());
    assert!(filter.object(&old).unwrap().is_none());
    assert!(filter.object(&marker).unwrap().is_none());
}

#[test]
fn a_schema_without_key_size_or_etag_is_refused() {
    for schema in [
        "Bucket, Size, ETag",
        "Bucket, Key, ETag",
        "Bucket, Key, Size",
    ] {
        let refused = Columns::new(&location("s3://inv/m.json"), schema).unwrap_err();
        assert!(matches!(refused, InventoryError::Schema { .. }), "{schema}");
    }
}

fn report_store(files: &[(&str, &str)], source: &str, created_ms: u64) -> MemoryStore {
    let store = MemoryStore::new("inv");
    let mut listed = Vec::new();
    for (key, text) in files {
        let bytes = gzip(text);
        store.put(key, bytes.clone());
        listed.push((*key, bytes));
    }
    let refs: Vec<(&str, &[u8])> = listed.iter().map(|(k, b)| (*k, b.as_slice())).collect();
    store.put(
        "r/images/cfg/2026-12-03T00-00Z/manifest.json",
        manifest(source, created_ms, SCHEMA, &refs),
    );
    store
}

#[tokio::test]
async fn a_report_gives_the_sorted_objects_of_every_data_file() {
    let store = report_store(
        &[
            (
                "r/images/cfg/data/1.csv.gz",
                "\"images\",\"b\",\"2\",\"2026-12-01T00:00:00.000Z\",\"e2\",\"STANDARD\"\n",
            ),
            (
                "r/images/cfg/data/2.csv.gz",
                "\"images\",\"a\",\"1\",\"2026-12-01T00:00:00.000Z\",\"e1\",\"STANDARD\"\n\
                 \"images\",\"c%2C+d\",\"3\",\"2026-12-01T00:00:00.000Z\",\"e3\",\"\"\n",
            ),
        ],
        "images",
        NOW_MS - 3_600_000,
    );
    // The newest report under the prefix is found; a dated directory without a
    // manifest yet (a report being delivered) is passed over.
    store.put("r/images/cfg/2026-12-04T00-00Z/manifest.checksum", "x");
    let mut report = read_images(&store, &location("s3://inv/r/images/cfg/"))
        .await
        .unwrap();
    let objects = report.objects.to_vec().unwrap();
    let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["a", "b", "c, d"]);
    assert_eq!(
        report.manifest.key,
        "r/images/cfg/2026-12-03T00-00Z/manifest.json"
    );
    assert_eq!(utc::unix_ms(report.created), NOW_MS - 3_600_000);
}

#[tokio::test]
async fn a_data_file_that_does_not_match_its_checksum_fails_the_report() {
    let store = report_store(
        &[(
            "r/data/1.csv.gz",
            "\"images\",\"a\",\"1\",\"\",\"e1\",\"\"\n",
        )],
        "images",
        NOW_MS,
    );
    store.put(
        "r/data/1.csv.gz",
        gzip("\"images\",\"z\",\"1\",\"\",\"e1\",\"\"\n"),
    );
    let manifest = location("s3://inv/r/images/cfg/2026-12-03T00-00Z/manifest.json");
    let err = read_images(&store, &manifest).await.unwrap_err();
    assert!(matches!(err, InventoryError::Checksum { .. }), "{err}");
    assert!(
        err.to_string().contains("s3://inv/r/data/1.csv.gz"),
        "{err}"
    );
    // Bytes that are not gzip at all still fail on the checksum first.
    store.put("r/data/1.csv.gz", "not gzip");
    let err = read_images(&store, &manifest).await.unwrap_err();
    assert!(matches!(err, InventoryError::Checksum { .. }), "{err}");
}

#[tokio::test]
async fn reports_of_another_bucket_another_format_or_too_old_are_refused() {
    let manifest = location("s3://inv/r/images/cfg/2026-12-03T00-00Z/manifest.json");
    let other = report_store(&[], "videos", NOW_MS);
    let err = read_images(&other, &manifest).await.unwrap_err();
    assert!(matches!(err, InventoryError::OtherBucket { .. }), "{err}");
    let old = report_store(&[], "images", NOW_MS - 8 * 86_400_000);
    let err = read_images(&old, &manifest).await.unwrap_err();
    assert!(matches!(err, InventoryError::TooOld { .. }), "{err}");
    let week = report_store(&[], "images", NOW_MS - 6 * 86_400_000);
    assert!(read_images(&week, &manifest).await.is_ok());
    let parquet = MemoryStore::new("inv");
    let text = manifest_text("images", NOW_MS).replace("\"CSV\"", "\"Parquet\"");
    parquet.put(&manifest.key, text);
    let err = read_images(&parquet, &manifest).await.unwrap_err();
    assert!(
        err.to_string().contains("configure the inventory as CSV"),
        "{err}"
    );
    let none = MemoryStore::new("inv");
    let err = read_images(&none, &location("s3://inv/r/"))
        .await
        .unwrap_err();
    assert!(matches!(err, InventoryError::NoManifest(_)), "{err}");
}

fn manifest_text(source: &str, created_ms: u64) -> String {
    manifest(source, created_ms, SCHEMA, &[])
}
