//! What the mirror holds, read without changing it: every recorded copy (files and
//! directory markers), the index of what the last prefetch listed, who holds the
//! run lock. For `status`, `verify` and `restore`, which must never create a mirror
//! where there is none.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::identity::{Identity, read_identity};
use super::{Mirror, MirrorError, Record, read_record_in, read_record_of, write_record};
use crate::layout::{RENAMED_DIR, STATE_DIR};
use crate::spool::{Sorter, Spool, SpoolRecord};
use crate::store::raw_bytes::bytes_of;
use crate::store::{ETag, Key};
use crate::sys::beneath::{Dir, Open};

/// Where the index of each prefetched prefix lives, inside the state directory.
const INDEX_DIR: &str = "index";

/// One recorded copy in the mirror.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the mirror root.
    pub path: PathBuf,
    pub record: Record,
    /// A directory made from a zero-byte `dir/` marker object.
    pub directory: bool,
}

impl Entry {
    /// Whether the copy lives under `.s3mirrorfs/renamed/` instead of its key's path.
    pub fn is_renamed(&self) -> bool {
        self.path.starts_with(RENAMED_DIR)
    }

    /// Whether `verify` marked this copy as corrupt.
    pub fn is_marked_corrupt(&self) -> bool {
        self.record.corrupt
    }
}

/// A directory of the mirror that could not be read while walking it.
#[derive(Debug)]
pub struct WalkError {
    pub path: PathBuf,
    pub err: io::Error,
}

/// An existing mirror, opened read-only: nothing is created, claimed or cleaned.
#[derive(Debug)]
pub struct MirrorView {
    root: PathBuf,
    state: PathBuf,
    /// The root, opened: reads resolve beneath it and never follow a symlink, so
    /// an admin reading another user's mirror reads only that mirror.
    dir: Dir,
    /// What `mirror.json` says; `None` for a mirror never used for a bucket.
    pub identity: Option<Identity>,
}

