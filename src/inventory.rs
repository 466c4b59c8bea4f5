//! S3 Inventory reports as a source of the key list: find the manifest, check
//! it is a CSV report of the mirrored bucket and recent enough, download each
//! gzip data file, check it against the manifest's MD5, and turn its rows into
//! the same sorted `ObjectMeta` list a listing gives. The one home of flate2.
//! (Not to be confused with `mirror::inventory`, the mirror's own index.)

mod csv;

use std::fs::File;
use std::io::Write;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::spool::CHUNK_RECORDS;
use crate::store::split::ListedObjects;
use crate::store::{
    ETag, GetRequest, Key, ObjectMeta, ObjectStore, ProtocolError, RestoreState, StorageClass,
    StoreError, decode_url_key,
};
use crate::utc;
use csv::RowReader;

/// A report older than this many days is refused: it would hide a week of
/// changes, and a prune against it could take out what S3 still holds.
pub const MAX_REPORT_AGE_DAYS: u64 = 7;

/// Copies whose object changed less than this before a report was created are
/// never pruned against it: S3 builds reports from an eventually consistent
/// scan, so an object that new may be missing from the report and still be in S3.
pub const PRUNE_MARGIN: Duration = Duration::from_secs(24 * 3600);

/// Where the report is: `s3://BUCKET/PATH/manifest.json`, or `s3://BUCKET/PATH/`
/// for the newest `PATH/*/manifest.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportLocation {
    pub bucket: String,
    /// The manifest's key, or a prefix ending in `/` (or empty) to search.
    pub key: String,
}

impl ReportLocation {
    /// Whether this names a prefix to search for the newest manifest.
    pub fn is_prefix(&self) -> bool {
        self.key.is_empty() || self.key.ends_with('/')
    }
}

impl std::fmt::Display for ReportLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

impl std::str::FromStr for ReportLocation {
    type Err = String;

    fn from_str(value: &str) -> Result<ReportLocation, String> {
        let usage = "give s3://BUCKET/PATH/manifest.json, or s3://BUCKET/PATH/ for the newest \
                     report under PATH";
        let rest = value
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{value:?}: {usage}"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let valid = |c: char| c.is_ascii_alphanumeric() || "-._".contains(c);
        if bucket.is_empty() || bucket.len() > 255 || !bucket.chars().all(valid) {
            return Err(format!("{bucket:?} is not a valid bucket name"));
        }
        let location = ReportLocation {
            bucket: bucket.to_string(),
            key: key.to_string(),
        };
        if !location.is_prefix() && !key.ends_with(".json") {
            return Err(format!("{value:?}: {usage}"));
        }
        Ok(location)
    }
}

/// `manifest.json` as S3 writes it; fields this tool does not use are ignored.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    source_bucket: String,
    /// Milliseconds since the epoch, as a string.
    creation_timestamp: String,
    file_format: String,
    #[serde(default)]
    file_schema: String,
    files: Vec<DataFile>,
}

/// One data file of a report, its key in the report's bucket.
#[derive(Clone, Debug, Deserialize)]
struct DataFile {
    key: String,
    #[serde(rename = "MD5checksum")]
    md5_checksum: String,
}

/// The key list a report gives, as a listing would.
#[derive(Debug)]
pub struct Report {
    /// The objects under the prefix, on disk; read back sorted by key, one per key.
    pub objects: ListedObjects,
    /// When S3 began the scan the report shows.
    pub created: SystemTime,
    /// The manifest read.
    pub manifest: ReportLocation,
}

