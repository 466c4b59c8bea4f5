//! Reference-model tests of prefetch, after Mountpoint's reftests: random puts,
//! overwrites and deletes in a `MemoryStore`, interleaved with full runs, pruning
//! runs and runs cut off partway (a crash), and after every run the mirror on disk
//! is compared with a small model of what a backup must hold: every listed key at
//! its current version, and no version it ever held lost (kept in history).
//!
//! A "crash" here stops the run when the store has answered a given number of
//! GETs: the next GET never answers, the run is dropped at that await and
//! its runtime shut down, and the mirror is reopened as a restarted process would.
//! Dying inside a commit (between the fsync and the rename) is left to the
//! fault-point tests, which kill a real process.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;

use super::{NoProgress, PrefetchOptions, Summary, run};
use crate::fetch::{FetchConfig, Fetcher};
use crate::layout::{Placement, RENAMED_DIR, RenameReason, STATE_DIR, place_all, renamed_path};
use crate::mirror::history::read_all_histories;
use crate::mirror::inventory::MirrorView;
use crate::mirror::{Mirror, Record, read_record};
use crate::store::memory::MemoryStore;
use crate::store::{
    BoxFuture, GetRequest, GetResponse, Key, ListPage, ObjectStore, RestoreAnswer, RestoreRequest,
    RestoreState, StoreError,
};

const BUCKET: &str = "reftest";
/// Objects larger than this are fetched in ranged parts.
const PART_SIZE: u64 = 64;

/// The keys operations pick from: plain ones, keys that are renamed, a key that
/// is both a file and a prefix, and a marker whose name is also a file's.
fn key_pool() -> Vec<String> {
    [
        "a",
        "b",
        "b/c",
        "photo",
        "photo/1.jpg",
        "photo/1.jpg/x",
        "d/",
        "d",
        "d/e",
        "a/../b",
        "x//y",
        "/lead",
        "trail/",
        "..",
        ".s3mirrorfs/tmp/1.0.tmp",
        "caf\u{e9}/\u{fc}",
    ]
    .into_iter()
    .map(String::from)
    .chain([format!("long/{}", "l".repeat(300))])
    .collect()
}

#[derive(Clone, Debug)]
enum Op {
    /// Puts a new key or overwrites one (every put gets a new ETag).
    Put {
        key: usize,
        data: Vec<u8>,
    },
    Delete {
        key: usize,
    },
    Prefetch {
        prune: bool,
    },
    /// A run that dies when the store has answered `gets` GETs, then the mirror
    /// reopened.
    Crash {
        prune: bool,
        gets: usize,
    },
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..=2),
        3 => prop::collection::vec(any::<u8>(), 3..40),
        // Fetched in 2 to 5 ranged parts.
        2 => prop::collection::vec(any::<u8>(), PART_SIZE as usize + 1..400),
    ]
}

/// An index into the key pool, half the time one of the keys that are also
/// prefixes or markers of others, so histories run into each other's paths.
fn key() -> impl Strategy<Value = usize> {
    let pool = key_pool();
    let conflicting: Vec<usize> = ["photo", "photo/1.jpg", "photo/1.jpg/x", "d/", "d", "d/e"]
        .iter()
        .map(|k| pool.iter().position(|p| p == k).unwrap())
        .collect();
    prop_oneof![0..pool.len(), prop::sample::select(conflicting)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (key(), data()).prop_map(|(key, data)| Op::Put { key, data }),
        2 => key().prop_map(|key| Op::Delete { key }),
        2 => any::<bool>().prop_map(|prune| Op::Prefetch { prune }),
        3 => (any::<bool>(), 0usize..6).prop_map(|(prune, gets)| Op::Crash { prune, gets }),
    ]
}

/// The store as a dying process sees it: after `left` GETs, the next one hangs and
/// `died` is told.
struct Dying {
    store: Arc<MemoryStore>,
    left: AtomicUsize,
    died: Arc<tokio::sync::Notify>,
}

impl Dying {
    fn answers(&self) -> bool {
        let answers = self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if !answers {
            self.died.notify_one();
        }
        answers
    }
}

