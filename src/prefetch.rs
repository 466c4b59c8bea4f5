//! `s3mirrorfs prefetch`: list everything under the prefix (or read an S3 Inventory
//! report of it), download what is missing or changed into the mirror, optionally
//! prune copies of deleted keys, report.

pub mod archived;
mod changes;
mod early;
mod plan;
#[cfg(test)]
mod reftests;
pub mod resume;
pub mod source;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::fetch::{FetchError, Fetcher, Outcome};
use crate::inventory::InventoryError;
use crate::mirror::inventory::{IndexEntry, SpooledEntry};
use crate::mirror::{EMPTY_MD5, LocalStatus, Mirror, MirrorError, Record};
use crate::queue::Flow;
use crate::queue::adaptive::{Attempt, Backoff, run_adaptive};
use crate::report::KeyError;
use crate::spool::Spool;
use crate::store::split::{ListedObjects, Listing, SplitOptions, list_split};
use crate::store::{ObjectMeta, ObjectStore, StoreError};
use archived::{ArchivedList, Why};
use source::{InventorySource, KeySource};

/// What to prefetch and how.
#[derive(Clone, Debug)]
pub struct PrefetchOptions {
    /// Key prefix to mirror ("" for the whole bucket; otherwise ends in `/`).
    pub prefix: String,
    /// Objects downloaded at once.
    pub concurrency: usize,
    /// Take local copies of keys no longer in S3 out of the key tree.
    pub prune: bool,
    /// Days replaced and pruned versions are kept in history; 0 keeps none.
    pub keep_history_days: u32,
    /// Most of the existing copies, in percent, one run may replace or remove
    /// (when at least `changes::GUARD_MIN_CHANGES` would change); 100 turns the guard off.
    pub max_change: u8,
    /// `--restore-archived`: request restores of archived objects, fetch the restored.
    pub restore_archived: Option<RestoreArchived>,
    /// Listing requests at once.
    pub list_workers: usize,
    /// How long S3 trouble is waited out: a failing listing page asked again,
    /// an object S3 throttles tried again, before the run gives up on it.
    pub retry_for: Duration,
    /// `--inventory`: take the key list from an S3 Inventory report instead of a listing.
    pub inventory: Option<InventorySource>,
}

pub use archived::{ARCHIVED_FILE, RestoreArchived};
pub use changes::{GUARD_MIN_CHANGES, TooManyChanges};

/// Days versions are kept unless `--keep-history` says otherwise.
pub const DEFAULT_KEEP_HISTORY_DAYS: u32 = 30;
/// The share of the mirror a run may change unless `--max-change` says otherwise.
pub const DEFAULT_MAX_CHANGE: u8 = 50;

/// What a prefetch tells its caller as it goes, so the binary can draw a bar or
/// log lines (or nothing); the bytes received so far are the fetcher's.
pub trait Progress: Send + Sync {
    /// The listing is complete.
    fn listed(&self, _objects: u64) {}
    /// The plan: objects already settled without a download, and bytes to fetch.
    fn planned(&self, _settled: u64, _pending_bytes: u64) {}
    /// One more object settled (downloaded, already current, or failed).
    fn object_done(&self) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}

/// A key and where it lives in the mirror (relative path).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct KeyPath {
    pub key: String,
    pub path: String,
}