/// Why a report could not be used; nothing was downloaded or pruned.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("reading the inventory report: {0}")]
    Store(#[from] StoreError),
    #[error("cannot keep the report's rows on disk: {0}")]
    Scratch(std::io::Error),
    #[error("no inventory report under {0}: no */manifest.json there")]
    NoManifest(ReportLocation),
    #[error("{manifest}: not an S3 Inventory manifest: {source}")]
    Manifest {
        manifest: ReportLocation,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{manifest}: the report is of bucket {report:?}, but the mirror is of {mirrored:?}; \
         give a report of {mirrored:?}"
    )]
    OtherBucket {
        manifest: ReportLocation,
        report: String,
        mirrored: String,
    },
    #[error(
        "{manifest}: {format} inventory reports are not supported; configure the inventory \
         as CSV"
    )]
    Format {
        manifest: ReportLocation,
        format: String,
    },
    #[error(
        "{manifest}: the report has no {missing} field (fields: {schema:?}); configure the \
         inventory with Size and ETag"
    )]
    Schema {
        manifest: ReportLocation,
        missing: &'static str,
        schema: String,
    },
    #[error("{manifest}: creationTimestamp {value:?} is not milliseconds since the epoch")]
    Timestamp {
        manifest: ReportLocation,
        value: String,
    },
    #[error(
        "{manifest}: the report was created at {created}, more than {MAX_REPORT_AGE_DAYS} days \
         ago; refusing to mirror (or prune) against it. Check that S3 still delivers the \
         inventory, or run without --inventory to list the bucket"
    )]
    TooOld {
        manifest: ReportLocation,
        created: String,
    },
    #[error(
        "s3://{bucket}/{file}: the data file does not match the manifest's MD5checksum \
         (expected {expected}, got {actual}); nothing was downloaded or pruned"
    )]
    Checksum {
        bucket: String,
        file: String,
        expected: String,
        actual: String,
    },
    #[error("s3://{bucket}/{file}: not a gzip-compressed CSV file: {source}")]
    Gzip {
        bucket: String,
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("s3://{bucket}/{file}, row {row}: {why}")]
    Row {
        bucket: String,
        file: String,
        row: u64,
        why: BadRow,
    },
}

/// What is wrong with one row of a data file.
#[derive(Debug, thiserror::Error)]
pub enum BadRow {
    #[error("{found} fields where the schema has {expected}")]
    Fields { expected: usize, found: usize },
    #[error("the key: {0}")]
    Key(ProtocolError),
    #[error("Size {0:?} is not a number")]
    Size(String),
    #[error("{0}")]
    Time(String),
    #[error("unterminated quoted field")]
    Unterminated,
    #[error("a field is not UTF-8")]
    NotUtf8,
}

/// Reads the report at `location` from `store` (its bucket) and returns the
/// objects of `bucket` under `prefix`, kept in `scratch` (an empty file nobody
/// else writes) rather than in memory. Every data file is read and checked
/// before anything is returned, so a bad report changes nothing. Should a
/// report hold several rows of one key, the newest wins when they are read.
pub async fn read(
    store: &dyn ObjectStore,
    location: &ReportLocation,
    bucket: &str,
    prefix: &str,
    now: SystemTime,
    scratch: File,
) -> Result<Report, InventoryError> {
    let (manifest_at, manifest) = find_manifest(store, location).await?;
    let created = check_manifest(&manifest_at, &manifest, bucket, now)?;
    let columns = Columns::new(&manifest_at, &manifest.file_schema)?;
    let mut objects = ListedObjects::new(scratch);
    for file in &manifest.files {
        let filter = Filter {
            columns: &columns,
            bucket,
            prefix,
        };
        read_data_file(store, file, &filter, &mut objects).await?;
    }
    tracing::info!(
        manifest = %manifest_at,
        created = %utc::rfc3339(created),
        rows = objects.len(),
        "read the inventory report"
    );
    Ok(Report {
        objects,
        created,
        manifest: manifest_at,
    })
}