impl ObjectStore for Dying {
    fn bucket(&self) -> &str {
        self.store.bucket()
    }

    fn list_page(
        &self,
        prefix: &str,
        delimited: bool,
        token: Option<String>,
    ) -> BoxFuture<'_, Result<ListPage, StoreError>> {
        self.store.list_page(prefix, delimited, token)
    }

    fn get(&self, request: GetRequest) -> BoxFuture<'_, Result<GetResponse, StoreError>> {
        if self.answers() {
            self.store.get(request)
        } else {
            Box::pin(std::future::pending())
        }
    }

    fn restore_state(&self, key: &Key) -> BoxFuture<'_, Result<RestoreState, StoreError>> {
        self.store.restore_state(key)
    }

    fn request_restore(
        &self,
        key: &Key,
        request: &RestoreRequest,
    ) -> BoxFuture<'_, Result<RestoreAnswer, StoreError>> {
        self.store.request_restore(key, request)
    }
}

/// One copy of a key found in the mirror.
#[derive(Clone, Debug, PartialEq, Eq)]
struct MirroredCopy {
    path: PathBuf,
    etag: String,
}

/// What the mirror holds, read back from disk.
#[derive(Default)]
struct Seen {
    /// Each key's file copy.
    files: BTreeMap<String, MirroredCopy>,
    /// Directories of the key tree, with the marker record of those that have one.
    dirs: BTreeMap<PathBuf, Option<Record>>,
}

