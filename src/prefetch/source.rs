//! Where a prefetch takes its key list from when it is not a listing: an S3
//! Inventory report, and what a report's age means for pruning.

use std::fs::File;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use super::Summary;
use crate::inventory::{self, InventoryError, PRUNE_MARGIN, ReportLocation};
use crate::mirror::inventory::SpooledEntry;
use crate::mirror::{Mirror, MirrorError};
use crate::spool::Spool;
use crate::store::ObjectStore;
use crate::store::split::ListedObjects;
use crate::utc;

/// Where the key list of a run came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeySource {
    /// ListObjectsV2 under the prefix.
    #[default]
    Listing,
    /// An S3 Inventory report (`--inventory`).
    Inventory,
}

/// `--inventory`: the report to read, and a client of its bucket.
#[derive(Clone)]
pub struct InventorySource {
    pub store: Arc<dyn ObjectStore>,
    pub location: ReportLocation,
}

impl std::fmt::Debug for InventorySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InventorySource")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// Reads the report: the objects of `bucket` under `prefix`, sorted, and when
/// S3 created the report. Notes the manifest and its time in the summary.
pub async fn read_report(
    source: &InventorySource,
    bucket: &str,
    prefix: &str,
    summary: &mut Summary,
    scratch: File,
) -> Result<(ListedObjects, Option<SystemTime>), InventoryError> {
    let report = inventory::read(
        source.store.as_ref(),
        &source.location,
        bucket,
        prefix,
        SystemTime::now(),
        scratch,
    )
    .await?;
    summary.inventory_manifest = Some(report.manifest.to_string());
    summary.inventory_created = Some(utc::rfc3339(report.created));
    Ok((report.objects, Some(report.created)))
}

/// The time before which a copy may be pruned against a report created at
/// `created`: a copy of an object modified later (a copy's mtime is its
/// object's LastModified) may be missing from the report only because it is
/// newer, so it stays until a report that is newer still leaves it out.
pub fn prune_cutoff(created: SystemTime) -> u64 {
    utc::unix_ms(created).saturating_sub(PRUNE_MARGIN.as_millis() as u64)
}

/// Whether the copy at `rel` changed before `cutoff` (ms since the epoch); a
/// copy whose time cannot be read counts as new, so it is kept.
pub fn older_than(mirror: &Mirror, rel: &std::path::Path, cutoff: u64) -> bool {
    std::fs::symlink_metadata(mirror.root().join(rel))
        .and_then(|m| m.modified())
        .is_ok_and(|mtime| utc::unix_ms(mtime) < cutoff)
}

/// Leaves out of a prune the copies a report may not show yet.
pub(super) fn keep_newer_than_report(
    mirror: &Mirror,
    candidates: &mut Spool<SpooledEntry>,
    created: SystemTime,
) -> Result<Spool<SpooledEntry>, MirrorError> {
    let cutoff = prune_cutoff(created);
    let error = super::scratch_error(mirror);
    let mut kept = Spool::new(mirror.scratch_file()?);
    for candidate in candidates.sorted().map_err(&error)? {
        let candidate = candidate.map_err(&error)?;
        if older_than(mirror, candidate.path(), cutoff) {
            kept.append(&candidate).map_err(&error)?;
        } else {
            tracing::info!(
                key = %candidate.key(),
                "not in the inventory report, but changed after it was made: kept"
            );
        }
    }
    kept.end_run().map_err(&error)?;
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::Record;
    use crate::mirror::inventory::Entry;

    #[test]
    fn the_cutoff_is_a_day_before_the_report() {
        let created = utc::from_unix_ms(10 * 86_400_000);
        assert_eq!(prune_cutoff(created), 9 * 86_400_000);
        assert_eq!(prune_cutoff(SystemTime::UNIX_EPOCH), 0);
    }

    #[test]
    fn copies_newer_than_the_report_are_not_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::open(dir.path(), "b").unwrap();
        let record = |key: &str| Record {
            key: crate::store::Key::new(key).unwrap(),
            etag: crate::store::ETag::new("e"),
            size: 1,
            md5: None,
            corrupt: false,
        };
        let created = utc::from_unix_ms(100 * 86_400_000);
        for (name, day) in [("old", 50), ("edge", 99), ("new", 101)] {
            let path = dir.path().join(name);
            std::fs::write(&path, b"x").unwrap();
            let mtime = utc::from_unix_ms(day * 86_400_000 - 1);
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_modified(mtime).unwrap();
        }
        let mut candidates = Spool::new(mirror.scratch_file().unwrap());
        for name in ["edge", "gone", "new", "old"] {
            candidates
                .append(&SpooledEntry::of(Entry {
                    path: std::path::PathBuf::from(name),
                    record: record(name),
                    directory: false,
                }))
                .unwrap();
        }
        let mut kept = keep_newer_than_report(&mirror, &mut candidates, created).unwrap();
        let kept: Vec<String> = kept
            .sorted()
            .unwrap()
            .map(|c| c.unwrap().key().to_string())
            .collect();
        let names: Vec<&str> = kept.iter().map(String::as_str).collect();
        assert_eq!(names, ["edge", "old"]);
    }
}
