//! What the mirror keeps of copies that stopped being current: versions replaced
//! by newer ones, copies pruned, older copies left at another path, and files the
//! mirror did not write that stood where a copy had to go. Each key has a
//! directory `.s3mirrorfs/history/<32 hex of SHA-256(key)>/` with the kept files
//! (hard links or renames of the old copies, never copies of their bytes) and
//! `journal.jsonl`: one JSON line per version kept or deletion seen, so the
//! history reads the same in a copy of the mirror made without extended attributes.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::{Mirror, MirrorError, Record, make_dir_in, read_record_in};
use crate::layout::{HISTORY_DIR, STATE_DIR, history_dir, version_name, version_replaced_at};
use crate::store::{ETag, Key};
use crate::sys::beneath::{Dir, Open};
use crate::utc;

/// The journal of one key's history directory.
pub const JOURNAL: &str = "journal.jsonl";
const HISTORY_MODE: u32 = 0o700;

/// One line of a key's journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A file was kept as a version.
    Kept(KeptVersion),
    /// A prefetch found the key deleted from S3.
    Deleted(Deletion),
}

/// A kept version, as its journal line records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeptVersion {
    pub key: String,
    /// The file's name in the key's history directory.
    pub file: String,
    /// `None` for a file the mirror had no record of.
    pub etag: Option<String>,
    pub size: u64,
    pub md5: Option<String>,
    /// S3's LastModified of the version (the file's mtime), in ms since the epoch.
    pub last_modified: u64,
    /// When it stopped being current, in ms since the epoch.
    pub replaced_at: u64,
    /// A file the mirror did not write (or whose record was lost): never expired.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unrecorded: bool,
}

impl KeptVersion {
    /// The MD5 the version's bytes must have, if known (as `Record::expected_md5`).
    pub fn expected_md5(&self) -> Option<String> {
        let etag = ETag::new(self.etag.as_deref()?);
        let record = Record {
            key: Key::new(self.key.as_str()).ok()?,
            etag,
            size: self.size,
            md5: self.md5.clone(),
            corrupt: false,
        };
        record.expected_md5()
    }
}

/// A deletion a prefetch saw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deletion {
    pub key: String,
    /// The version the mirror held when the key was found deleted.
    pub etag: Option<String>,
    /// When it was found deleted, in ms since the epoch.
    pub at: u64,
}

/// Why a file is being kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Keep {
    /// It stays where it is until a rename replaces it: keep a hard link.
    Link,
    /// It leaves its place now (prune, an older copy at another path).
    Move,
}

/// Everything the history holds of one key.
#[derive(Clone, Debug, Default)]
pub struct KeyHistory {
    /// The key's history directory, relative to the mirror root.
    pub dir: PathBuf,
    /// The kept versions whose files exist, oldest replaced first.
    pub versions: Vec<KeptVersion>,
    /// Deletions seen, oldest first.
    pub deletions: Vec<Deletion>,
}

impl KeyHistory {
    /// The path of a kept version's file, relative to the mirror root.
    pub fn path_of(&self, version: &KeptVersion) -> PathBuf {
        self.dir.join(&version.file)
    }

    /// The key this history belongs to, as its journal says.
    pub fn key(&self) -> Option<&str> {
        self.versions
            .first()
            .map(|v| v.key.as_str())
            .or_else(|| self.deletions.first().map(|d| d.key.as_str()))
    }
}

/// Reads the history of `key` in the mirror whose root is `root` (empty if it has none).
pub fn read_key_history(root: &Dir, key: &str) -> io::Result<KeyHistory> {
    read_history_dir(root, &history_dir(key))
}

/// Reads every key's history in the mirror whose root is `root`.
pub fn read_all_histories(root: &Dir) -> io::Result<Vec<KeyHistory>> {
    let entries = match root.read_dir(Path::new(HISTORY_DIR)) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut all = Vec::new();
    for entry in entries {
        let rel = Path::new(HISTORY_DIR).join(&entry.name);
        if root.symlink_metadata(&rel)?.is_dir() {
            all.push(read_history_dir(root, &rel)?);
        }
    }
    Ok(all)
}