struct Harness {
    dir: tempfile::TempDir,
    store: Arc<MemoryStore>,
    keys: Vec<String>,
    /// Every version ever put: ETag -> (key, bytes).
    versions: BTreeMap<String, (String, Vec<u8>)>,
    /// What the store holds: key -> ETag.
    current: BTreeMap<String, String>,
    /// Each key's file copy in the mirror when it was last looked at.
    mirrored: BTreeMap<String, MirroredCopy>,
    /// Whether the store or the mirror changed since the last completed run.
    changed: bool,
    /// A run died during its listing and left its journal: the next run goes on
    /// with that listing, partly as old as the run that died.
    resumes: bool,
    /// Every version (ETag) ever seen as a key's copy: a backup never loses one,
    /// it stays the copy or is kept in history.
    ever_held: BTreeSet<String>,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            dir: tempfile::tempdir().unwrap(),
            // Small pages, so listings take several requests.
            store: Arc::new(MemoryStore::new(BUCKET).with_page_size(3)),
            keys: key_pool(),
            versions: BTreeMap::new(),
            current: BTreeMap::new(),
            mirrored: BTreeMap::new(),
            changed: false,
            resumes: false,
            ever_held: BTreeSet::new(),
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Put { key, data } => {
                let key = &self.keys[*key];
                let etag = self.store.put(key, data.clone()).as_str().to_string();
                self.versions
                    .insert(etag.clone(), (key.clone(), data.clone()));
                self.current.insert(key.clone(), etag);
                self.changed = true;
            }
            Op::Delete { key } => {
                let key = &self.keys[*key];
                self.store.delete(key);
                self.changed |= self.current.remove(key).is_some();
            }
            Op::Prefetch { prune } => self.prefetch(*prune),
            Op::Crash { prune, gets } => self.crash(*prune, *gets),
        }
    }

    /// Runs a prefetch the way the CLI does (a freshly opened mirror, its run lock
    /// held), dying after `gets` GETs if given. Returns the summary of a run
    /// that finished.
    fn run(&self, prune: bool, gets: Option<usize>) -> Option<Summary> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mirror = Arc::new(Mirror::open(self.dir.path(), BUCKET).unwrap());
        let died = Arc::new(tokio::sync::Notify::new());
        let store: Arc<dyn ObjectStore> = match gets {
            None => Arc::clone(&self.store) as Arc<dyn ObjectStore>,
            Some(left) => Arc::new(Dying {
                store: Arc::clone(&self.store),
                left: AtomicUsize::new(left),
                died: Arc::clone(&died),
            }),
        };
        let config = FetchConfig {
            part_size: PART_SIZE,
            max_part_size: 2 * PART_SIZE,
            max_requests: 4,
            ..FetchConfig::default()
        };
        let fetcher = Fetcher::new(Arc::clone(&store), Arc::clone(&mirror), config);
        let options = PrefetchOptions {
            prefix: String::new(),
            concurrency: 3,
            prune,
            keep_history_days: 30,
            max_change: 100,
            restore_archived: None,
            list_workers: 4,
            retry_for: std::time::Duration::ZERO,
            inventory: None,
        };
        let finished = runtime.block_on(async {
            let _lock = mirror.lock("reftest").unwrap();
            let mut summary = Summary::default();
            let run = run(store, &fetcher, &options, &NoProgress, &mut summary);
            let result = tokio::select! {
                result = run => Some(result),
                () = died.notified() => None,
            };
            result.map(|r| {
                r.expect("a prefetch of a reachable store succeeds");
                summary
            })
        });
        // Like a process exiting: aborted downloads are dropped, and commits already
        // handed to a blocking thread finish.
        drop(runtime);
        finished
    }

    fn prefetch(&mut self, prune: bool) {
        let gets = self.store.gets.load(Ordering::Relaxed);
        let summary = self.run(prune, None).expect("an unbounded run finishes");
        if self.resumed(prune, &summary) {
            return;
        }
        self.check_completed(prune, &summary);
        if !self.changed {
            // Nothing changed since the last full run: listing only.
            assert_eq!(
                self.store.gets.load(Ordering::Relaxed),
                gets,
                "GETs in a run with nothing to do"
            );
            assert_eq!(summary.downloaded, 0);
        }
        self.changed = false;
    }

    fn crash(&mut self, prune: bool, gets: usize) {
        match self.run(prune, Some(gets)) {
            Some(summary) => {
                if self.resumed(prune, &summary) {
                    return;
                }
                // It finished within its budget: a complete run after all.
                self.check_completed(prune, &summary);
                self.changed = false;
            }
            None => {
                // The restarted process opens the mirror, which removes dead temp files.
                let mirror = Mirror::open(self.dir.path(), BUCKET).unwrap();
                let tmp = mirror.state_dir().join("tmp");
                let left: Vec<_> = fs::read_dir(&tmp)
                    .unwrap()
                    .flatten()
                    .map(|e| e.path())
                    .collect();
                assert!(left.is_empty(), "temp files left after a restart: {left:?}");
                self.check_crashed(prune);
                self.changed = true;
                let journals = fs::read_dir(mirror.state_dir().join("listing"))
                    .map(|d| d.count())
                    .unwrap_or(0);
                self.resumes = journals > 0;
            }
        }
    }

    /// Reads the mirror back, checking what holds whatever the history: every file
    /// in the key tree is a complete version of its own key, with a record naming
    /// that key and ETag, at the key's own path or its renamed path.
    fn look(&self) -> Seen {
        let root = self.dir.path();
        let mut seen = Seen::default();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let rel = path.strip_prefix(root).unwrap().to_path_buf();
                let meta = fs::symlink_metadata(&path).unwrap();
                if meta.is_dir() {
                    if rel == Path::new(STATE_DIR) {
                        stack.push(root.join(RENAMED_DIR));
                    } else {
                        assert!(
                            !rel.starts_with(RENAMED_DIR),
                            "directory {rel:?} among renamed files"
                        );
                        let below = format!("{}/", rel.to_str().unwrap());
                        assert!(
                            self.versions
                                .values()
                                .any(|(key, _)| key.starts_with(&below)),
                            "directory {rel:?} is no key's parent or marker"
                        );
                        seen.dirs.insert(rel, read_record(&path));
                        stack.push(path);
                    }
                    continue;
                }
                assert!(meta.is_file(), "{rel:?} is neither a file nor a directory");
                let record = read_record(&path)
                    .unwrap_or_else(|| panic!("{rel:?} has no record: a partial or foreign file"));
                let bytes = fs::read(&path).unwrap();
                let (key, data) = self
                    .versions
                    .get(record.etag.as_str())
                    .unwrap_or_else(|| panic!("{rel:?} holds ETag {}, never put", record.etag));
                assert_eq!(
                    record.key.as_str(),
                    key,
                    "{rel:?} holds a version of another key"
                );
                assert!(
                    bytes == *data,
                    "{rel:?} ({key:?}) holds other bytes than its version"
                );
                assert_eq!(record.size, bytes.len() as u64, "{rel:?}");
                assert!(
                    rel == Path::new(key) || rel == renamed_path(key),
                    "{key:?} is stored at {rel:?}, neither its own nor its renamed path"
                );
                let copy = MirroredCopy {
                    path: rel,
                    etag: record.etag.to_string(),
                };
                if let Some(other) = seen.files.insert(record.key.into(), copy.clone()) {
                    panic!("{key:?} has two copies: {other:?} and {copy:?}");
                }
            }
        }
        seen
    }

    /// Where the listing places each key now, as `plan` resolves it: a file
    /// whose own path is an existing directory is renamed.
    fn expected(&self, seen: &Seen) -> BTreeMap<String, Placement> {
        let sizes: Vec<(&str, u64)> = self
            .current
            .iter()
            .map(|(k, etag)| (k.as_str(), self.versions[etag].1.len() as u64))
            .collect();
        let placed = place_all(sizes.iter().copied());
        sizes
            .iter()
            .zip(placed)
            .map(|((key, _), placement)| {
                let placement = match placement {
                    Placement::File(p) if seen.dirs.contains_key(&p) => Placement::Renamed {
                        path: renamed_path(key),
                        reason: RenameReason::PrefixConflict,
                    },
                    other => other,
                };
                (key.to_string(), placement)
            })
            .collect()
    }

    /// After a run that went on with a listing a dead run left: what holds
    /// after a crash holds (every copy a version of its key that was its copy
    /// or is listed now, nothing lost), and nothing was pruned, since the
    /// listing is partly older than the run. The next run lists anew. Returns
    /// whether this run was one.
    fn resumed(&mut self, prune: bool, summary: &Summary) -> bool {
        if !std::mem::take(&mut self.resumes) {
            return false;
        }
        assert_eq!(summary.pruned, 0, "a resumed listing prunes nothing");
        assert_eq!(summary.deleted, 0, "nor records deletions");
        self.check_crashed(prune);
        self.changed = true;
        true
    }

    /// After a finished run: every listed key is mirrored at its place with its
    /// current bytes; an unlisted key keeps its last copy, unless pruned.
    fn check_completed(&mut self, prune: bool, summary: &Summary) {
        let seen = self.look();
        let expected = self.expected(&seen);
        assert_eq!(summary.listed, self.current.len() as u64);
        assert_eq!(summary.failed, 0, "{:?}", summary.failures);
        assert_eq!(summary.downloaded + summary.up_to_date, summary.listed);
        self.check_placements(&seen, &expected);
        let renamed: BTreeSet<&str> = summary.renamed.iter().map(|r| r.key.as_str()).collect();
        let expected_renamed: BTreeSet<&str> = expected
            .iter()
            .filter(|(_, p)| matches!(p, Placement::Renamed { .. }))
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(renamed, expected_renamed, "keys reported renamed");
        self.check_deleted(prune, &seen, summary);
        self.check_nothing_lost(&seen);
        self.mirrored = seen.files;
    }

    /// Every version ever held as a copy is still the copy or kept in history,
    /// byte for byte.
    fn check_nothing_lost(&mut self, seen: &Seen) {
        let mut held: BTreeSet<String> = seen.files.values().map(|c| c.etag.clone()).collect();
        for history in
            read_all_histories(&crate::sys::beneath::Dir::open_root(self.dir.path()).unwrap())
                .unwrap()
        {
            for v in &history.versions {
                let etag = v.etag.clone().expect("the mirror wrote every copy");
                let (key, data) = &self.versions[&etag];
                assert_eq!(&v.key, key, "kept version {etag} of another key");
                let bytes = fs::read(self.dir.path().join(history.path_of(v))).unwrap();
                assert!(
                    bytes == *data,
                    "kept version {etag} of {key:?} holds other bytes"
                );
                held.insert(etag);
            }
        }
        let lost: Vec<&String> = self.ever_held.difference(&held).collect();
        assert!(lost.is_empty(), "versions lost: {lost:?}");
        self.ever_held.extend(held);
    }

    /// Every listed key is where the listing places it, at its current version,
    /// and every marker directory stands for the key it should.
    fn check_placements(&self, seen: &Seen, expected: &BTreeMap<String, Placement>) {
        for (key, placement) in expected {
            let etag = &self.current[key];
            match placement {
                Placement::Directory(path) => {
                    let record = seen
                        .dirs
                        .get(path)
                        .unwrap_or_else(|| panic!("marker {key:?}: no directory {path:?}"));
                    let record = record
                        .as_ref()
                        .unwrap_or_else(|| panic!("marker {key:?}: directory without a record"));
                    assert_eq!(
                        (record.key.as_str(), record.etag.as_str()),
                        (key.as_str(), etag.as_str()),
                        "marker {key:?}"
                    );
                    assert!(
                        !seen.files.contains_key(key),
                        "marker {key:?} also has a file copy {:?}",
                        seen.files[key]
                    );
                }
                Placement::File(path) | Placement::Renamed { path, .. } => {
                    let copy = MirroredCopy {
                        path: path.clone(),
                        etag: etag.clone(),
                    };
                    assert_eq!(seen.files.get(key), Some(&copy), "{key:?}");
                }
            }
        }
        for (path, record) in &seen.dirs {
            let Some(record) = record else { continue };
            if let Some(etag) = self.current.get(record.key.as_str()) {
                assert_eq!(
                    (&expected[record.key.as_str()], etag.as_str()),
                    (&Placement::Directory(path.clone()), record.etag.as_str()),
                    "directory {path:?} stands for {:?}",
                    record.key
                );
            }
        }
    }

    /// Keys deleted from the store keep their last copy, or are pruned and reported.
    fn check_deleted(&self, prune: bool, seen: &Seen, summary: &Summary) {
        let mut pruned = BTreeSet::new();
        for (key, last) in &self.mirrored {
            if self.current.contains_key(key) {
                continue;
            }
            let now = seen.files.get(key);
            if prune {
                assert_eq!(now, None, "{key:?} was deleted from the store and pruned");
                pruned.insert(key.as_str());
            } else {
                assert_eq!(
                    now.map(|c| &c.etag),
                    Some(&last.etag),
                    "deleted {key:?} keeps its last copy"
                );
            }
        }
        let reported: BTreeSet<&str> = summary
            .pruned_files
            .iter()
            .map(|p| p.key.as_str())
            .collect();
        assert_eq!(reported, pruned, "keys reported pruned");
    }

    /// After a run cut off partway: each key's copy is its copy from before or,
    /// for a listed key, its current version; a pruning run may have removed the
    /// copies of deleted keys. Nothing else changed.
    fn check_crashed(&mut self, prune: bool) {
        let seen = self.look();
        // A key that became a marker may have been settled as its directory
        // before the cut (and its old file copy dropped then).
        let markers: BTreeMap<&str, &str> = seen
            .dirs
            .values()
            .flatten()
            .map(|r| (r.key.as_str(), r.etag.as_str()))
            .collect();
        let keys: BTreeSet<&String> = self.mirrored.keys().chain(seen.files.keys()).collect();
        for key in keys {
            let before = self.mirrored.get(key).map(|c| c.etag.as_str());
            let now = seen
                .files
                .get(key)
                .map(|c| c.etag.as_str())
                .or_else(|| markers.get(key.as_str()).copied());
            let listed = self.current.get(key).map(String::as_str);
            let allowed = now == before
                || (listed.is_some() && now == listed)
                || (prune && listed.is_none() && now.is_none());
            assert!(
                allowed,
                "{key:?}: before {before:?}, now {now:?}, listed {listed:?}"
            );
        }
        self.check_nothing_lost(&seen);
        self.mirrored = seen.files;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn the_mirror_follows_the_model(ops in prop::collection::vec(op(), 1..32)) {
        let mut harness = Harness::new();
        for op in &ops {
            harness.apply(op);
        }
        // However the history went, one more full run brings the mirror up to date.
        harness.prefetch(false);
    }
}