/// The manifest at `location`, or the newest one under it.
async fn find_manifest(
    store: &dyn ObjectStore,
    location: &ReportLocation,
) -> Result<(ReportLocation, Manifest), InventoryError> {
    if !location.is_prefix() {
        let bytes = get_all(store, &location.key).await?;
        return Ok((location.clone(), parse_manifest(location, &bytes)?));
    }
    let mut dated = report_dirs(store, &location.key).await?;
    dated.sort_unstable_by(|a, b| b.cmp(a));
    for dir in dated {
        let at = ReportLocation {
            bucket: location.bucket.clone(),
            key: format!("{dir}manifest.json"),
        };
        match get_all(store, &at.key).await {
            Ok(bytes) => return Ok((at.clone(), parse_manifest(&at, &bytes)?)),
            // A report still being delivered has no manifest yet: take the one before.
            Err(StoreError::NoSuchKey { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(InventoryError::NoManifest(location.clone()))
}

/// The `PREFIX/YYYY-MM-DDTHH-MMZ/` directories S3 delivers reports into.
async fn report_dirs(store: &dyn ObjectStore, prefix: &str) -> Result<Vec<String>, StoreError> {
    let mut dirs = Vec::new();
    let mut token = None;
    loop {
        let page = store.list_page(prefix, true, token).await?;
        dirs.extend(page.prefixes.into_iter().filter(|p| {
            let name = p[prefix.len()..].trim_end_matches('/');
            is_report_dir(name)
        }));
        match page.next {
            Some(next) => token = Some(next),
            None => return Ok(dirs),
        }
    }
}

/// Whether `name` has the form `2016-11-06T21-32Z`.
fn is_report_dir(name: &str) -> bool {
    let b = name.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() == 17
        && (b[4], b[7], b[10], b[13], b[16]) == (b'-', b'-', b'T', b'-', b'Z')
        && digits(0..4)
        && digits(5..7)
        && digits(8..10)
        && digits(11..13)
        && digits(14..16)
}

fn parse_manifest(at: &ReportLocation, bytes: &[u8]) -> Result<Manifest, InventoryError> {
    serde_json::from_slice(bytes).map_err(|source| InventoryError::Manifest {
        manifest: at.clone(),
        source,
    })
}

/// Checks the report is a CSV report of `bucket`, recent enough; returns its creation time.
fn check_manifest(
    at: &ReportLocation,
    manifest: &Manifest,
    bucket: &str,
    now: SystemTime,
) -> Result<SystemTime, InventoryError> {
    if manifest.source_bucket != bucket {
        return Err(InventoryError::OtherBucket {
            manifest: at.clone(),
            report: manifest.source_bucket.clone(),
            mirrored: bucket.to_string(),
        });
    }
    if !manifest.file_format.eq_ignore_ascii_case("CSV") {
        return Err(InventoryError::Format {
            manifest: at.clone(),
            format: manifest.file_format.clone(),
        });
    }
    let ms: u64 =
        manifest
            .creation_timestamp
            .trim()
            .parse()
            .map_err(|_| InventoryError::Timestamp {
                manifest: at.clone(),
                value: manifest.creation_timestamp.clone(),
            })?;
    let created = utc::from_unix_ms(ms);
    let max_age = Duration::from_secs(MAX_REPORT_AGE_DAYS * 86_400);
    if now.duration_since(created).is_ok_and(|age| age > max_age) {
        return Err(InventoryError::TooOld {
            manifest: at.clone(),
            created: utc::rfc3339(created),
        });
    }
    Ok(created)
}

/// Where each field is in a row, by the manifest's `fileSchema`.
#[derive(Debug)]
struct Columns {
    count: usize,
    bucket: Option<usize>,
    key: usize,
    size: usize,
    etag: usize,
    last_modified: Option<usize>,
    storage_class: Option<usize>,
    is_latest: Option<usize>,
    is_delete_marker: Option<usize>,
}

impl Columns {
    fn new(at: &ReportLocation, schema: &str) -> Result<Columns, InventoryError> {
        let names: Vec<&str> = schema.split(',').map(str::trim).collect();
        let find = |name: &str| names.iter().position(|n| n.eq_ignore_ascii_case(name));
        let need = |name: &'static str| {
            find(name).ok_or_else(|| InventoryError::Schema {
                manifest: at.clone(),
                missing: name,
                schema: schema.to_string(),
            })
        };
        Ok(Columns {
            count: names.len(),
            bucket: find("Bucket"),
            key: need("Key")?,
            size: need("Size")?,
            etag: need("ETag")?,
            last_modified: find("LastModifiedDate"),
            storage_class: find("StorageClass"),
            is_latest: find("IsLatest"),
            is_delete_marker: find("IsDeleteMarker"),
        })
    }
}

/// Which rows count: those of the mirrored bucket, under the prefix, current
/// versions that are not delete markers.
struct Filter<'a> {
    columns: &'a Columns,
    bucket: &'a str,
    prefix: &'a str,
}

impl Filter<'_> {
    /// The object a row describes, `None` for a row that does not count.
    fn object(&self, row: &[String]) -> Result<Option<ObjectMeta>, BadRow> {
        let c = self.columns;
        if row.len() != c.count {
            return Err(BadRow::Fields {
                expected: c.count,
                found: row.len(),
            });
        }
        let field = |i: Option<usize>| i.map(|i| row[i].as_str());
        if field(c.bucket).is_some_and(|b| b != self.bucket)
            || field(c.is_latest).is_some_and(|v| v.eq_ignore_ascii_case("false"))
            || field(c.is_delete_marker).is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            return Ok(None);
        }
        let key = decode_url_key(&row[c.key]).map_err(BadRow::Key)?;
        if !key.starts_with(self.prefix) {
            return Ok(None);
        }
        let key = Key::new(key).map_err(|_| BadRow::Key(ProtocolError::EmptyKey))?;
        let size = row[c.size]
            .parse()
            .map_err(|_| BadRow::Size(row[c.size].clone()))?;
        let last_modified = match field(c.last_modified) {
            None | Some("") => SystemTime::UNIX_EPOCH,
            Some(text) => utc::from_unix_ms(utc::parse_rfc3339(text).map_err(BadRow::Time)?),
        };
        Ok(Some(ObjectMeta {
            key,
            size,
            etag: ETag::new(&row[c.etag]),
            last_modified,
            storage_class: StorageClass::parse(field(c.storage_class).unwrap_or("")),
            // A report does not say whether an archived object was restored;
            // `--restore-archived` asks S3 when it matters.
            restore: RestoreState::NotRestored,
        }))
    }
}

