//! Archived objects in a prefetch: objects a GET cannot read until they are
//! restored (Glacier Flexible Retrieval, Deep Archive, an Intelligent-Tiering
//! archive tier) are left out rather than failed; the state file remembers the
//! ones only a GET revealed, so later runs ask nothing of them; and
//! `--restore-archived` requests their restores and fetches them once done.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Item, Progress, Summary, fail};
use crate::mirror::Mirror;
use crate::queue::{Flow, run_bounded};
use crate::store::{
    ETag, Key, ObjectMeta, ObjectStore, RestoreAnswer, RestoreRequest, RestoreState, RetrievalTier,
    StorageClass, StoreError,
};

/// The archived objects the last prefetch of each prefix left out, in the
/// state directory: one JSON object a line.
pub const ARCHIVED_FILE: &str = "archived.jsonl";

/// How `--restore-archived` restores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestoreArchived {
    /// Days a restored copy of a Glacier or Deep Archive object stays readable.
    pub days: u32,
    pub tier: RetrievalTier,
}

/// How a prefetch knows that an object is archived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Why {
    /// The listing's storage class (and restore status) says so.
    Listing,
    /// A GET answered `InvalidObjectState` for this version (an Intelligent-Tiering
    /// archive tier, which listings do not show).
    Answer,
}

/// One archived object that the mirror does not hold at its listed version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedEntry {
    pub key: String,
    pub etag: String,
    pub storage_class: StorageClass,
    /// Only a GET told: the next run makes no request for it while its ETag stays.
    #[serde(default)]
    pub answered: bool,
}

/// The archived objects of the state file, by key.
#[derive(Clone, Debug, Default)]
pub struct ArchivedList(HashMap<String, ArchivedEntry>);

impl ArchivedList {
    /// Parses the state file; a line that does not parse is skipped.
    pub fn decode(bytes: &[u8]) -> ArchivedList {
        let entries = bytes
            .split(|b| *b == b'\n')
            .filter_map(|line| serde_json::from_slice::<ArchivedEntry>(line).ok())
            .map(|e| (e.key.clone(), e));
        ArchivedList(entries.collect())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut entries: Vec<&ArchivedEntry> = self.0.values().collect();
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        let mut out = Vec::new();
        for entry in entries {
            out.extend(serde_json::to_vec(entry).expect("entry serializes"));
            out.push(b'\n');
        }
        out
    }