/// The cases where backups lose data, in one fixed history.
#[test]
fn a_file_and_a_prefix_and_renamed_keys_survive_a_history() {
    let keys = key_pool();
    let at = |name: &str| keys.iter().position(|k| k == name).unwrap();
    let big: Vec<u8> = (0..300u32).map(|i| (i * 7 % 251) as u8).collect();
    let put = |name: &str, data: &[u8]| Op::Put {
        key: at(name),
        data: data.to_vec(),
    };
    let delete = |name: &str| Op::Delete { key: at(name) };
    let prefetch = |prune| Op::Prefetch { prune };
    let mut harness = Harness::new();
    for op in [
        put("photo", b"old"),
        put("a/../b", &big),
        put("x//y", b"xy"),
        prefetch(false),
        // Changed while it became a prefix: the new version wins over the moved copy.
        put("photo", b"changed"),
        put("photo/1.jpg/x", b"x"),
        prefetch(false),
        delete("photo/1.jpg/x"),
        delete("photo"),
        put("photo/1.jpg", &big),
        Op::Crash {
            prune: true,
            gets: 2,
        },
        prefetch(false),
        put("photo", b"new"),
        put("d/", b""),
        put("d", b"d"),
        prefetch(false),
        delete("photo/1.jpg"),
        prefetch(true),
        prefetch(true),
    ] {
        harness.apply(&op);
    }
    let photo = &harness.mirrored["photo"];
    assert_eq!(photo.path, renamed_path("photo"));
    assert_eq!(
        fs::read(harness.dir.path().join(&photo.path)).unwrap(),
        b"new"
    );
    assert!(!harness.mirrored.contains_key("photo/1.jpg"));
}