/// Downloads one data file, hashing and decompressing it as it arrives; its
/// rows count only once the whole file matches the manifest's MD5.
async fn read_data_file(
    store: &dyn ObjectStore,
    file: &DataFile,
    filter: &Filter<'_>,
    objects: &mut ListedObjects,
) -> Result<(), InventoryError> {
    use md5::Digest;
    let bucket = store.bucket().to_string();
    let key =
        Key::new(file.key.clone()).map_err(|_| StoreError::Protocol(ProtocolError::EmptyKey))?;
    let mut response = store
        .get(GetRequest {
            key,
            range: None,
            if_match: None,
        })
        .await?;
    let mut hasher = md5::Md5::new();
    let mut gunzip =
        flate2::write::MultiGzDecoder::new(RowReader::new(|row: Vec<String>| filter.object(&row)));
    // Past a decoding error the bytes are still hashed: a file that does not
    // match its checksum is reported as such, whatever else is wrong with it.
    let mut broken: Option<std::io::Error> = None;
    while let Some(chunk) = response.body.next_chunk().await? {
        hasher.update(&chunk);
        if broken.is_none()
            && let Err(e) = gunzip.write_all(&chunk)
        {
            broken = Some(e);
        }
        if gunzip.get_ref().kept() >= CHUNK_RECORDS {
            objects
                .add_unsorted(&gunzip.get_mut().take_kept())
                .map_err(InventoryError::Scratch)?;
        }
    }
    let actual = format!("{:x}", hasher.finalize());
    if !actual.eq_ignore_ascii_case(file.md5_checksum.trim()) {
        return Err(InventoryError::Checksum {
            bucket,
            file: file.key.clone(),
            expected: file.md5_checksum.clone(),
            actual,
        });
    }
    let gzip_error = |source| InventoryError::Gzip {
        bucket: bucket.clone(),
        file: file.key.clone(),
        source,
    };
    if let Some(e) = broken {
        return Err(gzip_error(e));
    }
    let rows = gunzip.finish().map_err(gzip_error)?;
    let rest = rows.finish().map_err(|(row, why)| InventoryError::Row {
        bucket: bucket.clone(),
        file: file.key.clone(),
        row,
        why,
    })?;
    objects.add_unsorted(&rest).map_err(InventoryError::Scratch)
}

/// A whole small object (a manifest).
async fn get_all(store: &dyn ObjectStore, key: &str) -> Result<Vec<u8>, StoreError> {
    let key = Key::new(key).map_err(|_| StoreError::Protocol(ProtocolError::EmptyKey))?;
    let mut response = store
        .get(GetRequest {
            key,
            range: None,
            if_match: None,
        })
        .await?;
    let mut bytes = Vec::new();
    while let Some(chunk) = response.body.next_chunk().await? {
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests;