/// The outcome of a run; printed as one JSON line with `--json`. Every listed key
/// counts in exactly one of `downloaded`, `up_to_date`, `failed`, `archived` and
/// `gone`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub bucket: String,
    pub prefix: String,
    pub mirror: String,
    /// Where the key list came from: `listing` or `inventory`.
    pub source: KeySource,
    /// With `--inventory`: the manifest read, and when S3 created the report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inventory_manifest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inventory_created: Option<String>,
    pub listed: u64,
    pub downloaded: u64,
    pub up_to_date: u64,
    pub failed: u64,
    /// Objects not downloaded because a GET cannot read them until they are
    /// restored, and that the mirror does not hold at their listed version.
    pub archived: u64,
    /// With `--restore-archived`: of `archived`, those whose restore this run
    /// requested, and those whose restore was already on its way.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_requested: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_in_progress: Option<u64>,
    /// Keys listed (or in the report) that S3 no longer had when their download
    /// started: deleted since the listing, the resumed listing or the report was
    /// made. The mirror keeps what it holds of them; a later prune takes them out.
    pub gone: u64,
    /// Bytes received from S3.
    pub bytes: u64,
    pub seconds: f64,
    pub pruned: u64,
    /// Copies replaced by another version of their key (the old one is kept in history).
    pub replaced: u64,
    /// Keys found deleted from S3 since the last listing of this prefix.
    pub deleted: u64,
    /// Versions removed from history for being older than `--keep-history`.
    pub expired_versions: u64,
    /// Keys stored under a path other than their own.
    pub renamed: Vec<KeyPath>,
    pub failures: Vec<KeyError>,
    /// The true keys counted in `archived`, sorted.
    pub archived_keys: Vec<String>,
    pub pruned_files: Vec<KeyPath>,
    /// Set when the run could not go on (listing failed, mirror locked, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Summary {
    /// The line that says how many objects are archived and not yet in the
    /// mirror, and how to get them; `None` when there are none.
    pub fn archived_note(&self) -> Option<String> {
        let n = self.archived;
        if n == 0 {
            return None;
        }
        let objects = if n == 1 { "object is" } else { "objects are" };
        if let (Some(requested), Some(on_their_way)) =
            (self.restore_requested, self.restore_in_progress)
        {
            return Some(format!(
                "{n} archived {objects} not yet in the mirror: {requested} restores requested \
                 now, {on_their_way} already on their way; run this prefetch again once they \
                 are done (hours; up to 48 for Deep Archive) to fetch them"
            ));
        }
        let target = format!("{}/{}", self.bucket, self.prefix);
        Some(format!(
            "{n} {objects} archived (Glacier Flexible Retrieval, Deep Archive or an \
             Intelligent-Tiering archive tier) and not yet in the mirror; `s3mirrorfs prefetch \
             {} --mirror-dir {} --restore-archived DAYS` requests their restores and fetches \
             them once they are done",
            target.trim_end_matches('/'),
            self.mirror
        ))
    }
}

/// Failures that stop the whole run (per-object failures are counted instead).
#[derive(Debug, thiserror::Error)]
pub enum PrefetchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error(transparent)]
    TooManyChanges(#[from] changes::TooManyChanges),
    #[error(transparent)]
    Inventory(#[from] InventoryError),
}

/// One listed object and what to do about it.
#[derive(Clone)]
struct Item {
    meta: ObjectMeta,
    rel: PathBuf,
    directory: bool,
    /// MD5 of the current local copy, once known.
    md5: Option<String>,
    /// The mirror holds another version of the key, which a download replaces.
    changed: bool,
    /// A GET cannot read it until it is restored, and the mirror does not hold it.
    archived: Option<Why>,
}

/// Runs a prefetch. The caller holds the mirror's run lock.
pub async fn run(
    store: Arc<dyn ObjectStore>,
    fetcher: &Fetcher,
    options: &PrefetchOptions,
    progress: &dyn Progress,
    summary: &mut Summary,
) -> Result<(), PrefetchError> {
    let started = Instant::now();
    summary.source = match options.inventory {
        Some(_) => KeySource::Inventory,
        None => KeySource::Listing,
    };
    let run = Run {
        fetcher,
        options,
        progress,
    };
    let result = run.mirror(&store, summary).await;
    summary.bytes = fetcher.bytes_received();
    summary.seconds = started.elapsed().as_secs_f64();
    save_last_run(fetcher.mirror(), summary, &result);
    result
}

/// Where the outcome of the last prefetch is kept, in the state directory.
pub const LAST_PREFETCH_FILE: &str = "last-prefetch.json";

/// How the last prefetch ended, as `status` reports it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LastPrefetch {
    /// When it ended (RFC 3339, UTC).
    pub time: String,
    /// The same, in seconds since the epoch.
    pub time_unix: u64,
    /// `success` (every object mirrored), `partial` (some failed) or `failed` (the run stopped).
    pub outcome: String,
    pub bucket: String,
    pub prefix: String,
    pub listed: u64,
    pub downloaded: u64,
    pub up_to_date: u64,
    pub failed: u64,
    /// Archived objects the run left out (not in the mirror at their listed version).
    #[serde(default)]
    pub archived: u64,
    pub pruned: u64,
    pub renamed: u64,
    pub bytes: u64,
    pub seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The keys that failed, and why.
    #[serde(default)]
    pub failures: Vec<KeyError>,
}

