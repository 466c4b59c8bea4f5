//! What a prefetch does about change in S3, beyond downloading: refuse a run
//! that would replace or remove too much of the mirror at once, record keys
//! found deleted, prune into history, and expire old versions.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{KeyPath, Summary};
use crate::layout::possible_paths;
use crate::mirror::inventory::{Entry, SpooledEntry, SpooledIndexEntry};
use crate::mirror::{Mirror, MirrorError};
use crate::spool::Spool;
use crate::utc;

/// Fewer changes than this never trip the guard, whatever the share.
pub const GUARD_MIN_CHANGES: u64 = 10;

/// A run refused by the mass change guard.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to change the mirror: this run would replace {replace} and remove {remove} of the \
     {existing} copies under the prefix ({percent}%, more than --max-change {limit}%); no copy \
     was replaced or removed. If S3 really changed that much, run again with --max-change 100"
)]
pub struct TooManyChanges {
    pub replace: u64,
    pub remove: u64,
    pub existing: u64,
    pub percent: u64,
    pub limit: u8,
}

/// How many files are recorded under `prefix` (not marker directories).
pub fn count_copies(mirror: &Mirror, prefix: &str) -> u64 {
    let mut count = 0;
    mirror.each_recorded_file(|_, record| {
        count += u64::from(record.key.as_str().starts_with(prefix));
    });
    count
}

/// Refuses the run when it would replace (ETag changed) and remove more than
/// `limit` percent of the copies under the prefix, and at least
/// `GUARD_MIN_CHANGES` of them. An archived object is not downloaded, so its
/// older copy is not replaced and does not count. `copies` walks the mirror
/// only when the guard may trip, so an ordinary run costs nothing more.
pub fn guard(
    replace: u64,
    remove: u64,
    limit: u8,
    copies: impl FnOnce() -> u64,
) -> Result<(), TooManyChanges> {
    let changes = replace + remove;
    if limit >= 100 || changes < GUARD_MIN_CHANGES {
        return Ok(());
    }
    let existing = copies();
    if changes * 100 <= u64::from(limit) * existing {
        return Ok(());
    }
    Err(TooManyChanges {
        replace,
        remove,
        existing,
        percent: changes * 100 / existing.max(1),
        limit,
    })
}

/// Records the keys that the last listing of this prefix had and this one has
/// not, with the version the mirror holds of each (it keeps that copy unless
/// pruned). With `before` (a report's cut-off, ms since the epoch), a copy that
/// changed later is not taken for deleted. Best effort, logged: the mirror
/// itself does not depend on it.
pub fn record_deletions(
    mirror: &Mirror,
    unlisted: &mut Spool<SpooledIndexEntry>,
    before: Option<u64>,
    summary: &mut Summary,
) -> Result<(), MirrorError> {
    let error = super::scratch_error(mirror);
    for entry in unlisted.sorted().map_err(&error)? {
        let Some(entry) = entry.map_err(&error)?.entry() else {
            continue;
        };
        let rel = Path::new(&entry.path);
        let Some(record) = mirror.record_at(rel).filter(|r| r.key == entry.key) else {
            continue;
        };
        let since = mirror
            .metadata(rel)
            .and_then(|m| m.modified())
            .map(utc::unix_ms)
            .unwrap_or(0);
        if before.is_some_and(|before| since >= before) {
            continue;
        }
        match mirror.record_deletion(&entry.key, Some(&record.etag), since) {
            Ok(true) => {
                tracing::info!(key = %entry.key, "deleted from S3; the mirror keeps its copy");
                summary.deleted += 1;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(key = %entry.key, "cannot record the deletion: {e}"),
        }
    }
    Ok(())
}

/// Takes the copies of deleted keys out of the key tree (into history unless
/// versions are not kept).
pub fn prune(
    mirror: &Mirror,
    candidates: &mut Spool<SpooledEntry>,
    summary: &mut Summary,
) -> Result<(), MirrorError> {
    let error = super::scratch_error(mirror);
    for candidate in candidates.sorted().map_err(&error)? {
        let Some(Entry {
            path: walked,
            record,
            ..
        }) = candidate.map_err(&error)?.entry()
        else {
            continue;
        };
        // Since the walk, the copy may have moved out of a new directory's way
        // (to its renamed path), or a mount may have replaced it.
        let holds = |rel: &PathBuf| mirror.record_at(rel).as_ref() == Some(&record);
        let Some(rel) = std::iter::once(walked)
            .chain(possible_paths(record.key.as_str()))
            .find(|rel| holds(rel) && mirror.metadata(rel).is_ok_and(|m| m.is_file()))
        else {
            continue;
        };
        match mirror.remove(&rel, &record) {
            Ok(()) => {
                tracing::info!(key = %record.key, path = %rel.display(), "pruned");
                summary.pruned += 1;
                summary.pruned_files.push(KeyPath {
                    key: record.key.into(),
                    path: rel.to_string_lossy().into_owned(),
                });
            }
            Err(e) => tracing::error!(path = %rel.display(), "cannot prune: {e}"),
        }
    }
    Ok(())
}

/// Removes the versions older than `days` (all of them for 0).
pub fn expire(mirror: &Mirror, days: u32, summary: &mut Summary) {
    let now = utc::unix_ms(SystemTime::now());
    let cutoff = now.saturating_sub(u64::from(days) * 86_400_000);
    let cutoff = if days == 0 { u64::MAX } else { cutoff };
    match mirror.expire_history(cutoff) {
        Ok((count, bytes)) => {
            if count > 0 {
                tracing::info!(
                    "removed {count} versions ({}) kept longer than {days} days",
                    crate::report::human_bytes(bytes)
                );
            }
            summary.expired_versions = count;
        }
        Err(e) => tracing::warn!("cannot expire old versions: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_counts_replacements_and_removals_against_existing_copies() {
        assert_eq!(guard(16, 0, 50, || 20).unwrap_err().percent, 80);
        assert!(guard(10, 0, 50, || 20).is_ok(), "exactly the limit");
        assert!(guard(11, 0, 50, || 20).is_err());
        assert!(guard(6, 5, 50, || 20).is_err(), "removals count");
        assert!(guard(9, 0, 50, || 9).is_ok(), "fewer than 10");
        assert!(guard(80, 0, 100, || 100).is_ok(), "100 is off");
        assert!(guard(10, 0, 5, || 100).is_err());
        assert!(guard(10, 0, 0, || 100).is_err(), "0 allows none");
        let refused = guard(8, 4, 50, || 12).unwrap_err();
        assert_eq!(
            (refused.replace, refused.remove, refused.existing),
            (8, 4, 12)
        );
        let message = refused.to_string();
        assert!(message.contains("--max-change"), "{message}");
    }

    #[test]
    fn the_guard_walks_the_mirror_only_when_it_may_trip() {
        let walked = std::cell::Cell::new(false);
        let copies = || {
            walked.set(true);
            10
        };
        guard(9, 0, 50, copies).unwrap();
        assert!(!walked.get());
    }
}