impl MirrorView {
    /// Opens the mirror at `root`, or says why it is not one.
    pub fn open(root: &Path) -> Result<MirrorView, MirrorError> {
        let state = root.join(STATE_DIR);
        let dir = match Dir::open_root(root) {
            Ok(dir) => dir,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(MirrorError::NoMirror(root.to_path_buf()));
            }
            Err(err) => {
                return Err(MirrorError::Io {
                    path: root.to_path_buf(),
                    err,
                });
            }
        };
        match dir.symlink_metadata(Path::new(STATE_DIR)) {
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) if meta.is_symlink() => {
                return Err(MirrorError::Io {
                    path: state,
                    err: io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "is a symlink; the state directory must be a real directory",
                    ),
                });
            }
            Ok(_) => return Err(MirrorError::NotAMirror(root.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(MirrorError::NotAMirror(root.to_path_buf()));
            }
            Err(err) => {
                return Err(MirrorError::Io { path: state, err });
            }
        }
        let identity = read_identity(root, &dir)?;
        Ok(MirrorView {
            root: root.to_path_buf(),
            state,
            dir,
            identity,
        })
    }

    /// The mirror's root directory, as named.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The mirror's root directory, opened: read the mirror through it.
    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    /// The uid that owns the mirror directory.
    pub fn owner(&self) -> Result<u32, MirrorError> {
        self.dir.owner().map_err(|err| MirrorError::Io {
            path: self.root.clone(),
            err,
        })
    }

    /// Fails unless the mirror belongs to `bucket` (or to no bucket yet).
    pub fn check_bucket(&self, bucket: &str) -> Result<(), MirrorError> {
        match &self.identity {
            Some(existing) if existing.bucket != bucket => Err(MirrorError::WrongBucket {
                path: self.root.clone(),
                existing: existing.bucket.clone(),
                requested: bucket.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Reads a file of the state directory; `None` if it is not there.
    pub fn read_state_file(&self, name: &str) -> Result<Option<Vec<u8>>, MirrorError> {
        let path = self.state.join(name);
        match self.dir.read(&Path::new(STATE_DIR).join(name)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(MirrorError::Io { path, err }),
        }
    }

    /// Who holds the run lock right now, without taking it (a prefetch starting at
    /// the same moment must not find it busy).
    pub fn locked_by(&self) -> Result<Option<String>, MirrorError> {
        let path = self.state.join("lock");
        let rel = Path::new(STATE_DIR).join("lock");
        let file = match self.dir.open_read(&rel) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(MirrorError::Io { path, err }),
        };
        let held = match held_per_proc_locks(&file) {
            Some(held) => held,
            None => match file.try_lock_shared() {
                Ok(()) => false,
                Err(std::fs::TryLockError::WouldBlock) => true,
                Err(std::fs::TryLockError::Error(err)) => {
                    return Err(MirrorError::Io { path, err });
                }
            },
        };
        if !held {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&self.dir.read(&rel).unwrap_or_default()).into_owned();
        let holder = text.trim();
        Ok(Some(if holder.is_empty() {
            "another process".to_string()
        } else {
            holder.to_string()
        }))
    }

    /// Every recorded copy: the key tree and `.s3mirrorfs/renamed/`, files and
    /// marker directories, with the directories that could not be read.
    pub fn entries(&self) -> (Vec<Entry>, Vec<WalkError>) {
        walk(&self.dir, &self.root)
    }

    /// `entries`, one at a time and in no order, without holding them all.
    pub fn each_entry(&self, mut each: impl FnMut(Entry)) -> Vec<WalkError> {
        walk_each(&self.dir, &self.root, &mut each)
    }

    /// Every entry of every index, one at a time, the oldest index first (so
    /// of several entries of one key, the newest comes last). An index that
    /// cannot be read is skipped from where it stops making sense, with a warning.
    pub fn each_index_entry(&self, mut each: impl FnMut(IndexEntry)) -> Result<(), MirrorError> {
        use std::io::BufRead;
        let rel = Path::new(STATE_DIR).join(INDEX_DIR);
        let dir = self.state.join(INDEX_DIR);
        let names = match self.dir.read_dir(&rel) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(MirrorError::Io { path: dir, err }),
        };
        let mut files = Vec::new();
        for entry in names {
            let path = dir.join(&entry.name);
            let io_error = |err| MirrorError::Io {
                path: path.clone(),
                err,
            };
            let file = self
                .dir
                .open_read(&rel.join(&entry.name))
                .map_err(io_error)?;
            let mut reader = io::BufReader::new(file);
            let mut header = Vec::new();
            reader.read_until(b'\n', &mut header).map_err(io_error)?;
            match serde_json::from_slice::<IndexHeader>(&header) {
                Ok(header) => files.push((header.written, path, reader)),
                Err(_) => tracing::warn!(path = %path.display(), "ignoring an unreadable index"),
            }
        }
        files.sort_by_key(|(written, _, _)| *written);
        for (_, path, reader) in files {
            for line in reader.split(b'\n') {
                let line = line.map_err(|err| MirrorError::Io {
                    path: path.clone(),
                    err,
                })?;
                if line.is_empty() {
                    continue;
                }
                match IndexEntry::parse(&line) {
                    Some(entry) => each(entry),
                    None => {
                        tracing::warn!(path = %path.display(), "an index entry cannot be read; ignoring the rest of the index");
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// The index each prefetch left of what it listed; the newest entry wins for a
    /// key that several prefixes cover.
    pub fn index(&self) -> Result<HashMap<Key, IndexEntry>, MirrorError> {
        let rel = Path::new(STATE_DIR).join(INDEX_DIR);
        let dir = self.state.join(INDEX_DIR);
        let mut files = Vec::new();
        match self.dir.read_dir(&rel) {
            Ok(entries) => {
                for entry in entries {
                    let path = dir.join(&entry.name);
                    let bytes =
                        self.dir
                            .read(&rel.join(&entry.name))
                            .map_err(|err| MirrorError::Io {
                                path: path.clone(),
                                err,
                            })?;
                    match Index::decode(&bytes) {
                        Some(index) => files.push(index),
                        None => {
                            tracing::warn!(path = %path.display(), "ignoring an unreadable index")
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(MirrorError::Io { path: dir, err }),
        }
        files.sort_by_key(|i| i.written);
        let mut merged = HashMap::new();
        for index in files {
            for entry in index.entries {
                merged.insert(entry.key.clone(), entry);
            }
        }
        Ok(merged)
    }
}

/// A recorded copy as a spool keeps it (sorted by key).
#[derive(Serialize, Deserialize)]
pub struct SpooledEntry {
    p: PathBuf,
    k: String,
    e: String,
    s: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    m: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    x: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    d: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl SpoolRecord for SpooledEntry {
    fn sort_key(&self) -> Cow<'_, [u8]> {
        bytes_of(&self.k)
    }
}

impl SpooledEntry {
    pub fn of(entry: Entry) -> SpooledEntry {
        let record = entry.record;
        SpooledEntry {
            p: entry.path,
            k: record.key.into(),
            e: record.etag.as_str().to_string(),
            s: record.size,
            m: record.md5,
            x: record.corrupt,
            d: entry.directory,
        }
    }

    pub fn path(&self) -> &Path {
        &self.p
    }

    pub fn key(&self) -> &str {
        &self.k
    }

    /// The entry; `None` for one whose key is not a key (never written so).
    pub fn entry(self) -> Option<Entry> {
        let record = Record {
            key: Key::new(self.k).ok()?,
            etag: ETag::new(&self.e),
            size: self.s,
            md5: self.m,
            corrupt: self.x,
        };
        Some(Entry {
            path: self.p,
            record,
            directory: self.d,
        })
    }
}

/// An index entry as a spool keeps it (sorted by key).
#[derive(Serialize, Deserialize)]
pub struct SpooledIndexEntry {
    k: String,
    p: String,
    e: String,
    s: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    m: Option<String>,
}

impl SpoolRecord for SpooledIndexEntry {
    fn sort_key(&self) -> Cow<'_, [u8]> {
        bytes_of(&self.k)
    }
}

impl SpooledIndexEntry {
    pub fn of(entry: &IndexEntry) -> SpooledIndexEntry {
        SpooledIndexEntry {
            k: entry.key.as_str().to_string(),
            p: entry.path.clone(),
            e: entry.etag.as_str().to_string(),
            s: entry.size,
            m: entry.md5.clone(),
        }
    }

    pub fn entry(self) -> Option<IndexEntry> {
        Some(IndexEntry {
            key: Key::new(self.k).ok()?,
            path: self.p,
            etag: ETag::new(&self.e),
            size: self.s,
            md5: self.m,
        })
    }
}

/// Of several index entries of one key in a sorted index (from the indexes of
/// several prefixes), the one written last.
pub fn newest_of_each(
    sorted: impl Iterator<Item = io::Result<SpooledIndexEntry>>,
) -> impl Iterator<Item = io::Result<SpooledIndexEntry>> {
    let mut sorted = sorted.peekable();
    std::iter::from_fn(move || {
        let mut entry = match sorted.next()? {
            Ok(entry) => entry,
            Err(e) => return Some(Err(e)),
        };
        while let Some(Ok(newer)) = sorted.next_if(|n| matches!(n, Ok(n) if n.k == entry.k)) {
            entry = newer;
        }
        Some(Ok(entry))
    })
}

impl MirrorView {
    /// The index entries of keys under `prefix`, spooled to `scratch` to be
    /// read back sorted (through `newest_of_each`). An index that cannot be
    /// read is skipped, with a warning; the error is the scratch file's.
    pub fn sorted_index(
        &self,
        prefix: &str,
        scratch: File,
    ) -> io::Result<Spool<SpooledIndexEntry>> {
        let mut sorter = Sorter::new(scratch);
        let mut failed = None;
        let read = self.each_index_entry(|entry| {
            if failed.is_none()
                && entry.key.as_str().starts_with(prefix)
                && let Err(e) = sorter.push(SpooledIndexEntry::of(&entry))
            {
                failed = Some(e);
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        if let Err(e) = read {
            tracing::warn!("cannot read the index of the last prefetch: {e}");
        }
        sorter.finish()
    }

    /// The recorded copies `keep` wants, spooled to `scratch` to be read back
    /// sorted by key, with the directories that could not be read.
    pub fn sorted_entries(
        &self,
        scratch: File,
        keep: impl Fn(&Entry) -> bool,
    ) -> io::Result<(Spool<SpooledEntry>, Vec<WalkError>)> {
        let mut sorter = Sorter::new(scratch);
        let mut failed = None;
        let errors = self.each_entry(|entry| {
            if failed.is_none()
                && keep(&entry)
                && let Err(e) = sorter.push(SpooledEntry::of(entry))
            {
                failed = Some(e);
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        Ok((sorter.finish()?, errors))
    }

    /// A scratch file for work too big for memory: unnamed, in the mirror's
    /// `.s3mirrorfs/tmp` when this user may write there (on the mirror's disk,
    /// and gone with its last handle), else in the system's temp directory.
    pub fn scratch_file(&self) -> io::Result<File> {
        let tmp = Path::new(STATE_DIR).join("tmp");
        let unnamed = Open::read_write().unnamed(0o600);
        self.dir.open(&tmp, unnamed).or_else(|_| {
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_TMPFILE)
                .open(std::env::temp_dir())
        })
    }
}

/// Whether `/proc/locks` shows an flock on `file`; `None` if it cannot tell alone.
fn held_per_proc_locks(file: &File) -> Option<bool> {
    let meta = file.metadata().ok()?;
    let text = fs::read_to_string("/proc/locks").ok()?;
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let wanted = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let inode = format!(":{}", meta.ino());
    let mut same_inode_elsewhere = false;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 7576 fe:00:5324941 0 EOF"; blocked waiters ("->") aside.
        if fields.get(1) != Some(&"FLOCK") {
            continue;
        }
        match fields.get(5) {
            Some(id) if *id == wanted => return Some(true),
            Some(id) if id.ends_with(&inode) => same_inode_elsewhere = true,
            _ => {}
        }
    }
    // Stacked filesystems (overlayfs) may show the lower device: then only a probe can tell.
    (!same_inode_elsewhere).then_some(false)
}

/// Walks the key tree and the renamed directory for recorded files and marker
/// directories, beneath `root` (named `name` in errors); symlinks are skipped.
pub(super) fn walk(root: &Dir, name: &Path) -> (Vec<Entry>, Vec<WalkError>) {
    let mut found = Vec::new();
    let errors = walk_each(root, name, &mut |entry| found.push(entry));
    found.sort_by(|a, b| a.record.key.cmp(&b.record.key));
    (found, errors)
}

/// `walk`, handing each entry to `each` as it is found instead of keeping them.
pub(super) fn walk_each(root: &Dir, name: &Path, each: &mut dyn FnMut(Entry)) -> Vec<WalkError> {
    let mut errors = Vec::new();
    let state = Path::new(STATE_DIR);
    let renamed = Path::new(RENAMED_DIR);
    let mut stack = vec![PathBuf::new()];
    while let Some(dir) = stack.pop() {
        let entries = match root.read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound && dir == renamed => continue,
            Err(err) => {
                errors.push(WalkError {
                    path: name.join(&dir),
                    err,
                });
                continue;
            }
        };
        for entry in entries {
            let rel = dir.join(&entry.name);
            let (directory, file) = match entry.kind {
                libc::DT_DIR => (true, false),
                libc::DT_REG => (false, true),
                libc::DT_UNKNOWN => match root.symlink_metadata(&rel) {
                    Ok(meta) => (meta.is_dir(), meta.is_file()),
                    Err(_) => continue,
                },
                _ => continue,
            };
            if directory {
                if rel == state {
                    stack.push(renamed.to_path_buf());
                    continue;
                }
                stack.push(rel.clone());
            } else if !file {
                continue;
            }
            if let Some(record) = read_record_in(root, &rel) {
                each(Entry {
                    path: rel,
                    record,
                    directory,
                });
            }
        }
    }
    errors
}

/// Marks the open copy as corrupt (`Record::corrupt`); its bytes stay.
pub fn mark_corrupt(file: &File, record: &Record) -> io::Result<()> {
    if record.corrupt {
        return Ok(());
    }
    let marked = Record {
        corrupt: true,
        ..record.clone()
    };
    write_record(file, &marked)?;
    file.sync_all()
}

/// One object the last prefetch of a prefix listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub key: Key,
    /// Where the copy goes, relative to the mirror root.
    pub path: String,
    pub etag: ETag,
    pub size: u64,
    /// MD5 of the copy's bytes once it is in the mirror: with the path, what
    /// vouches for a copy whose extended attributes were lost.
    pub md5: Option<String>,
}

impl IndexEntry {
    /// The record this entry gives its copy.
    pub fn record(&self) -> Record {
        Record {
            key: self.key.clone(),
            etag: self.etag.clone(),
            size: self.size,
            md5: self.md5.clone(),
            corrupt: false,
        }
    }

    /// The record of the file or directory at `rel` (whose metadata is `meta`)
    /// when this entry describes it: the same path, and a file of the indexed
    /// size or the directory of a `dir/` marker. What vouches for a copy that lost
    /// its extended attributes; its bytes are still to be checked against the MD5.
    pub fn vouches_for(&self, rel: &Path, meta: &fs::Metadata) -> Option<Record> {
        let marker = self.size == 0 && self.key.as_str().ends_with('/');
        let fits = (meta.is_file() && meta.len() == self.size) || (meta.is_dir() && marker);
        (Path::new(&self.path) == rel && fits).then(|| self.record())
    }
}

/// The objects one prefetch listed under its prefix.
#[derive(Debug, PartialEq)]
pub struct Index {
    pub prefix: String,
    /// Seconds since the epoch.
    pub written: u64,
    pub entries: Vec<IndexEntry>,
}

#[derive(Serialize, Deserialize)]
struct IndexHeader {
    prefix: String,
    written: u64,
}

impl Index {
    /// One JSON header line, then one compact line per object: `[key, etag, size]`,
    /// `[key, etag, size, path]` when the path is not the key, and
    /// `[key, etag, size, path or null, md5]` once the copy's MD5 is known.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = header_line(&self.prefix, self.written);
        for e in &self.entries {
            out.extend(e.line());
        }
        out
    }

    /// Parses `encode`'s format; `None` for anything else, including an entry
    /// with an empty key.
    pub fn decode(bytes: &[u8]) -> Option<Index> {
        let mut lines = bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty());
        let header: IndexHeader = serde_json::from_slice(lines.next()?).ok()?;
        let entries = lines.map(IndexEntry::parse).collect::<Option<_>>()?;
        Some(Index {
            prefix: header.prefix,
            written: header.written,
            entries,
        })
    }
}

fn header_line(prefix: &str, written: u64) -> Vec<u8> {
    let mut out = serde_json::to_vec(&IndexHeader {
        prefix: prefix.to_string(),
        written,
    })
    .expect("header serializes");
    out.push(b'\n');
    out
}

impl IndexEntry {
    /// The entry as one line of an index file.
    fn line(&self) -> Vec<u8> {
        let (key, etag) = (self.key.as_str(), self.etag.as_str());
        let path = (self.path != key).then_some(self.path.as_str());
        let line = match (&self.md5, path) {
            (Some(md5), path) => serde_json::to_vec(&(key, etag, self.size, path, md5)),
            (None, None) => serde_json::to_vec(&(key, etag, self.size)),
            (None, Some(path)) => serde_json::to_vec(&(key, etag, self.size, path)),
        };
        let mut line = line.expect("entry serializes");
        line.push(b'\n');
        line
    }

    fn parse(line: &[u8]) -> Option<IndexEntry> {
        let value: serde_json::Value = serde_json::from_slice(line).ok()?;
        let fields = value.as_array()?;
        let key = Key::new(fields.first()?.as_str()?).ok()?;
        let path = match fields.get(3) {
            Some(serde_json::Value::Null) | None => key.as_str().to_string(),
            Some(p) => p.as_str()?.to_string(),
        };
        let md5 = match fields.get(4) {
            Some(m) => Some(m.as_str()?.to_string()),
            None => None,
        };
        Some(IndexEntry {
            etag: ETag::new(fields.get(1)?.as_str()?),
            size: fields.get(2)?.as_u64()?,
            path,
            key,
            md5,
        })
    }
}

/// An index being written entry by entry; the old one stays until `commit`.
pub struct IndexWriter<'a> {
    out: super::StateWriter<'a>,
}

impl IndexWriter<'_> {
    pub fn push(&mut self, entry: &IndexEntry) -> Result<(), MirrorError> {
        self.out.write_all(&entry.line())
    }

    /// Puts the index in place, atomically and durably.
    pub fn commit(self) -> Result<(), MirrorError> {
        self.out.commit()
    }
}

impl Mirror {
    /// A read-only view of this mirror, through the root it opened.
    pub fn view(&self) -> Result<MirrorView, MirrorError> {
        let dir = self.dir.try_clone().map_err(self.io(&self.root))?;
        Ok(MirrorView {
            root: self.root.clone(),
            state: self.state.clone(),
            identity: read_identity(&self.root, &dir)?,
            dir,
        })
    }

    /// Records on a directory made from a zero-byte `dir/` marker which object it
    /// stands for, so the marker can be verified and restored. Leaves a record that
    /// already says the same alone.
    pub fn record_marker(&self, rel: &Path, record: &Record) -> Result<(), MirrorError> {
        let path = self.root.join(rel);
        let dir = self.dir.open_read(rel).map_err(self.io(&path))?;
        if read_record_of(&dir).as_ref() == Some(record) {
            return Ok(());
        }
        write_record(&dir, record).map_err(self.io(&path))?;
        dir.sync_all().map_err(self.io(&path))?;
        self.drop_other_copies(record, rel);
        Ok(())
    }

    /// Gives the file at `rel` back the record it lost (a copy of the mirror made
    /// without extended attributes) when `entry` vouches for it: same path and
    /// size, and its bytes hash to the indexed MD5. Returns whether it did.
    pub fn adopt(&self, rel: &Path, entry: &IndexEntry) -> Result<bool, MirrorError> {
        let Some(md5) = &entry.md5 else {
            return Ok(false);
        };
        let path = self.root.join(rel);
        let file = self.dir.open_read(rel).map_err(self.io(&path))?;
        let meta = file.metadata().map_err(self.io(&path))?;
        if !meta.is_file() || meta.len() != entry.size || read_record_of(&file).is_some() {
            return Ok(false);
        }
        if super::md5_file(&file).map_err(self.io(&path))? != *md5 {
            return Ok(false);
        }
        let record = entry.record();
        write_record(&file, &record).map_err(self.io(&path))?;
        file.sync_all().map_err(self.io(&path))?;
        tracing::info!(key = %entry.key, path = %rel.display(), "the index vouches for a copy without its record; record restored");
        Ok(true)
    }

    /// Saves, atomically and durably, the index of what a prefetch of `prefix` listed.
    pub fn write_index(&self, prefix: &str, entries: Vec<IndexEntry>) -> Result<(), MirrorError> {
        let mut writer = self.index_writer(prefix)?;
        for entry in &entries {
            writer.push(entry)?;
        }
        writer.commit()
    }

    /// The index of `prefix`, written entry by entry (in key order, as a
    /// listing gives them).
    pub fn index_writer(&self, prefix: &str) -> Result<IndexWriter<'_>, MirrorError> {
        let written = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let digest = Sha256::digest(prefix.as_bytes());
        let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        let mut out = self.state_writer(&format!("{INDEX_DIR}/{name}.jsonl"))?;
        out.write_all(&header_line(prefix, written))?;
        Ok(IndexWriter { out })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::renamed_path;

    fn put(mirror: &Mirror, rel: &Path, key: &str, data: &[u8]) {
        let tmp = mirror.create_temp().unwrap();
        tmp.write_at(data, 0).unwrap();
        let record = Record {
            key: Key::new(key).unwrap(),
            etag: ETag::new("\"e\""),
            size: data.len() as u64,
            md5: Some(tmp.md5().unwrap()),
            corrupt: false,
        };
        mirror.commit(tmp, rel, &record, UNIX_EPOCH).unwrap();
    }

    #[test]
    fn a_view_never_creates_a_mirror() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(matches!(
            MirrorView::open(&missing),
            Err(MirrorError::NoMirror(_))
        ));
        assert!(!missing.exists());
        assert!(matches!(
            MirrorView::open(dir.path()),
            Err(MirrorError::NotAMirror(_))
        ));
        assert!(!dir.path().join(STATE_DIR).exists());
    }

    #[test]
    fn entries_include_markers_and_renamed_keys() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::open(dir.path(), "b").unwrap();
        put(&mirror, Path::new("a/x"), "a/x", b"1");
        put(&mirror, &renamed_path("../y"), "../y", b"22");
        mirror.ensure_dir(Path::new("empty")).unwrap();
        let marker = Record {
            key: Key::new("empty/").unwrap(),
            etag: ETag::new("\"d41d8cd98f00b204e9800998ecf8427e\""),
            size: 0,
            md5: Some("d41d8cd98f00b204e9800998ecf8427e".into()),
            corrupt: false,
        };
        mirror.record_marker(Path::new("empty"), &marker).unwrap();
        mirror.ensure_dir(Path::new("plain")).unwrap();
        let view = MirrorView::open(dir.path()).unwrap();
        assert_eq!(view.identity, None);
        let (entries, errors) = view.entries();
        assert!(errors.is_empty());
        let keys: Vec<(&str, bool, bool)> = entries
            .iter()
            .map(|e| (e.record.key.as_str(), e.directory, e.is_renamed()))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("../y", false, true),
                ("a/x", false, false),
                ("empty/", true, false)
            ]
        );
        assert_eq!(entries[2].record, marker);
    }

    #[test]
    fn the_index_round_trips_and_the_newest_wins() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::open(dir.path(), "b").unwrap();
        let entry = |key: &str, path: &str, etag: &str| IndexEntry {
            key: Key::new(key).unwrap(),
            path: path.into(),
            etag: ETag::new(etag),
            size: 3,
            md5: None,
        };
        let with_md5 = |entry: IndexEntry| IndexEntry {
            md5: Some("900150983cd24fb0d6963f7d28e17f72".into()),
            ..entry
        };
        let index = Index {
            prefix: "p/".into(),
            written: 7,
            entries: vec![
                entry("p/a", "p/a", "\"1\""),
                entry("p/\n", ".s3mirrorfs/renamed/x", "\"2\""),
                with_md5(entry("p/b", "p/b", "\"3\"")),
                with_md5(entry("p/c\t", ".s3mirrorfs/renamed/y", "\"4\"")),
            ],
        };
        assert_eq!(Index::decode(&index.encode()), Some(index));
        assert_eq!(Index::decode(b"junk"), None);
        let header = b"{\"prefix\":\"\",\"written\":1}\n";
        assert_eq!(
            Index::decode(&[&header[..], b"[\"\",\"\\\"e\\\"\",1]\n"].concat()),
            None,
            "an empty key"
        );
        mirror
            .write_index(
                "",
                vec![entry("p/a", "p/a", "\"old\""), entry("q", "q", "\"q\"")],
            )
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        mirror
            .write_index("p/", vec![entry("p/a", "p/a", "\"new\"")])
            .unwrap();
        let merged = MirrorView::open(dir.path()).unwrap().index().unwrap();
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[&Key::new("p/a").unwrap()].etag, ETag::new("\"new\""));
    }

    #[test]
    fn the_lock_holder_is_seen_without_taking_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::open(dir.path(), "b").unwrap();
        let view = MirrorView::open(dir.path()).unwrap();
        assert_eq!(view.locked_by().unwrap(), None);
        let held = mirror.lock("pid 1 (test)").unwrap();
        assert_eq!(view.locked_by().unwrap().as_deref(), Some("pid 1 (test)"));
        drop(held);
        assert_eq!(view.locked_by().unwrap(), None);
    }

    #[test]
    fn a_corrupt_mark_makes_the_copy_stale() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::open(dir.path(), "b").unwrap();
        put(&mirror, Path::new("k"), "k", b"abc");
        let file = File::open(dir.path().join("k")).unwrap();
        let record = read_record_of(&file).unwrap();
        mark_corrupt(&file, &record).unwrap();
        assert_eq!(
            mirror.status(
                Path::new("k"),
                &Key::new("k").unwrap(),
                &ETag::new("\"e\""),
                3
            ),
            super::super::LocalStatus::Stale
        );
        let (entries, _) = MirrorView::open(dir.path()).unwrap().entries();
        assert!(entries[0].is_marked_corrupt());
        assert_eq!(fs::read(dir.path().join("k")).unwrap(), b"abc");
    }
}