    /// What the mirror's state file holds (nothing if there is none).
    pub fn load(mirror: &Mirror) -> ArchivedList {
        match mirror.read_state_file(ARCHIVED_FILE) {
            Ok(bytes) => ArchivedList::decode(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ArchivedList::default(),
            Err(e) => {
                tracing::warn!("cannot read {ARCHIVED_FILE}: {e}");
                ArchivedList::default()
            }
        }
    }

    /// The entry of `key`, if it is recorded archived at `etag`.
    pub fn get(&self, key: &Key, etag: &ETag) -> Option<&ArchivedEntry> {
        self.0.get(key.as_str()).filter(|e| e.etag == etag.as_str())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Replaces what the list says under `prefix` with `entries`: keys no longer
    /// listed, or no longer archived, are dropped, so the file never outgrows
    /// the listings.
    fn replace_under(&mut self, prefix: &str, entries: Vec<ArchivedEntry>) {
        self.0.retain(|key, _| !key.starts_with(prefix));
        self.0
            .extend(entries.into_iter().map(|e| (e.key.clone(), e)));
    }
}

/// Whether a listed object is one a GET cannot read (when the mirror does not
/// hold it at its listed version): the listing shows it archived, or a GET of
/// the same version answered so before.
pub(super) fn why_archived(meta: &ObjectMeta, remembered: &ArchivedList) -> Option<Why> {
    if meta.archived() {
        Some(Why::Listing)
    } else if meta.restore == RestoreState::Restored {
        // A restored copy of a Glacier object is read as usual.
        None
    } else {
        let answered = remembered
            .get(&meta.key, &meta.etag)
            .is_some_and(|e| e.answered);
        answered.then_some(Why::Answer)
    }
}

/// Counts the objects still archived at the end of the run and saves them for
/// the next one (and for `verify`).
pub(super) fn record(
    mirror: &Mirror,
    prefix: &str,
    mut list: ArchivedList,
    archived: &[Item],
    summary: &mut Summary,
) {
    summary.archived = archived.len() as u64;
    summary.archived_keys = archived
        .iter()
        .map(|i| i.meta.key.as_str().to_string())
        .collect();
    summary.archived_keys.sort();
    let entries = archived.iter().map(|item| ArchivedEntry {
        key: item.meta.key.as_str().to_string(),
        etag: item.meta.etag.as_str().to_string(),
        storage_class: item.meta.storage_class.clone(),
        answered: item.archived == Some(Why::Answer),
    });
    let had_entries = !list.is_empty();
    list.replace_under(prefix, entries.collect());
    if !had_entries && list.is_empty() {
        // A bucket without archived objects never needs the file.
        return;
    }
    if let Err(e) = mirror.write_state_file(ARCHIVED_FILE, &list.encode()) {
        tracing::warn!("cannot save the list of archived objects: {e}");
    }
}

/// What one archived object needs next, as S3 answered.
enum Step {
    /// A GET can read it now.
    Ready,
    Requested,
    InProgress,
    Failed(StoreError),
}

/// Finds out, for each archived object, whether its restore is done, on its
/// way or absent, and requests the absent ones (never a second request while
/// one is on its way). Returns the objects a GET can read now and those still
/// archived; a failed request fails its key.
pub(super) async fn request_restores(
    store: &Arc<dyn ObjectStore>,
    items: Vec<Item>,
    restore: RestoreArchived,
    concurrency: usize,
    progress: &dyn Progress,
    summary: &mut Summary,
) -> (Vec<Item>, Vec<Item>) {
    let (mut ready, mut waiting, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    let (mut requested, mut in_progress) = (0, 0);
    let start = |item: Item| {
        let store = Arc::clone(store);
        async move { (next_step(store.as_ref(), &item, restore).await, item) }
    };
    run_bounded(items, concurrency, start, |(step, item)| {
        match step {
            Step::Ready => ready.push(item),
            Step::Requested | Step::InProgress => {
                match step {
                    Step::Requested => requested += 1,
                    _ => in_progress += 1,
                }
                progress.object_done();
                waiting.push(item);
            }
            Step::Failed(e) => {
                progress.object_done();
                failed.push((item, e));
            }
        }
        Flow::Continue
    })
    .await;
    *summary.restore_requested.get_or_insert(0) += requested;
    *summary.restore_in_progress.get_or_insert(0) += in_progress;
    for (item, e) in failed {
        let error = format!("cannot restore the archived object: {e}");
        fail(summary, &item.meta, &error);
    }
    (ready, waiting)
}

/// HEAD, then a restore request if none is on its way.
async fn next_step(store: &dyn ObjectStore, item: &Item, restore: RestoreArchived) -> Step {
    let key = &item.meta.key;
    match store.restore_state(key).await {
        Err(e) => Step::Failed(e),
        Ok(RestoreState::Restored) => Step::Ready,
        Ok(RestoreState::InProgress) => Step::InProgress,
        Ok(RestoreState::NotRestored) => {
            let class = &item.meta.storage_class;
            let request = RestoreRequest {
                days: restore.days,
                tier: restore.tier.for_class(class),
                storage_class: class.clone(),
            };
            match store.request_restore(key, &request).await {
                Ok(RestoreAnswer::Requested) => {
                    tracing::debug!(%key, tier = request.tier.as_str(), "restore requested");
                    Step::Requested
                }
                Ok(RestoreAnswer::InProgress) => Step::InProgress,
                Ok(RestoreAnswer::NotArchived) => Step::Ready,
                Err(e) => Step::Failed(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::fetch::{FetchConfig, Fetcher};
    use crate::prefetch::{NoProgress, PrefetchError, PrefetchOptions, run};
    use crate::store::memory::MemoryStore;
    use crate::store::{BoxFuture, GetRequest, GetResponse, ListPage};
    use crate::testing::Scratch;

    fn options(restore: Option<RestoreArchived>) -> PrefetchOptions {
        PrefetchOptions {
            prefix: String::new(),
            concurrency: 4,
            prune: false,
            keep_history_days: 30,
            max_change: 50,
            restore_archived: restore,
            list_workers: 4,
            retry_for: std::time::Duration::ZERO,
            inventory: None,
        }
    }

    const RESTORE: RestoreArchived = RestoreArchived {
        days: 3,
        tier: RetrievalTier::Bulk,
    };

    async fn prefetch(
        scratch: &Scratch,
        restore: Option<RestoreArchived>,
    ) -> Result<Summary, PrefetchError> {
        let fetcher = scratch.fetcher(FetchConfig::default());
        let mut summary = Summary::default();
        run(
            scratch.store(),
            &fetcher,
            &options(restore),
            &NoProgress,
            &mut summary,
        )
        .await
        .map(|()| summary)
    }

    fn counts(s: &Summary) -> (u64, u64, u64, u64) {
        (s.downloaded, s.up_to_date, s.failed, s.archived)
    }

    fn gets(scratch: &Scratch) -> u64 {
        scratch.store.gets.load(Ordering::Relaxed)
    }

    /// A bucket of every kind: three of them a GET cannot read.
    fn mixed() -> Scratch {
        let scratch = Scratch::new(&[]);
        let store = &scratch.store;
        store.put_with_class("standard", "a", StorageClass::Standard);
        store.put_with_class("ia", "b", StorageClass::StandardIa);
        store.put_with_class("ir", "c", StorageClass::GlacierIr);
        store.put_with_class("tiering", "d", StorageClass::IntelligentTiering);
        store.put_with_class("glacier", "e", StorageClass::Glacier);
        store.put_with_class("deep", "f", StorageClass::DeepArchive);
        store.put_with_class("tiering-cold", "g", StorageClass::IntelligentTiering);
        store.archive_tier("tiering-cold");
        scratch
    }

    #[tokio::test]
    async fn archived_objects_are_counted_not_failed_and_never_asked_for_again() {
        let scratch = mixed();
        let first = prefetch(&scratch, None).await.unwrap();
        assert_eq!(counts(&first), (4, 0, 0, 3));
        assert_eq!(first.archived_keys, ["deep", "glacier", "tiering-cold"]);
        assert_eq!(gets(&scratch), 5, "one GET revealed the archive tier");
        assert_eq!(
            (first.restore_requested, first.restore_in_progress),
            (None, None)
        );
        let note = first.archived_note().unwrap();
        assert!(note.contains("3 objects are archived"), "{note}");
        assert!(note.contains("--restore-archived DAYS"), "{note}");
        let again = prefetch(&scratch, None).await.unwrap();
        assert_eq!(counts(&again), (0, 4, 0, 3));
        assert_eq!(gets(&scratch), 5, "no request for an archived object");
        assert_eq!(scratch.store.heads.load(Ordering::Relaxed), 0);
        let saved = ArchivedList::load(&scratch.mirror);
        let tiering = saved
            .get(
                &Key::new("tiering-cold").unwrap(),
                &listed_etag(&scratch, "tiering-cold").await,
            )
            .unwrap();
        assert!(tiering.answered);
        assert_eq!(tiering.storage_class, StorageClass::IntelligentTiering);
        assert_eq!(saved.len(), 3);
    }

    async fn listed_etag(scratch: &Scratch, key: &str) -> ETag {
        let listed = crate::store::list_all(scratch.store.as_ref(), key)
            .await
            .unwrap();
        listed[0].etag.clone()
    }

    #[tokio::test]
    async fn a_new_version_of_a_remembered_object_is_tried_again_and_gone_keys_forgotten() {
        let scratch = mixed();
        prefetch(&scratch, None).await.unwrap();
        scratch.store.put("tiering-cold", "new bytes");
        scratch.store.delete("deep");
        let before = gets(&scratch);
        let run = prefetch(&scratch, None).await.unwrap();
        assert_eq!(counts(&run), (1, 4, 0, 1));
        assert_eq!(gets(&scratch), before + 1);
        let saved = ArchivedList::load(&scratch.mirror);
        assert_eq!(saved.len(), 1, "only what is still listed and archived");
    }

    #[tokio::test]
    async fn a_copy_made_before_the_object_went_cold_stays_up_to_date() {
        let scratch = Scratch::new(&[("photo", b"bytes")]);
        prefetch(&scratch, None).await.unwrap();
        scratch.store.set_class("photo", StorageClass::DeepArchive);
        let before = gets(&scratch);
        let run = prefetch(&scratch, None).await.unwrap();
        assert_eq!(counts(&run), (0, 1, 0, 0));
        assert_eq!(
            gets(&scratch),
            before,
            "a class change alone downloads nothing"
        );
        let file = scratch.mirror.state_dir().join(ARCHIVED_FILE);
        assert!(!file.exists(), "nothing archived, no state file");
    }

    #[tokio::test]
    async fn older_copies_of_archived_objects_stay_and_do_not_trip_the_guard() {
        let scratch = Scratch::new(&[]);
        for i in 0..12 {
            scratch.store.put(&format!("k{i:02}"), format!("old {i}"));
        }
        prefetch(&scratch, None).await.unwrap();
        for i in 0..12 {
            let key = format!("k{i:02}");
            scratch
                .store
                .put_with_class(&key, format!("new {i}"), StorageClass::Glacier);
        }
        let run = prefetch(&scratch, None)
            .await
            .expect("not refused by the guard");
        assert_eq!(counts(&run), (0, 0, 0, 12));
        assert_eq!(run.replaced, 0);
        let kept = std::fs::read(scratch.mirror.root().join("k03")).unwrap();
        assert_eq!(kept, b"old 3", "the old copy stays");
    }

    #[tokio::test]
    async fn restores_are_requested_once_and_fetched_when_done() {
        let scratch = mixed();
        let first = prefetch(&scratch, Some(RESTORE)).await.unwrap();
        assert_eq!(counts(&first), (4, 0, 0, 3));
        assert_eq!(
            (first.restore_requested, first.restore_in_progress),
            (Some(3), Some(0))
        );
        let requests = scratch.store.restore_requests();
        let asked: Vec<(&str, u32)> = requests
            .iter()
            .map(|(key, r)| (key.as_str(), r.days))
            .collect();
        assert_eq!(asked.len(), 3);
        assert!(
            asked.contains(&("tiering-cold", 3)),
            "found by its GET in the same run"
        );
        let note = first.archived_note().unwrap();
        assert!(note.contains("3 restores requested now"), "{note}");
        let second = prefetch(&scratch, Some(RESTORE)).await.unwrap();
        assert_eq!(
            (second.restore_requested, second.restore_in_progress),
            (Some(0), Some(3))
        );
        assert_eq!(counts(&second), (0, 4, 0, 3));
        assert_eq!(
            scratch.store.restore_requests().len(),
            3,
            "never asked twice"
        );
        scratch.store.complete_restores();
        let third = prefetch(&scratch, Some(RESTORE)).await.unwrap();
        assert_eq!(counts(&third), (3, 4, 0, 0));
        assert!(third.archived_keys.is_empty());
        assert_eq!(
            std::fs::read(scratch.mirror.root().join("deep")).unwrap(),
            b"f"
        );
        assert!(ArchivedList::load(&scratch.mirror).is_empty());
        let plain = prefetch(&scratch, None).await.unwrap();
        assert_eq!(
            counts(&plain),
            (0, 7, 0, 0),
            "restored copies are ordinary copies"
        );
    }

    #[tokio::test]
    async fn each_class_gets_the_tier_it_offers() {
        let scratch = mixed();
        let expedited = RestoreArchived {
            days: 1,
            tier: RetrievalTier::Expedited,
        };
        prefetch(&scratch, Some(expedited)).await.unwrap();
        let tiers: HashMap<String, (RetrievalTier, StorageClass)> = scratch
            .store
            .restore_requests()
            .into_iter()
            .map(|(key, r)| (key.as_str().to_string(), (r.tier, r.storage_class)))
            .collect();
        assert_eq!(tiers["deep"].0, RetrievalTier::Standard);
        assert_eq!(tiers["glacier"].0, RetrievalTier::Expedited);
        assert_eq!(tiers["tiering-cold"].1, StorageClass::IntelligentTiering);
    }

    #[tokio::test]
    async fn a_failed_restore_request_fails_its_key_only() {
        let scratch = mixed();
        let store: Arc<dyn ObjectStore> = Arc::new(VanishingHead(Arc::clone(&scratch.store)));
        let fetcher = Fetcher::new(
            Arc::clone(&store),
            Arc::clone(&scratch.mirror),
            FetchConfig::default(),
        );
        let mut summary = Summary::default();
        run(
            store,
            &fetcher,
            &options(Some(RESTORE)),
            &NoProgress,
            &mut summary,
        )
        .await
        .unwrap();
        assert_eq!(counts(&summary), (4, 0, 1, 2));
        assert_eq!(summary.failures[0].key, "glacier");
        assert!(
            summary.failures[0].error.contains("cannot restore"),
            "{:?}",
            summary.failures
        );
    }

    /// The in-memory store, whose HEAD of `glacier` fails as for a key deleted
    /// after the listing.
    struct VanishingHead(Arc<MemoryStore>);

    impl ObjectStore for VanishingHead {
        fn bucket(&self) -> &str {
            self.0.bucket()
        }

        fn list_page(
            &self,
            prefix: &str,
            delimited: bool,
            token: Option<String>,
        ) -> BoxFuture<'_, Result<ListPage, StoreError>> {
            self.0.list_page(prefix, delimited, token)
        }

        fn get(&self, request: GetRequest) -> BoxFuture<'_, Result<GetResponse, StoreError>> {
            self.0.get(request)
        }

        fn restore_state(&self, key: &Key) -> BoxFuture<'_, Result<RestoreState, StoreError>> {
            if key.as_str() != "glacier" {
                return self.0.restore_state(key);
            }
            let gone = StoreError::NoSuchKey {
                bucket: "b".into(),
                key: key.as_str().into(),
            };
            Box::pin(async move { Err(gone) })
        }

        fn request_restore(
            &self,
            key: &Key,
            request: &RestoreRequest,
        ) -> BoxFuture<'_, Result<RestoreAnswer, StoreError>> {
            self.0.request_restore(key, request)
        }
    }
}