/// Saves how this run ended, atomically; a failure to save is logged, never fatal,
/// because the mirror itself is fine.
fn save_last_run(mirror: &Mirror, summary: &Summary, result: &Result<(), PrefetchError>) {
    let now = std::time::SystemTime::now();
    let (outcome, error) = match result {
        Err(e) => ("failed", Some(e.to_string())),
        Ok(()) if summary.failed > 0 => ("partial", None),
        Ok(()) => ("success", None),
    };
    let last = LastPrefetch {
        time: crate::utc::rfc3339(now),
        time_unix: now
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        outcome: outcome.to_string(),
        bucket: summary.bucket.clone(),
        prefix: summary.prefix.clone(),
        listed: summary.listed,
        downloaded: summary.downloaded,
        up_to_date: summary.up_to_date,
        failed: summary.failed,
        archived: summary.archived,
        pruned: summary.pruned,
        renamed: summary.renamed.len() as u64,
        bytes: summary.bytes,
        seconds: summary.seconds,
        error,
        failures: summary.failures.clone(),
    };
    let json = serde_json::to_vec_pretty(&last).expect("summary serializes");
    if let Err(e) = mirror.write_state_file(LAST_PREFETCH_FILE, &json) {
        tracing::warn!("cannot save the summary of this run: {e}");
    }
}

/// The record a directory made from a marker carries: the marker's key and ETag.
fn marker_record(meta: &ObjectMeta) -> Record {
    Record {
        key: meta.key.clone(),
        etag: meta.etag.clone(),
        size: 0,
        md5: Some(EMPTY_MD5.to_string()),
        corrupt: false,
    }
}

/// What one prefetch works with.
struct Run<'a> {
    fetcher: &'a Fetcher,
    options: &'a PrefetchOptions,
    progress: &'a dyn Progress,
}