/// The recorded copies of `key` a restore would choose from, as (path, ETag).
fn copies(harness: &Harness, key: &str) -> Vec<(PathBuf, String)> {
    let (entries, errors) = MirrorView::open(harness.dir.path()).unwrap().entries();
    assert!(errors.is_empty(), "{errors:?}");
    entries
        .into_iter()
        .filter(|e| e.record.key.as_str() == key)
        .map(|e| (e.path, e.record.etag.to_string()))
        .collect()
}

/// Regression (open): a zero-byte `d/` is mirrored as the directory `d` with a
/// marker record; once `d/` holds bytes it is mirrored as a renamed file, but the
/// directory keeps its record of the old, empty version. The mirror then holds two
/// copies of `d/`, and restore keeps the first it walks to, here the directory: it
/// would write the empty old version back and lose the current bytes.
#[test]
fn a_marker_that_gains_bytes_keeps_one_copy() {
    let mut harness = Harness::new();
    let d = harness.keys.iter().position(|k| k == "d/").unwrap();
    harness.apply(&Op::Put {
        key: d,
        data: Vec::new(),
    });
    harness.apply(&Op::Prefetch { prune: false });
    harness.apply(&Op::Put {
        key: d,
        data: b"now".to_vec(),
    });
    harness.apply(&Op::Prefetch { prune: true });
    let current = harness.current["d/"].clone();
    assert_eq!(copies(&harness, "d/"), vec![(renamed_path("d/"), current)]);
}

/// Regression (open): the reverse, `d/` with bytes (a renamed file) that becomes
/// a zero-byte marker: the renamed file of the old version stays beside the
/// directory, and prune keeps it because the key is still listed.
#[test]
fn a_key_that_becomes_a_marker_keeps_one_copy() {
    let mut harness = Harness::new();
    let d = harness.keys.iter().position(|k| k == "d/").unwrap();
    harness.apply(&Op::Put {
        key: d,
        data: b"old".to_vec(),
    });
    harness.apply(&Op::Prefetch { prune: false });
    harness.apply(&Op::Put {
        key: d,
        data: Vec::new(),
    });
    harness.apply(&Op::Prefetch { prune: true });
    let current = harness.current["d/"].clone();
    assert_eq!(copies(&harness, "d/"), vec![(PathBuf::from("d"), current)]);
}