/// Reads one history directory: the journal, and any kept file a crash left
/// without its journal line (described from its record and its name).
fn read_history_dir(root: &Dir, rel: &Path) -> io::Result<KeyHistory> {
    let mut history = KeyHistory {
        dir: rel.to_path_buf(),
        ..KeyHistory::default()
    };
    let journal = match root.read(&rel.join(JOURNAL)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    for event in parse_journal(&journal) {
        match event {
            Event::Kept(v) => {
                if root
                    .symlink_metadata(&rel.join(&v.file))
                    .is_ok_and(|m| m.is_file())
                {
                    history.versions.push(v);
                }
            }
            Event::Deleted(d) => history.deletions.push(d),
        }
    }
    add_unjournaled(root, rel, &mut history.versions)?;
    history
        .versions
        .sort_by_key(|v| (v.replaced_at, v.file.clone()));
    history.deletions.sort_by_key(|d| d.at);
    Ok(history)
}

/// The journal's events; a line a crash cut short is skipped.
fn parse_journal(bytes: &[u8]) -> Vec<Event> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .filter_map(|line| serde_json::from_slice(line).ok())
        .collect()
}

/// Describes kept files the journal does not name (a crash between keeping the
/// file and writing its line) from their record and the time in their name.
fn add_unjournaled(root: &Dir, dir: &Path, versions: &mut Vec<KeptVersion>) -> io::Result<()> {
    let entries = match root.read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let name = entry.name.to_string_lossy().into_owned();
        if name == JOURNAL || versions.iter().any(|v| v.file == name) {
            continue;
        }
        let rel = dir.join(&entry.name);
        let (Some(replaced_at), Some(record)) =
            (version_replaced_at(&name), read_record_in(root, &rel))
        else {
            continue;
        };
        let meta = root.symlink_metadata(&rel)?;
        versions.push(KeptVersion {
            key: record.key.as_str().to_string(),
            file: name,
            etag: Some(record.etag.as_str().to_string()),
            size: meta.len(),
            md5: record.md5,
            last_modified: mtime_ms(&meta),
            replaced_at,
            unrecorded: false,
        });
    }
    Ok(())
}

fn mtime_ms(meta: &fs::Metadata) -> u64 {
    meta.modified().map(utc::unix_ms).unwrap_or(0)
}

fn now_ms() -> u64 {
    utc::unix_ms(SystemTime::now())
}

/// Which version of a key was current at `at` (ms), as far as the mirror knows:
/// the one it held then (the first whose `replaced_at` is later, the current copy
/// last), provided it already existed in S3 (`last_modified`) and no deletion of it
/// was seen between its creation and `at`. `versions` are `(last_modified,
/// replaced_at)` with `None` for the current copy.
pub fn current_at(versions: &[(u64, Option<u64>)], deletions: &[u64], at: u64) -> Option<usize> {
    let (index, (last_modified, _)) = versions
        .iter()
        .enumerate()
        .filter(|(_, (_, replaced))| replaced.is_none_or(|r| r > at))
        .min_by_key(|(_, (_, replaced))| replaced.unwrap_or(u64::MAX))?;
    let created = *last_modified <= at;
    let deleted = deletions.iter().any(|d| *d >= *last_modified && *d <= at);
    (created && !deleted).then_some(index)
}

/// Counts replacements of mirrored copies, and warns loudly when more than
/// `CHANGE_WARNING` happen within a minute: a bucket being overwritten wholesale
/// (a script gone wrong, ransomware) shows in the log while the old bytes are safe
/// in history.
#[derive(Debug)]
pub(super) struct ChangeRate {
    window: Mutex<(Instant, u64)>,
}

/// Replacements per minute above which the mirror warns.
pub const CHANGE_WARNING: u64 = 100;

impl Default for ChangeRate {
    fn default() -> Self {
        ChangeRate {
            window: Mutex::new((Instant::now(), 0)),
        }
    }
}

impl ChangeRate {
    fn replaced_one(&self) {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if window.0.elapsed() >= Duration::from_secs(60) {
            *window = (Instant::now(), 0);
        }
        window.1 += 1;
        if window.1 == CHANGE_WARNING + 1
            || (window.1 > CHANGE_WARNING && window.1.is_multiple_of(1000))
        {
            tracing::error!(
                replaced = window.1,
                "MASS CHANGE: more than {CHANGE_WARNING} mirrored copies replaced by other versions within a minute; \
                 every replaced copy is kept in the mirror's history, but if the bucket is being overwritten \
                 by accident or by an attacker, stop and investigate"
            );
        }
    }
}

impl Mirror {
    /// Whether replaced and pruned copies are kept as versions (`prefetch
    /// --keep-history 0` turns it off; files the mirror has no record of are
    /// kept regardless).
    pub fn set_keep_versions(&self, keep: bool) {
        self.keep_versions.store(keep, Ordering::Relaxed);
    }