impl Run<'_> {
    /// Lists, plans, checks the plan against the guard, downloads, prunes and
    /// expires old versions; the steps of a prefetch. Nothing that grows with
    /// the bucket is held in memory: the listing, the plan and the walk of the
    /// mirror go to scratch files and are read back in key order.
    async fn mirror(
        &self,
        store: &Arc<dyn ObjectStore>,
        summary: &mut Summary,
    ) -> Result<(), PrefetchError> {
        let (fetcher, options, progress) = (self.fetcher, self.options, self.progress);
        let mirror = Arc::clone(fetcher.mirror());
        let remembered = Arc::new(ArchivedList::load(&mirror));
        let mut early = None;
        // A report is read and checked whole before anything changes.
        let (
            Listing {
                mut objects,
                error,
                resumed,
            },
            report_time,
        ) = match &options.inventory {
            Some(report) => {
                let scratch = mirror.scratch_file()?;
                let (objects, created) =
                    source::read_report(report, store.bucket(), &options.prefix, summary, scratch)
                        .await?;
                let listing = Listing {
                    objects,
                    error: None,
                    resumed: false,
                };
                (listing, created)
            }
            None => {
                let listing = self.list(store, &remembered).await?;
                early = listing.1;
                (listing.0, None)
            }
        };
        // A listing that gave up still had its keys fetched; only what needs the
        // whole listing (deletions, prune, the index) waits for a complete one.
        let cut_short = match error {
            Some(e) if objects.is_empty() => return Err(e.into()),
            Some(e) => {
                tracing::error!(
                    "the listing stopped after {} objects: {e}; fetching those, pruning nothing",
                    objects.len()
                );
                Some(e)
            }
            None => None,
        };
        // What needs the listing to be S3 as it is now (prune, deletions, the
        // index) waits for a listing that is whole and new: a resumed one is
        // partly as old as the run it goes on from.
        let complete = cut_short.is_none() && !resumed;
        if resumed {
            tracing::info!(
                "the listing went on from an earlier run's: pruning nothing and recording no deletions until the next run"
            );
        }
        mirror.claim()?;
        mirror.set_keep_versions(options.keep_history_days > 0);
        summary.listed = objects.len();
        progress.listed(summary.listed);
        let (mut objects, plan) = {
            let mirror = Arc::clone(&mirror);
            let prefix = options.prefix.clone();
            let remembered = Arc::clone(&remembered);
            tokio::task::spawn_blocking(move || {
                let plan = plan::plan(&mirror, &prefix, &mut objects, &remembered, early.as_mut());
                (objects, plan)
            })
            .await
            .expect("planning does not panic")
        };
        let mut plan = plan?;
        // Counted now, so a run the guard refuses still says what it added.
        summary.downloaded += plan.early;
        summary.renamed = std::mem::take(&mut plan.renamed);
        let removals = self.check_changes(&mirror, &mut objects, &plan, complete, report_time)?;
        drop(objects);
        if complete {
            save_index(&mirror, &options.prefix, &mut plan.items, false)?;
            let deleted_before = report_time.map(source::prune_cutoff);
            changes::record_deletions(&mirror, &mut plan.unlisted, deleted_before, summary)?;
        }
        let (mut fetches, mut cold, pending_bytes) =
            settle_without_download(&mirror, &mut plan.items, summary)?;
        let settled = summary.downloaded + summary.up_to_date + summary.failed;
        let waiting = if options.restore_archived.is_some() {
            0
        } else {
            cold.len()
        };
        progress.planned(settled + waiting as u64, pending_bytes);
        let fetched = summary.downloaded;
        let mut unreadable = None;
        let queue = fetches
            .sorted()
            .map_err(scratch_error(&mirror))?
            .map_while(|planned| match planned {
                Ok(planned) => planned.item().map(|(item, _)| item),
                Err(e) => {
                    unreadable = Some(e);
                    None
                }
            });
        cold.extend(download_all(fetcher, queue, options, progress, summary).await);
        if let Some(e) = unreadable {
            return Err(scratch_error(&mirror)(e).into());
        }
        let cold = self.restore_archived(store, cold, summary).await;
        if let Some(e) = cut_short {
            changes::expire(&mirror, options.keep_history_days, summary);
            return Err(e.into());
        }
        let remembered = Arc::try_unwrap(remembered).unwrap_or_else(|shared| (*shared).clone());
        archived::record(&mirror, &options.prefix, remembered, &cold, summary);
        if complete && summary.downloaded > fetched {
            save_index(&mirror, &options.prefix, &mut plan.items, true)?;
        }
        if let Some(mut candidates) = removals {
            changes::prune(&mirror, &mut candidates, summary)?;
        }
        changes::expire(&mirror, options.keep_history_days, summary);
        Ok(())
    }

    /// Lists every object under the prefix, parts of the key space side by
    /// side, downloading the plainly new objects as they are listed; returns
    /// the listing and the keys downloaded meanwhile.
    async fn list(
        &self,
        store: &Arc<dyn ObjectStore>,
        remembered: &Arc<ArchivedList>,
    ) -> Result<(Listing, Option<Spool<plan::Fetched>>), MirrorError> {
        let split = SplitOptions {
            workers: self.options.list_workers,
            retry_for: self.options.retry_for,
            ..SplitOptions::default()
        };
        let mirror = Arc::clone(self.fetcher.mirror());
        let scratch = mirror.scratch_file()?;
        let mut journal = resume::MirrorJournal::new(Arc::clone(&mirror), &self.options.prefix);
        let concurrency = self.options.concurrency;
        let mut early = early::EarlyFetch::start(self.fetcher, Arc::clone(remembered), concurrency);
        let listing = list_split(
            Arc::clone(store),
            &self.options.prefix,
            &split,
            &mut journal,
            scratch,
            &mut |run| {
                if let Some(early) = early.as_mut() {
                    early.listed(run);
                }
            },
        )
        .await
        .map_err(scratch_error(&mirror));
        let fetched = match early {
            Some(early) => early.finish().await,
            None => None,
        };
        Ok((listing?, fetched))
    }

    /// With `--restore-archived`, requests the restores of the archived objects
    /// and downloads those already restored; returns the objects still archived.
    async fn restore_archived(
        &self,
        store: &Arc<dyn ObjectStore>,
        cold: Vec<Item>,
        summary: &mut Summary,
    ) -> Vec<Item> {
        let Some(restore) = self.options.restore_archived else {
            return cold;
        };
        let (fetcher, concurrency) = (self.fetcher, self.options.concurrency);
        let (ready, mut waiting) =
            archived::request_restores(store, cold, restore, concurrency, self.progress, summary)
                .await;
        waiting.extend(download_all(fetcher, ready, self.options, self.progress, summary).await);
        waiting
    }

    /// Applies the mass change guard before anything changes; returns what a
    /// prune will take out (against a report created at `report_time`, only
    /// copies older than it).
    fn check_changes(
        &self,
        mirror: &Mirror,
        objects: &mut ListedObjects,
        plan: &plan::Plan,
        complete: bool,
        report_time: Option<SystemTime>,
    ) -> Result<Option<Spool<SpooledEntry>>, PrefetchError> {
        let prefix = &self.options.prefix;
        let limit = self.options.max_change;
        // The copies there were before this run: those made while the listing
        // went on are new, and must not dilute the share the guard weighs.
        let before = |copies: u64| copies.saturating_sub(plan.early);
        let replace = plan.replace;
        if !self.options.prune || !complete {
            let copies = || before(changes::count_copies(mirror, prefix));
            changes::guard(replace, 0, limit, copies)?;
            return Ok(None);
        }
        let (mut candidates, copies) = plan::unlisted_copies(mirror, prefix, objects)?;
        if let Some(created) = report_time {
            candidates = source::keep_newer_than_report(mirror, &mut candidates, created)?;
        }
        changes::guard(replace, candidates.len(), limit, || before(copies))?;
        Ok(Some(candidates))
    }
}

/// A failure to write or read the scratch files of a run (on the mirror's disk).
fn scratch_error(mirror: &Mirror) -> impl Fn(std::io::Error) -> MirrorError + use<> {
    let root = mirror.root().to_path_buf();
    let path = root.join(crate::layout::STATE_DIR).join("tmp");
    move |err| {
        if crate::sys::is_no_space(&err) {
            MirrorError::NoSpace {
                mirror: root.clone(),
                path: path.clone(),
            }
        } else {
            MirrorError::Io {
                path: path.clone(),
                err,
            }
        }
    }
}

/// Saves what the mirror should now hold, so `verify` can tell a copy deleted
/// by hand without asking S3. With `current`, once downloads are done: each copy
/// now current gets its MD5, with which the index vouches for it even where
/// extended attributes were lost (a copy of the mirror made without them). Best
/// effort for the mirror's own failures, logged: the mirror does not depend on
/// it; a scratch file that cannot be read fails the run.
fn save_index(
    mirror: &Mirror,
    prefix: &str,
    items: &mut Spool<plan::Planned>,
    current: bool,
) -> Result<(), MirrorError> {
    let mut writer = match mirror.index_writer(prefix) {
        Ok(writer) => writer,
        Err(e) => {
            tracing::warn!("cannot save the index of this listing: {e}");
            return Ok(());
        }
    };
    for planned in items.sorted().map_err(scratch_error(mirror))? {
        let planned = planned.map_err(scratch_error(mirror))?;
        let Some((item, _)) = planned.item() else {
            continue;
        };
        let mut entry = index_entry(&item);
        if current && entry.md5.is_none() {
            entry.md5 = mirror
                .record_at(Path::new(&entry.path))
                .filter(|r| r.key == entry.key && r.etag == entry.etag)
                .and_then(|r| r.md5);
        }
        if let Err(e) = writer.push(&entry) {
            tracing::warn!("cannot save the index of this listing: {e}");
            return Ok(());
        }
    }
    if let Err(e) = writer.commit() {
        tracing::warn!("cannot save the index of this listing: {e}");
    }
    Ok(())
}