    pub(super) fn keeps_versions(&self) -> bool {
        self.keep_versions.load(Ordering::Relaxed)
    }

    /// Keeps what stands at `rel` before a copy of `key` at `etag` replaces it:
    /// another version (or another key's copy) as a version of its key, and a file
    /// without a record as an unrecorded version of `key`. A damaged copy of the
    /// very same version is not kept. Called under the path's lock.
    pub(super) fn keep_before_replace(
        &self,
        rel: &Path,
        key: &Key,
        etag: Option<&ETag>,
    ) -> Result<(), MirrorError> {
        if !self.dir.symlink_metadata(rel).is_ok_and(|m| m.is_file()) {
            return Ok(());
        }
        match read_record_in(&self.dir, rel) {
            Some(old) if old.key == *key && Some(&old.etag) == etag => Ok(()),
            Some(old) => {
                if self.keeps_versions() {
                    self.keep(rel, &old.key, Some(&old), Keep::Link)?;
                    self.change_rate.replaced_one();
                }
                Ok(())
            }
            None => {
                tracing::warn!(
                    %key,
                    path = %rel.display(),
                    "a file the mirror did not write stands where this key's copy goes; it is moved into history"
                );
                self.keep(rel, key, None, Keep::Link)
            }
        }
    }

    /// Keeps the file at `path` (relative to the root) as a version of `key`: a hard link (or,
    /// with `Keep::Move`, a link and the removal of the original) in the key's
    /// history directory, made durable, then its journal line. A file a crashed
    /// run already kept (same inode) is not kept twice.
    pub(super) fn keep(
        &self,
        path: &Path,
        key: &Key,
        record: Option<&Record>,
        how: Keep,
    ) -> Result<(), MirrorError> {
        let dir = history_dir(key.as_str());
        self.ensure_history_dir(&dir)?;
        let _lock = self.lock_path(&dir)?;
        let meta = self.dir.symlink_metadata(path).map_err(self.io(path))?;
        let replaced_at = now_ms();
        let file = match self.kept_as(&dir, meta.ino())? {
            Some(name) => name,
            None => self.link_into(path, &dir, replaced_at, key)?,
        };
        let journal = self.dir.read(&dir.join(JOURNAL)).unwrap_or_default();
        let journaled = parse_journal(&journal)
            .iter()
            .any(|e| matches!(e, Event::Kept(v) if v.file == file));
        if !journaled {
            let line = Event::Kept(KeptVersion {
                key: key.as_str().to_string(),
                etag: record.map(|r| r.etag.as_str().to_string()),
                size: meta.len(),
                md5: record.and_then(|r| r.md5.clone()),
                last_modified: mtime_ms(&meta),
                replaced_at: version_replaced_at(&file).unwrap_or(replaced_at),
                unrecorded: record.is_none(),
                file,
            });
            self.append_journal(&dir, &line)?;
        }
        if how == Keep::Move {
            self.dir.remove_file(path).map_err(self.io(path))?;
            self.sync_rel(path.parent().unwrap_or(Path::new("")))?;
        }
        Ok(())
    }