fn index_entry(item: &Item) -> IndexEntry {
    IndexEntry {
        key: item.meta.key.clone(),
        path: item.rel.to_string_lossy().into_owned(),
        etag: item.meta.etag.clone(),
        size: item.meta.size,
        md5: match item.directory {
            true => Some(EMPTY_MD5.to_string()),
            false => item.md5.clone(),
        },
    }
}

/// Makes the directories of `dir/` markers and counts the current copies;
/// returns the objects that need a download (spooled), the archived ones, and
/// the bytes to download.
fn settle_without_download(
    mirror: &Mirror,
    items: &mut Spool<plan::Planned>,
    summary: &mut Summary,
) -> Result<(Spool<plan::Planned>, Vec<Item>, u64), MirrorError> {
    let error = scratch_error(mirror);
    let mut fetches = Spool::new(mirror.scratch_file()?);
    let (mut cold, mut bytes) = (Vec::new(), 0);
    for planned in items.sorted().map_err(&error)? {
        let planned = planned.map_err(&error)?;
        let early = planned.early().cloned();
        let Some((item, status)) = planned.item() else {
            continue;
        };
        if let Some(early) = early {
            match early {
                // Counted with the plan.
                plan::Early::Downloaded => {}
                plan::Early::Gone => summary.gone += 1,
                plan::Early::Failed(why) => fail(summary, &item.meta, &why),
                // Marked archived by the plan instead.
                plan::Early::Archived => {}
            }
        } else if item.directory {
            let made = mirror.ensure_dir(&item.rel).and_then(|created| {
                mirror.record_marker(&item.rel, &marker_record(&item.meta))?;
                Ok(created)
            });
            match made {
                Ok(true) => summary.downloaded += 1,
                Ok(false) => summary.up_to_date += 1,
                Err(e) => fail(summary, &item.meta, &e),
            }
        } else if status == LocalStatus::Current {
            summary.up_to_date += 1;
        } else if item.archived.is_some() {
            cold.push(item);
        } else {
            bytes += item.meta.size;
            fetches
                .append(&plan::Planned::of(&item, status))
                .map_err(&error)?;
        }
    }
    Ok((fetches, cold, bytes))
}