    fn ensure_history_dir(&self, dir: &Path) -> Result<(), MirrorError> {
        if self.dir.symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
            return Ok(());
        }
        let top = Path::new(HISTORY_DIR);
        for d in [top, dir] {
            make_dir_in(&self.dir, d, HISTORY_MODE).map_err(self.io(d))?;
        }
        self.sync_rel(top)?;
        self.sync_rel(Path::new(STATE_DIR))
    }

    /// The name under which the file with inode `ino` is already kept, if it is.
    fn kept_as(&self, dir: &Path, ino: u64) -> Result<Option<String>, MirrorError> {
        for entry in self.dir.read_dir(dir).map_err(self.io(dir))? {
            let name = entry.name.to_string_lossy().into_owned();
            if name != JOURNAL
                && self
                    .dir
                    .symlink_metadata(&dir.join(&entry.name))
                    .is_ok_and(|m| m.ino() == ino)
            {
                return Ok(Some(name));
            }
        }
        Ok(None)
    }

    /// Hard-links `path` into `dir` under a new version name; returns the name.
    fn link_into(
        &self,
        path: &Path,
        dir: &Path,
        replaced_at: u64,
        key: &Key,
    ) -> Result<String, MirrorError> {
        for n in 0.. {
            let name = version_name(replaced_at, n, key.as_str());
            match self.dir.hard_link(path, &dir.join(&name)) {
                Ok(()) => {
                    #[cfg(feature = "test-util")]
                    crate::fault::point("after-history-link", key.as_str());
                    self.sync_rel(dir)?;
                    return Ok(name);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(self.io(path)(e)),
            }
        }
        unreachable!("version names are unbounded")
    }

    /// Appends one line to a key's journal, durably. A line a crash cut short is
    /// ended first, so it never swallows the next one.
    fn append_journal(&self, dir: &Path, event: &Event) -> Result<(), MirrorError> {
        let path = dir.join(JOURNAL);
        let mut file = self
            .dir
            .open(&path, Open::read_write().create(0o600).append())
            .map_err(self.io(&path))?;
        let len = file.metadata().map_err(self.io(&path))?.len();
        let mut line = Vec::new();
        let mut last = [0u8; 1];
        if len > 0 && file.read_at(&mut last, len - 1).is_ok() && last[0] != b'\n' {
            line.push(b'\n');
        }
        line.extend(serde_json::to_vec(event).expect("events serialize"));
        line.push(b'\n');
        file.write_all(&line).map_err(self.io(&path))?;
        file.sync_all().map_err(self.io(&path))?;
        if len == 0 {
            self.sync_rel(dir)?;
        }
        Ok(())
    }

    /// Records that a prefetch found `key` deleted from S3, unless a deletion
    /// seen since the held version was created (`since`, ms) is recorded already.
    pub fn record_deletion(
        &self,
        key: &Key,
        etag: Option<&ETag>,
        since: u64,
    ) -> Result<bool, MirrorError> {
        let dir = history_dir(key.as_str());
        self.ensure_history_dir(&dir)?;
        let _lock = self.lock_path(&dir)?;
        let journal = self.dir.read(&dir.join(JOURNAL)).unwrap_or_default();
        let seen = parse_journal(&journal)
            .iter()
            .any(|e| matches!(e, Event::Deleted(d) if d.at >= since));
        if seen {
            return Ok(false);
        }
        let event = Event::Deleted(Deletion {
            key: key.as_str().to_string(),
            etag: etag.map(|e| e.as_str().to_string()),
            at: now_ms(),
        });
        self.append_journal(&dir, &event)?;
        Ok(true)
    }

    /// Removes the versions replaced before `cutoff` (ms since the epoch), their
    /// journal lines with them; files the mirror had no record of stay. Returns
    /// how many versions and bytes went.
    pub fn expire_history(&self, cutoff: u64) -> Result<(u64, u64), MirrorError> {
        let histories = read_all_histories(&self.dir).map_err(self.io(Path::new(HISTORY_DIR)))?;
        let (mut count, mut bytes) = (0, 0);
        for history in histories {
            let expired = history
                .versions
                .iter()
                .any(|v| !v.unrecorded && v.replaced_at < cutoff);
            if expired {
                let (c, b) = self.expire_key(&history.dir, cutoff)?;
                count += c;
                bytes += b;
            }
        }
        Ok((count, bytes))
    }

    /// Expires one key's versions under its lock: rewrites the journal without
    /// them first (a crash then leaves only files no line names, which the next
    /// run finds by their names), then removes the files.
    fn expire_key(&self, dir_rel: &Path, cutoff: u64) -> Result<(u64, u64), MirrorError> {
        let _lock = self.lock_path(dir_rel)?;
        let history = read_history_dir(&self.dir, dir_rel).map_err(self.io(dir_rel))?;
        let (expired, kept): (Vec<_>, Vec<_>) = history
            .versions
            .iter()
            .cloned()
            .partition(|v| !v.unrecorded && v.replaced_at < cutoff);
        let dir = dir_rel;
        let mut journal = Vec::new();
        let events = kept
            .into_iter()
            .map(Event::Kept)
            .chain(history.deletions.iter().cloned().map(Event::Deleted));
        for event in events {
            journal.extend(serde_json::to_vec(&event).expect("events serialize"));
            journal.push(b'\n');
        }
        self.replace_journal(dir, &journal)?;
        let (mut count, mut bytes) = (0, 0);
        for v in &expired {
            let path = dir.join(&v.file);
            match self.dir.remove_file(&path) {
                Ok(()) => {
                    count += 1;
                    bytes += v.size;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io(&path)(e)),
            }
        }
        self.sync_rel(dir)?;
        if journal.is_empty() {
            // Nothing left to say about the key; the directory goes if it is empty.
            let _ = self.dir.remove_file(&dir.join(JOURNAL));
            if self.dir.remove_dir(dir).is_ok() {
                self.sync_rel(Path::new(HISTORY_DIR))?;
            }
        }
        Ok((count, bytes))
    }

    fn replace_journal(&self, dir: &Path, contents: &[u8]) -> Result<(), MirrorError> {
        let tmp = self.create_temp()?;
        tmp.write_at(contents, 0)?;
        tmp.file.sync_all().map_err(self.io(&tmp.path))?;
        let path = dir.join(JOURNAL);
        self.dir.rename(&tmp.rel, &path).map_err(self.io(&path))?;
        tmp.disarm();
        self.sync_rel(dir)
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::testing::Scratch;

    fn record(key: &str, etag: &str, size: u64) -> Record {
        Record {
            key: Key::new(key).unwrap(),
            etag: ETag::new(etag),
            size,
            md5: None,
            corrupt: false,
        }
    }

    fn put(mirror: &Mirror, rel: &str, key: &str, etag: &str, body: &[u8]) {
        let tmp = mirror.create_temp().unwrap();
        tmp.write_at(body, 0).unwrap();
        let r = record(key, etag, body.len() as u64);
        let mtime = UNIX_EPOCH + Duration::from_secs(1000);
        mirror.commit(tmp, Path::new(rel), &r, mtime).unwrap();
    }

    fn versions(mirror: &Mirror, key: &str) -> Vec<(Option<String>, Vec<u8>)> {
        let history = read_key_history(mirror.dir(), key).unwrap();
        history
            .versions
            .iter()
            .map(|v| {
                let bytes = fs::read(mirror.root().join(history.path_of(v))).unwrap();
                (v.etag.clone(), bytes)
            })
            .collect()
    }

    #[test]
    fn a_replaced_copy_is_kept_with_its_record_and_times() {
        let scratch = Scratch::new(&[]);
        let mirror = &scratch.mirror;
        put(mirror, "a/p.jpg", "a/p.jpg", "\"1\"", b"one");
        put(mirror, "a/p.jpg", "a/p.jpg", "\"1\"", b"one");
        assert!(
            versions(mirror, "a/p.jpg").is_empty(),
            "the same version is not kept"
        );
        put(mirror, "a/p.jpg", "a/p.jpg", "\"2\"", b"two!");
        put(mirror, "a/p.jpg", "a/p.jpg", "\"3\"", b"3");
        assert_eq!(
            versions(mirror, "a/p.jpg"),
            vec![
                (Some("\"1\"".into()), b"one".to_vec()),
                (Some("\"2\"".into()), b"two!".to_vec())
            ]
        );
        let history = read_key_history(mirror.dir(), "a/p.jpg").unwrap();
        let first = &history.versions[0];
        assert_eq!((first.size, first.last_modified), (3, 1_000_000));
        assert!(first.replaced_at <= history.versions[1].replaced_at);
        assert!(history.path_of(first).starts_with(HISTORY_DIR));
        assert!(first.file.ends_with("-p.jpg"), "{}", first.file);
        assert_eq!(fs::read(mirror.root().join("a/p.jpg")).unwrap(), b"3");
    }

    #[test]
    fn keeping_the_same_file_twice_keeps_one_version() {
        let scratch = Scratch::new(&[]);
        let mirror = &scratch.mirror;
        put(mirror, "k", "k", "\"1\"", b"old");
        let path = Path::new("k");
        let key = Key::new("k").unwrap();
        let old = record("k", "\"1\"", 3);
        // As after a crash between keeping the copy and replacing it.
        mirror.keep(path, &key, Some(&old), Keep::Link).unwrap();
        mirror.keep(path, &key, Some(&old), Keep::Link).unwrap();
        assert_eq!(versions(mirror, "k").len(), 1);
        // Its journal line lost: the file is still found, once, by its name.
        let dir = mirror.root().join(history_dir("k"));
        fs::write(dir.join(JOURNAL), b"").unwrap();
        let history = read_key_history(mirror.dir(), "k").unwrap();
        assert_eq!(history.versions.len(), 1);
        assert_eq!(history.versions[0].etag.as_deref(), Some("\"1\""));
        mirror.keep(path, &key, Some(&old), Keep::Link).unwrap();
        assert_eq!(versions(mirror, "k").len(), 1);
    }

    #[test]
    fn a_journal_line_cut_short_is_skipped_and_never_swallows_the_next() {
        let scratch = Scratch::new(&[]);
        let mirror = &scratch.mirror;
        put(mirror, "k", "k", "\"1\"", b"one");
        put(mirror, "k", "k", "\"2\"", b"two");
        let journal = mirror.root().join(history_dir("k")).join(JOURNAL);
        append_raw(&journal, b"{\"event\":\"kept\",\"key\":\"k\",\"fi");
        put(mirror, "k", "k", "\"3\"", b"three");
        let etags: Vec<_> = versions(mirror, "k").into_iter().map(|(e, _)| e).collect();
        assert_eq!(etags, vec![Some("\"1\"".into()), Some("\"2\"".into())]);
    }

    #[test]
    fn deletions_are_recorded_once_per_version() {
        let scratch = Scratch::new(&[]);
        let mirror = &scratch.mirror;
        let key = Key::new("gone").unwrap();
        let etag = ETag::new("\"1\"");
        assert!(mirror.record_deletion(&key, Some(&etag), 5).unwrap());
        assert!(!mirror.record_deletion(&key, Some(&etag), 5).unwrap());
        // Created again after that deletion, then deleted again.
        assert!(
            mirror
                .record_deletion(&key, Some(&etag), u64::MAX - 1)
                .unwrap()
        );
        let history = read_key_history(mirror.dir(), "gone").unwrap();
        assert_eq!(history.deletions.len(), 2);
        assert_eq!(history.key(), Some("gone"));
    }

    #[test]
    fn expiry_removes_old_versions_but_never_unrecorded_files() {
        let scratch = Scratch::new(&[]);
        let mirror = &scratch.mirror;
        fs::write(mirror.root().join("mine"), b"user's").unwrap();
        put(mirror, "mine", "mine", "\"1\"", b"one");
        put(mirror, "mine", "mine", "\"2\"", b"two");
        put(mirror, "other", "other", "\"1\"", b"x");
        put(mirror, "other", "other", "\"2\"", b"y");
        assert_eq!(
            mirror.expire_history(0).unwrap(),
            (0, 0),
            "nothing that old"
        );
        assert_eq!(mirror.expire_history(u64::MAX).unwrap(), (2, 4));
        let left = read_key_history(mirror.dir(), "mine").unwrap();
        assert_eq!(left.versions.len(), 1);
        assert!(left.versions[0].unrecorded);
        assert_eq!(versions(mirror, "mine")[0].1, b"user's");
        assert!(
            !mirror.root().join(history_dir("other")).exists(),
            "an emptied history directory goes"
        );
    }

    #[test]
    fn without_versions_only_unrecorded_files_are_kept() {
        let scratch = Scratch::new(&[]);
        let mirror = &scratch.mirror;
        mirror.set_keep_versions(false);
        put(mirror, "k", "k", "\"1\"", b"one");
        put(mirror, "k", "k", "\"2\"", b"two");
        assert!(versions(mirror, "k").is_empty());
        fs::write(mirror.root().join("u"), b"mine").unwrap();
        put(mirror, "u", "u", "\"1\"", b"s3");
        assert_eq!(versions(mirror, "u").len(), 1);
    }

    #[test]
    fn the_version_current_at_a_time_is_the_one_the_mirror_held() {
        // v1 created at 10, replaced at 50; v2 created at 40, replaced at 80;
        // the current copy created at 70.
        let versions = [(10, Some(50)), (40, Some(80)), (70, None)];
        let at = |t| current_at(&versions, &[], t);
        assert_eq!(at(5), None, "not yet created");
        assert_eq!(at(10), Some(0));
        assert_eq!(at(45), Some(0), "the mirror still held v1");
        assert_eq!(at(50), Some(1));
        assert_eq!(at(79), Some(1));
        assert_eq!(at(80), Some(2));
        assert_eq!(at(u64::MAX - 1), Some(2));
        // Found deleted at 60 while v2 was held; created again at 70.
        let deleted = |t| current_at(&versions, &[60], t);
        assert_eq!(deleted(59), Some(1));
        assert_eq!(deleted(60), None);
        assert_eq!(deleted(79), None, "v2 was gone from S3");
        assert_eq!(deleted(80), Some(2), "created again after the deletion");
        // Pruned at 60 (kept with replaced_at 60), never created again.
        let pruned = [(10, Some(60))];
        assert_eq!(current_at(&pruned, &[60], 59), Some(0));
        assert_eq!(current_at(&pruned, &[60], 61), None);
    }

    /// Appends raw bytes to a journal: a line cut short by a crash.
    fn append_raw(path: &Path, bytes: &[u8]) {
        let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        file.write_all(bytes).unwrap();
    }
}