/// Downloads `items`, `concurrency` at a time. A full disk stops new downloads:
/// the rest fail as not attempted rather than each failing on its own. Returns
/// the objects S3 answered are archived: they are neither failed nor retried.
async fn download_all(
    fetcher: &Fetcher,
    items: impl IntoIterator<Item = Item>,
    options: &PrefetchOptions,
    progress: &dyn Progress,
    summary: &mut Summary,
) -> Vec<Item> {
    let (concurrency, retry_for) = (options.concurrency, options.retry_for);
    let mut out_of_space: Option<String> = None;
    let mut cold = Vec::new();
    let start = |item: Item| {
        let fetcher = fetcher.clone();
        async move {
            let meta = &item.meta;
            let result = fetcher
                .ensure(&meta.key, &meta.etag, meta.size, &item.rel)
                .await;
            match result {
                // S3 slows the run down; the object is fetched later, not failed.
                Err(FetchError::Store(e)) if e.is_throttling() => {
                    let failure = (item.clone(), Err(FetchError::Store(e)));
                    Attempt::Throttled(item, failure)
                }
                result => Attempt::Done((item, result)),
            }
        }
    };
    let backoff = Backoff {
        patience: retry_for,
        ..Backoff::default()
    };
    let not_attempted = run_adaptive(items, concurrency, backoff, start, |(item, result)| {
        progress.object_done();
        match result {
            Ok(Outcome::Downloaded { .. }) => {
                summary.downloaded += 1;
                summary.replaced += u64::from(item.changed);
            }
            Ok(Outcome::Current) => summary.up_to_date += 1,
            // Deleted since it was listed (by a report, a resumed listing, or
            // just now): nothing left to back up, so not a failure.
            Err(FetchError::Store(e @ StoreError::NoSuchKey { .. })) => {
                tracing::warn!(key = %item.meta.key, "listed but no longer in S3: {e}");
                summary.gone += 1;
            }
            Err(FetchError::Store(StoreError::Archived(e))) => {
                tracing::info!(key = %item.meta.key, "archived, left out: {e}");
                cold.push(Item {
                    archived: Some(Why::Answer),
                    ..item
                });
            }
            Err(e) => {
                fail(summary, &item.meta, &e);
                if matches!(&e, FetchError::Mirror(m) if m.is_no_space()) {
                    if out_of_space.is_none() {
                        tracing::error!("{e}; not starting further downloads");
                        out_of_space = Some(e.to_string());
                    }
                    return Flow::Stop;
                }
            }
        }
        Flow::Continue
    })
    .await;
    if let Some(reason) = out_of_space {
        for item in not_attempted {
            fail(summary, &item.meta, &format!("not attempted: {reason}"));
        }
    }
    cold
}

fn fail(summary: &mut Summary, meta: &ObjectMeta, error: &dyn std::fmt::Display) {
    tracing::error!(key = %meta.key, "failed: {error}");
    summary.failed += 1;
    summary
        .failures
        .push(KeyError::new(meta.key.as_str(), error));
}

/// How the copy at `rel` compares with the listed object. A file that lost its
/// record (the mirror was copied without extended attributes) gets it back when
/// the last index vouches for it, so it is neither fetched again nor taken for a
/// file of the user's.
fn inspect(
    mirror: &Mirror,
    rel: &Path,
    meta: &ObjectMeta,
    indexed: Option<&IndexEntry>,
) -> (LocalStatus, Option<Record>) {
    let (status, record) = mirror.inspect(rel, &meta.key, &meta.etag, meta.size);
    let Some(entry) = indexed.filter(|e| Path::new(&e.path) == rel) else {
        return (status, record);
    };
    if status != LocalStatus::Stale || record.is_some() {
        return (status, record);
    }
    match mirror.adopt(rel, entry) {
        Ok(true) => mirror.inspect(rel, &meta.key, &meta.etag, meta.size),
        Ok(false) => (status, record),
        Err(e) => {
            tracing::warn!(key = %meta.key, "cannot restore the record of the copy: {e}");
            (status, record)
        }
    }
}

/// Normalizes a user's prefix: a prefix names a directory, so it ends in `/`.
pub fn normalize_prefix(prefix: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        prefix.to_string()
    } else {
        format!("{prefix}/")
    }
}
