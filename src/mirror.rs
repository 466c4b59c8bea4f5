//! The durable copy on disk. Owns the mirror directory and its `.s3mirrorfs/`
//! state: atomic, fsynced writes whose ETag record (an xattr) lands with the bytes
//! in one rename, the run lock, per-object locks shared with other processes, and
//! the clean-up of temp files left by a crash.

mod hashing;
pub mod history;
pub mod identity;
pub mod inventory;
mod open;

pub use hashing::{PrefixMd5, md5_file};

use std::fs::{self, DirBuilder, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use parking_lot::Mutex;
use xattr::FileExt as _;

use identity::{Claim, IDENTITY_FILE, Shown, Source, SourceField};

use crate::layout::{RENAMED_DIR, STATE_DIR, possible_paths, renamed_path};
use crate::store::{ETag, Key};
use crate::sys;
use crate::sys::beneath::{Dir, Open};

/// The extended attribute that records which object a file holds.
pub const RECORD_XATTR: &str = "user.s3mirrorfs";
/// Mode of mirrored files: a backup is never world-readable.
pub const FILE_MODE: u32 = 0o640;
/// MD5 of no bytes: the content hash of every marker and empty object.
pub const EMPTY_MD5: &str = "d41d8cd98f00b204e9800998ecf8427e";
/// Mode of mirror directories.
pub const DIR_MODE: u32 = 0o750;
const STATE_MODE: u32 = 0o700;

/// What a mirrored file holds: the object's true key, its ETag, its size and the
/// MD5 of the bytes as they were stored (so bit rot can be found later, whatever
/// kind of ETag the object has).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub key: Key,
    pub etag: ETag,
    pub size: u64,
    /// Lower-case hex MD5 of the file's contents; `None` in records written before
    /// it was kept (`s3mirrorfs1`).
    pub md5: Option<String>,
    /// `verify` found the bytes bad: the copy matches no listing any more, so the
    /// next prefetch fetches it again, and until then the bytes stay (they may be
    /// the only copy left).
    pub corrupt: bool,
}

/// How a corrupt copy's record is written: in front of its ETag, so that an
/// older version of the tool, which knows no such flag, also sees another
/// version than S3 lists and fetches it again.
pub const CORRUPT_MARK: &str = "corrupt:";

impl Record {
    /// `s3mirrorfs2\n<etag>\n<size>\n<md5>\n<key bytes>`: the key comes last and
    /// raw, so any key fits (S3 keys are at most 1 KiB; ext4 allows ~4 KiB of xattrs).
    /// A record without an MD5 keeps the older `s3mirrorfs1` form.
    pub fn encode(&self) -> Vec<u8> {
        let mark = if self.corrupt { CORRUPT_MARK } else { "" };
        // Raw, not as `Key` displays itself (escaped for terminals).
        let (etag, size, key) = (self.etag.as_str(), self.size, self.key.as_str());
        match &self.md5 {
            Some(md5) => format!("s3mirrorfs2\n{mark}{etag}\n{size}\n{md5}\n{key}"),
            None => format!("s3mirrorfs1\n{mark}{etag}\n{size}\n{key}"),
        }
        .into_bytes()
    }

    /// Parses `encode`'s formats; `None` for anything else, including a record
    /// with an empty key (S3 has no such object).
    pub fn decode(bytes: &[u8]) -> Option<Record> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (version, rest) = text.split_once('\n')?;
        let fields = match version {
            "s3mirrorfs1" => 3,
            "s3mirrorfs2" => 4,
            _ => return None,
        };
        let mut parts = rest.splitn(fields, '\n');
        let etag = parts.next()?;
        let (etag, corrupt) = match etag.strip_prefix(CORRUPT_MARK) {
            Some(etag) => (ETag::new(etag), true),
            None => (ETag::new(etag), false),
        };
        let size = parts.next()?.parse().ok()?;
        let md5 = if fields == 4 {
            let md5 = parts.next()?;
            if md5.len() != 32 || !md5.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            Some(md5.to_ascii_lowercase())
        } else {
            None
        };
        let key = Key::new(parts.next()?).ok()?;
        Some(Record {
            key,
            etag,
            size,
            md5,
            corrupt,
        })
    }
}

impl Record {
    /// The MD5 the copy's bytes must have, if known: the one recorded at download,
    /// else the ETag when it has the form of a plain MD5 (copies recorded before
    /// content hashes were kept).
    pub fn expected_md5(&self) -> Option<String> {
        self.md5.clone().or_else(|| {
            self.etag
                .looks_like_md5()
                .then(|| self.etag.as_str().trim_matches('"').to_ascii_lowercase())
        })
    }
}

/// How a local copy compares with the object S3 lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LocalStatus {
    /// Same key, ETag and size: nothing to fetch.
    Current,
    /// No file there.
    Missing,
    /// A sound copy of this key at another version: S3 changed it.
    Changed,
    /// A file is there but holds another key, no record, a copy marked corrupt,
    /// or was truncated.
    Stale,
}

/// Failures of the mirror store.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: io::Error },
    #[error("mirror directory {path} cannot be created or written: {err}")]
    NotWritable { path: PathBuf, err: io::Error },
    #[error("mirror {mirror} is out of space (writing {path})")]
    NoSpace { mirror: PathBuf, path: PathBuf },
    #[error(
        "the filesystem of {0} does not support user extended attributes, which the mirror needs to record ETags"
    )]
    NoXattr(PathBuf),
    #[error("mirror {path} belongs to bucket {existing:?}, not {requested:?}")]
    WrongBucket {
        path: PathBuf,
        existing: String,
        requested: String,
    },
    #[error(
        "mirror {path} was made from {field} {} but this run uses {}; pass --allow-new-source if the bucket really moved",
        Shown(*.field, .recorded),
        Shown(*.field, .requested)
    )]
    OtherSource {
        path: PathBuf,
        field: SourceField,
        recorded: String,
        requested: String,
    },
    #[error("mirror {path} is in use by {holder}")]
    Busy { path: PathBuf, holder: String },
    #[error("{path}: {why}")]
    Blocked { path: PathBuf, why: &'static str },
    #[error("no mirror at {0} (the directory does not exist)")]
    NoMirror(PathBuf),
    #[error("{0} is not an s3mirrorfs mirror (it has no .s3mirrorfs directory)")]
    NotAMirror(PathBuf),
    #[error(
        "mirror directory {path} is owned by {owner}, not by {user} who runs this command; run it as {owner} (for the mount: --setuid / setuid=)"
    )]
    NotOwner {
        path: PathBuf,
        owner: UserName,
        user: UserName,
    },
}

/// A uid, shown with its name when the system knows one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserName(pub u32);

impl std::fmt::Display for UserName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match sys::user_by_uid(self.0).ok().flatten().and_then(|u| u.name) {
            Some(name) => write!(f, "user {name} (uid {})", self.0),
            None => write!(f, "uid {}", self.0),
        }
    }
}

impl MirrorError {
    /// Whether the disk is full (the run may as well stop).
    pub fn is_no_space(&self) -> bool {
        matches!(self, MirrorError::NoSpace { .. })
    }

    /// Whether the mirror directory belongs to another user than the one running.
    pub fn is_not_owner(&self) -> bool {
        matches!(self, MirrorError::NotOwner { .. })
    }

    /// Whether the mirror belongs to another source (bucket, endpoint or owner)
    /// than the run's.
    pub fn is_other_source(&self) -> bool {
        matches!(
            self,
            MirrorError::WrongBucket { .. } | MirrorError::OtherSource { .. }
        )
    }
}

/// A mirror directory opened for reading and writing.
#[derive(Debug)]
pub struct Mirror {
    /// The root as named, for messages; every file operation goes through `dir`.
    root: PathBuf,
    state: PathBuf,
    /// The root directory, opened once: paths are resolved beneath it and never
    /// through a symlink, so its owner cannot send our writes elsewhere.
    dir: Arc<Dir>,
    /// What `mirror.json` says, and what this run will make it say.
    identity: Mutex<Claim>,
    counter: AtomicU64,
    keep_versions: AtomicBool,
    change_rate: history::ChangeRate,
}

impl Mirror {
    /// Opens (creating if needed) the mirror of `bucket` at `root` for the user
    /// this process runs as, and removes temp files that crashed runs left behind.
    pub fn open(root: &Path, bucket: &str) -> Result<Mirror, MirrorError> {
        Mirror::open_as(root, bucket, sys::euid())
    }

    /// Opens the mirror at `root` to be written by `uid`: the directory (a real
    /// one, not a symlink) and its state directory must be owned by `uid`, so a
    /// process running as root never writes into another user's tree.
    pub fn open_as(root: &Path, bucket: &str, uid: u32) -> Result<Mirror, MirrorError> {
        let not_writable = |path: &Path| {
            let path = path.to_path_buf();
            move |err: io::Error| MirrorError::NotWritable { path, err }
        };
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(root)
            .map_err(not_writable(root))?;
        let dir = Dir::open_root(root).map_err(not_writable(root))?;
        let root = display_root(root);
        check_owner(&dir, &root, uid)?;
        let state_rel = Path::new(STATE_DIR);
        make_dir_in(&dir, state_rel, STATE_MODE).map_err(not_writable(&root))?;
        let state_dir = dir.open_dir(state_rel).map_err(not_writable(&root))?;
        check_owner(&state_dir, &root.join(STATE_DIR), uid)?;
        make_dir_in(&dir, &tmp_rel(), STATE_MODE).map_err(not_writable(&root))?;
        make_dir_in(&dir, Path::new(RENAMED_DIR), DIR_MODE).map_err(not_writable(&root))?;
        let state = root.join(STATE_DIR);
        let identity = Mutex::new(Claim::read(&root, &dir, bucket)?);
        let mirror = Mirror {
            root,
            state,
            dir: Arc::new(dir),
            identity,
            counter: AtomicU64::new(0),
            keep_versions: AtomicBool::new(true),
            change_rate: history::ChangeRate::default(),
        };
        mirror.probe_xattrs()?;
        mirror.clean_temp_files();
        Ok(mirror)
    }

    /// The mirror's root directory, opened: paths beneath it resolve without
    /// following symlinks.
    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    /// The mirror's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory for the tool's own state (`.s3mirrorfs`).
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    fn io(&self, path: &Path) -> impl FnOnce(io::Error) -> MirrorError + use<> {
        let mirror = self.root.clone();
        // Relative paths are the mirror's: name them in full.
        let path = if path.is_relative() {
            self.root.join(path)
        } else {
            path.to_path_buf()
        };
        move |err| io_error(&mirror, &path, err)
    }

    /// Fsyncs the directory at `rel` (relative to the root).
    fn sync_rel(&self, rel: &Path) -> Result<(), MirrorError> {
        sync_dir(&self.dir, rel).map_err(self.io(rel))
    }

    /// Checks the run's source against the one the mirror records: another
    /// endpoint or owner is refused unless `allow_new`. Nothing is written here;
    /// `claim` records the run's source once S3 has confirmed the bucket.
    pub fn check_source(&self, source: &Source, allow_new: bool) -> Result<(), MirrorError> {
        self.identity.lock().check(source, allow_new)
    }

    /// The bucket owner a run expects: the one it names, else the one recorded.
    pub fn expected_owner(&self, requested: Option<&str>) -> Option<String> {
        let identity = self.identity.lock();
        requested.or(identity.recorded_owner()).map(str::to_string)
    }

    /// Records which source this mirror belongs to (`mirror.json`). Done once S3
    /// has confirmed the bucket, so a mistyped bucket name never claims a mirror
    /// directory; a run whose source adds to or replaces the record rewrites it.
    pub fn claim(&self) -> Result<(), MirrorError> {
        let mut identity = self.identity.lock();
        let Some(pending) = identity.pending().cloned() else {
            return Ok(());
        };
        let json = serde_json::to_vec(&pending).expect("identity serializes");
        self.write_state_file(IDENTITY_FILE, &json)?;
        identity.recorded_as(pending);
        Ok(())
    }

    /// Whether this mirror is known to belong to its bucket (it has been used for it).
    pub fn is_claimed(&self) -> bool {
        self.identity.lock().is_recorded()
    }

    /// Atomically and durably replaces a small file in the state directory.
    pub fn write_state_file(&self, name: &str, contents: &[u8]) -> Result<(), MirrorError> {
        self.replace_state_file(name, contents, true)
    }

    /// Atomically replaces a file of cached state (`name` may be in a subdirectory),
    /// without waiting for the disk: losing it only costs a new listing.
    pub fn write_cache_file(&self, name: &str, contents: &[u8]) -> Result<(), MirrorError> {
        self.replace_state_file(name, contents, false)
    }

    /// Opens a file of the state directory for appending, creating it (and its
    /// directory) if missing: for journals written record by record.
    pub fn append_state_file(&self, name: &str) -> Result<File, MirrorError> {
        let rel = Path::new(STATE_DIR).join(name);
        let dir = rel.parent().unwrap_or(Path::new(STATE_DIR)).to_path_buf();
        if !self.dir.symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            make_dir_in(&self.dir, &dir, STATE_MODE).map_err(self.io(&dir))?;
        }
        let how = Open::read_write().create(0o600).append();
        self.dir.open(&rel, how).map_err(self.io(&rel))
    }

    /// Where state file `name` goes, and its directory, made if missing.
    fn state_file_dir(&self, name: &str) -> Result<(PathBuf, PathBuf), MirrorError> {
        let final_rel = Path::new(STATE_DIR).join(name);
        let dir = final_rel
            .parent()
            .unwrap_or(Path::new(STATE_DIR))
            .to_path_buf();
        if !self.dir.symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            make_dir_in(&self.dir, &dir, STATE_MODE).map_err(self.io(&dir))?;
        }
        Ok((final_rel, dir))
    }

    /// A state file written piece by piece (for one too big to build in
    /// memory), put in place atomically and durably by `StateWriter::commit`.
    pub fn state_writer(&self, name: &str) -> Result<StateWriter<'_>, MirrorError> {
        let (final_rel, dir) = self.state_file_dir(name)?;
        let tmp = self.create_temp()?;
        let out = tmp.file.try_clone().map_err(self.io(&tmp.path))?;
        Ok(StateWriter {
            mirror: self,
            out: io::BufWriter::with_capacity(256 * 1024, out),
            tmp,
            final_rel,
            dir,
        })
    }

    fn replace_state_file(
        &self,
        name: &str,
        contents: &[u8],
        durable: bool,
    ) -> Result<(), MirrorError> {
        let (final_rel, dir) = self.state_file_dir(name)?;
        let tmp = self.create_temp()?;
        tmp.write_at(contents, 0)?;
        if durable {
            tmp.file.sync_all().map_err(self.io(&tmp.path))?;
        }
        self.dir
            .rename(&tmp.rel, &final_rel)
            .map_err(self.io(&final_rel))?;
        tmp.disarm();
        if durable {
            self.sync_rel(&dir)?;
        }
        Ok(())
    }

    fn probe_xattrs(&self) -> Result<(), MirrorError> {
        let tmp = self.create_temp()?;
        match tmp.file.set_xattr(RECORD_XATTR, b"probe") {
            Ok(()) => Ok(()),
            Err(e) if sys::is_xattr_unsupported(&e) => Err(MirrorError::NoXattr(self.root.clone())),
            Err(e) => Err(self.io(&tmp.path)(e)),
        }
    }

    /// Removes temp files whose writer is gone (their flock is free).
    fn clean_temp_files(&self) {
        let tmp = tmp_rel();
        let Ok(entries) = self.dir.read_dir(&tmp) else {
            return;
        };
        for entry in entries {
            let rel = tmp.join(&entry.name);
            let path = self.root.join(&rel);
            let Ok(file) = self.dir.open_read(&rel) else {
                continue;
            };
            if file.try_lock().is_ok() {
                match self.dir.remove_file(&rel) {
                    Ok(()) => tracing::debug!(path = %path.display(), "removed stale temp file"),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot remove stale temp file")
                    }
                }
            }
        }
    }

    /// Takes the mirror's run lock, or says who holds it. The kernel drops it when
    /// the holder exits, however it exits.
    pub fn lock(&self, holder: &str) -> Result<RunLock, MirrorError> {
        let (mut file, path) = self.open_lock_file("lock")?;
        if !try_lock(&file).map_err(self.io(&path))? {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let holder = text.trim();
            return Err(MirrorError::Busy {
                path: self.root.clone(),
                holder: if holder.is_empty() {
                    "another process".to_string()
                } else {
                    holder.to_string()
                },
            });
        }
        file.set_len(0).map_err(self.io(&path))?;
        file.write_all_at(format!("{holder}\n").as_bytes(), 0)
            .map_err(self.io(&path))?;
        Ok(RunLock { _file: file })
    }

    /// Takes the cross-process lock for one mirror path without waiting; `None` if busy.
    pub fn try_lock_path(&self, rel: &Path) -> Result<Option<PathLock>, MirrorError> {
        self.lock_path_inner(rel, false)
    }

    /// Takes the cross-process lock for one mirror path, waiting for it (blocking).
    pub fn lock_path(&self, rel: &Path) -> Result<PathLock, MirrorError> {
        Ok(self
            .lock_path_inner(rel, true)?
            .expect("a waiting lock is always taken"))
    }

    fn lock_path_inner(&self, rel: &Path, wait: bool) -> Result<Option<PathLock>, MirrorError> {
        // A fresh open file description per lock, so locks also exclude each other
        // within one process.
        let (file, path) = self.open_lock_file("objects.lock")?;
        let offset = fnv1a(rel.as_os_str().as_encoded_bytes());
        Ok(sys::ofd_lock_byte(&file, offset, wait)
            .map_err(self.io(&path))?
            .then_some(PathLock { _file: file }))
    }

    /// Opens (creating) a lock file of the state directory; returns it and its path.
    fn open_lock_file(&self, name: &str) -> Result<(File, PathBuf), MirrorError> {
        let path = self.state.join(name);
        let file = self
            .dir
            .open(
                &Path::new(STATE_DIR).join(name),
                Open::read_write().create(0o600),
            )
            .map_err(self.io(&path))?;
        Ok((file, path))
    }

    /// A scratch file for work too big to hold in memory (see `crate::spool`),
    /// on the mirror's disk: made in `.s3mirrorfs/tmp` and unlinked at once, so
    /// it goes away with its last handle, even after a crash.
    pub fn scratch_file(&self) -> Result<File, MirrorError> {
        let temp = self.create_temp()?;
        let file = temp.file.try_clone().map_err(self.io(&temp.path))?;
        drop(temp);
        Ok(file)
    }

    /// A new, exclusively locked temp file in `.s3mirrorfs/tmp`.
    pub fn create_temp(&self) -> Result<TempFile, MirrorError> {
        loop {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            let rel = tmp_rel().join(format!("{}.{n}.tmp", std::process::id()));
            let path = self.root.join(&rel);
            let file = match self
                .dir
                .open(&rel, Open::read_write().create_new(FILE_MODE))
            {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(self.io(&path)(e)),
            };
            file.lock().map_err(self.io(&path))?;
            // A cleaner may have taken the file between create and flock; then start over.
            let ours = self
                .dir
                .symlink_metadata(&rel)
                .map(|m| m.ino() == file.metadata().map(|f| f.ino()).unwrap_or(0))
                .unwrap_or(false);
            if !ours {
                continue;
            }
            file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
                .map_err(self.io(&path))?;
            return Ok(TempFile {
                file,
                rel,
                path,
                dir: Arc::clone(&self.dir),
                mirror: self.root.clone(),
                armed: true,
                written: AtomicU64::new(0),
            });
        }
    }

    /// Where a file for `key` goes, given its preferred path: a directory already
    /// standing there keeps its name (it holds other copies) and the key is renamed.
    pub fn resolve(&self, key: &Key, preferred: &Path) -> PathBuf {
        match self.dir.symlink_metadata(preferred) {
            Ok(meta) if meta.is_dir() => renamed_path(key.as_str()),
            _ => preferred.to_path_buf(),
        }
    }

    /// Compares the file at `rel` with an object; only local syscalls, no S3 request.
    pub fn status(&self, rel: &Path, key: &Key, etag: &ETag, size: u64) -> LocalStatus {
        self.inspect(rel, key, etag, size).0
    }

    /// `status`, with the record of the file found there.
    pub fn inspect(
        &self,
        rel: &Path,
        key: &Key,
        etag: &ETag,
        size: u64,
    ) -> (LocalStatus, Option<Record>) {
        let status = match self.dir.symlink_metadata(rel) {
            Ok(meta) if meta.is_file() => {
                let record = read_record_in(&self.dir, rel);
                let status = judge(record.as_ref(), meta.len(), key, etag, size);
                return (status, record);
            }
            Ok(_) => LocalStatus::Stale,
            Err(_) => LocalStatus::Missing,
        };
        (status, None)
    }

    /// Makes the file whole under its final name: record, mtime, fsync, rename, fsync
    /// the directory. Before the rename nothing is visible; after it everything is.
    pub fn commit(
        &self,
        mut tmp: TempFile,
        rel: &Path,
        record: &Record,
        mtime: SystemTime,
    ) -> Result<(), MirrorError> {
        write_record(&tmp.file, record).map_err(self.io(&tmp.path))?;
        let times = fs::FileTimes::new().set_accessed(mtime).set_modified(mtime);
        tmp.file.set_times(times).map_err(self.io(&tmp.path))?;
        tmp.file.sync_all().map_err(self.io(&tmp.path))?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        self.ensure_dir(parent)?;
        let final_path = self.root.join(rel);
        if self.dir.symlink_metadata(rel).is_ok_and(|m| m.is_dir()) {
            return Err(MirrorError::Blocked {
                path: final_path,
                why: "a directory is in the way",
            });
        }
        // The copy being replaced is kept first: from here on, a crash leaves the
        // old bytes at `rel`, in history, or both.
        self.keep_before_replace(rel, &record.key, Some(&record.etag))?;
        #[cfg(feature = "test-util")]
        crate::fault::point("before-rename", record.key.as_str());
        self.dir
            .rename(&tmp.rel, rel)
            .map_err(self.io(&final_path))?;
        tmp.armed = false;
        #[cfg(feature = "test-util")]
        crate::fault::point("after-rename", record.key.as_str());
        sync_dir(&self.dir, parent).map_err(self.io(&final_path))?;
        self.drop_other_copies(record, rel);
        Ok(())
    }

    /// Clears what older copies of `kept`'s key other paths hold, now that `at`
    /// holds its current one: a key whose placement changed (it became a prefix and
    /// was moved aside, then came back; a marker gained bytes, or bytes became a
    /// marker) must not keep a stale copy that restore could pick. A file of
    /// another version moves into history; one of the same version goes; a
    /// directory keeps its contents and loses only its marker record. Best effort:
    /// a failure is logged, and the copy at `at` is current anyway.
    pub fn drop_other_copies(&self, kept: &Record, at: &Path) {
        let key = &kept.key;
        for rel in possible_paths(key.as_str()).into_iter().filter(|p| p != at) {
            let Ok(meta) = self.dir.symlink_metadata(&rel) else {
                continue;
            };
            let Some(old) = read_record_in(&self.dir, &rel).filter(|r| r.key == *key) else {
                continue;
            };
            let dropped = if meta.is_dir() {
                self.dir.open_dir(&rel).and_then(|d| {
                    d.as_file().remove_xattr(RECORD_XATTR)?;
                    d.sync()
                })
            } else if old.etag != kept.etag && self.keeps_versions() {
                self.keep(&rel, key, Some(&old), history::Keep::Move)
                    .map_err(io::Error::other)
            } else {
                self.dir
                    .remove_file(&rel)
                    .and_then(|()| sync_dir(&self.dir, rel.parent().unwrap_or(Path::new(""))))
            };
            match dropped {
                Ok(()) => {
                    tracing::info!(key = %key, stale = %rel.display(), "dropped an older copy")
                }
                Err(e) => {
                    tracing::warn!(key = %key, stale = %rel.display(), "cannot drop an older copy: {e}")
                }
            }
        }
    }

    /// Makes sure `rel` is a directory, creating missing parents (mode 0750).
    /// A file standing where a directory is needed is moved to its renamed path, so
    /// no copy is lost. Returns whether the last directory was created.
    pub fn ensure_dir(&self, rel: &Path) -> Result<bool, MirrorError> {
        let mut created = false;
        let mut current = PathBuf::new();
        for component in rel.components() {
            let parent = current.clone();
            current.push(component);
            created = false;
            match self.dir.symlink_metadata(&current) {
                Ok(meta) if meta.is_dir() => continue,
                Ok(meta) if meta.is_file() => self.relocate(&current)?,
                Ok(_) => {
                    return Err(MirrorError::Blocked {
                        path: self.root.join(&current),
                        why: "a symlink or special file stands where a directory is needed",
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io(&current)(e)),
            }
            match make_dir_in(&self.dir, &current, DIR_MODE) {
                Ok(()) => created = true,
                Err(e) => return Err(self.io(&current)(e)),
            }
            self.sync_rel(&parent)?;
        }
        Ok(created)
    }

    /// If the file at `rel` holds `key`, moves it to the key's renamed path (best
    /// effort: on failure the key is simply fetched again).
    pub fn move_aside(&self, rel: &Path, key: &Key) {
        let holds_key = self.dir.symlink_metadata(rel).is_ok_and(|m| m.is_file())
            && read_record_in(&self.dir, rel).is_some_and(|r| r.key == *key);
        if holds_key && let Err(e) = self.relocate(rel) {
            let path = self.root.join(rel);
            tracing::warn!(path = %path.display(), "cannot move a copy aside: {e}");
        }
    }

    /// Moves a file out of the way of a directory, to the renamed path of the key
    /// it holds; whatever other version stands there is kept in history first.
    fn relocate(&self, rel: &Path) -> Result<(), MirrorError> {
        let path = self.root.join(rel);
        let record = read_record_in(&self.dir, rel);
        let key = match &record {
            Some(r) => r.key.clone(),
            None => Key::new(rel.to_string_lossy()).map_err(|_| MirrorError::Blocked {
                path: path.clone(),
                why: "an unnamed file is in the way",
            })?,
        };
        let target_rel = renamed_path(key.as_str());
        let target = self.root.join(&target_rel);
        tracing::info!(from = %rel.display(), to = %target.display(), "moving a copy out of the way of a directory");
        self.keep_before_replace(&target_rel, &key, record.as_ref().map(|r| &r.etag))?;
        self.dir.rename(rel, &target_rel).map_err(self.io(&path))?;
        self.sync_rel(target_rel.parent().unwrap_or(Path::new("")))?;
        self.sync_rel(rel.parent().unwrap_or(Path::new("")))
    }

    /// Takes the copy at `rel`, which holds `record`, out of the key tree (for
    /// prune): into history, or removed when versions are not kept.
    pub fn remove(&self, rel: &Path, record: &Record) -> Result<(), MirrorError> {
        if self.keeps_versions() {
            let _lock = self.lock_path(rel)?;
            return self.keep(rel, &record.key, Some(record), history::Keep::Move);
        }
        self.dir.remove_file(rel).map_err(self.io(rel))?;
        self.sync_rel(rel.parent().unwrap_or(Path::new("")))
    }

    /// Every mirrored file with its record: the key tree and the renamed directory,
    /// never the rest of the tool's state. Files without a record are the user's own.
    pub fn recorded_files(&self) -> Vec<(PathBuf, Record)> {
        let mut files = Vec::new();
        self.each_recorded_file(|path, record| files.push((path, record)));
        files
    }

    /// Calls `each` with every recorded file (not marker directories), one at a
    /// time, without holding them all.
    pub fn each_recorded_file(&self, mut each: impl FnMut(PathBuf, Record)) {
        let _unreadable = inventory::walk_each(&self.dir, &self.root, &mut |entry| {
            if !entry.directory {
                each(entry.path, entry.record);
            }
        });
    }
}

/// Reads the record of a mirrored file, if it has a valid one (a symlink is not
/// followed). For files outside a mirror; inside one, `read_record_in`.
pub fn read_record(path: &Path) -> Option<Record> {
    Record::decode(&xattr::get(path, RECORD_XATTR).ok()??)
}

/// Reads the record of the file or directory at `rel` beneath `dir`, if it has a
/// valid one; nothing on the way is followed if it is a symlink.
pub fn read_record_in(dir: &Dir, rel: &Path) -> Option<Record> {
    read_record_of(&dir.open_read(rel).ok()?)
}

/// How a regular file of `len` bytes holding `record` stands against an object.
pub(crate) fn judge(
    record: Option<&Record>,
    len: u64,
    key: &Key,
    etag: &ETag,
    size: u64,
) -> LocalStatus {
    match record {
        Some(r) if r.corrupt || r.key != *key || r.size != len => LocalStatus::Stale,
        Some(r) if r.etag != *etag => LocalStatus::Changed,
        Some(_) if len == size => LocalStatus::Current,
        _ => LocalStatus::Stale,
    }
}

/// Reads the record of an open file or directory, if it has a valid one.
pub fn read_record_of(file: &File) -> Option<Record> {
    Record::decode(&file.get_xattr(RECORD_XATTR).ok()??)
}

/// Writes the record of an open file or directory (not yet durable: the caller fsyncs).
fn write_record(file: &File, record: &Record) -> io::Result<()> {
    file.set_xattr(RECORD_XATTR, &record.encode())
}

/// Holds the mirror's run lock until dropped.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Holds the lock on one mirror path until dropped.
#[derive(Debug)]
pub struct PathLock {
    _file: File,
}

/// A temp file being filled; removed on drop unless committed.
#[derive(Debug)]
pub struct TempFile {
    file: File,
    /// Relative to the mirror root, where it is renamed from.
    rel: PathBuf,
    /// In full, for messages.
    path: PathBuf,
    dir: Arc<Dir>,
    mirror: PathBuf,
    armed: bool,
    /// Bytes written through `write_at` so far, by every writer of the file.
    written: AtomicU64,
}

impl TempFile {
    /// Writes `buf` at `offset`.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), MirrorError> {
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| self.error(e))?;
        self.written.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Bytes written through `write_at` so far (overlapping writes count twice).
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Gives the file its length and its blocks, in order, before ranged parts
    /// are placed in it as they arrive (see `sys::preallocate`).
    pub fn preallocate(&self, len: u64) -> Result<(), MirrorError> {
        sys::preallocate(&self.file, len).map_err(|e| self.error(e))
    }

    fn error(&self, err: io::Error) -> MirrorError {
        io_error(&self.mirror, &self.path, err)
    }

    /// Another handle on the same file, readable after the commit renamed it.
    pub fn reopen(&self) -> Result<File, MirrorError> {
        self.file.try_clone().map_err(|e| self.error(e))
    }

    /// Starts writing `range` back to disk (a hint: errors surface at the fsync of
    /// the commit, which is what makes the file durable).
    pub fn start_writeback(&self, range: std::ops::Range<u64>) {
        let _ = sys::start_writeback(&self.file, range.start, range.end - range.start);
    }

    /// The MD5 of what has been written, as lower-case hex.
    pub fn md5(&self) -> Result<String, MirrorError> {
        md5_file(&self.file).map_err(|e| self.error(e))
    }

    /// Extends `md5` over the bytes written up to `end`.
    pub fn hash(&self, md5: &mut PrefixMd5, end: u64) -> Result<(), MirrorError> {
        md5.extend(&self.file, Some(end)).map_err(|e| self.error(e))
    }

    /// The temp file's path, for error messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

/// A state file being written; nothing replaces the old one until `commit`.
pub struct StateWriter<'a> {
    mirror: &'a Mirror,
    out: io::BufWriter<File>,
    tmp: TempFile,
    final_rel: PathBuf,
    dir: PathBuf,
}

impl StateWriter<'_> {
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), MirrorError> {
        self.out
            .write_all(bytes)
            .map_err(self.mirror.io(&self.tmp.path))
    }

    /// Puts the file in place of the old one, durably.
    pub fn commit(mut self) -> Result<(), MirrorError> {
        let mirror = self.mirror;
        self.out.flush().map_err(mirror.io(&self.tmp.path))?;
        self.tmp
            .file
            .sync_all()
            .map_err(mirror.io(&self.tmp.path))?;
        mirror
            .dir
            .rename(&self.tmp.rel, &self.final_rel)
            .map_err(mirror.io(&self.final_rel))?;
        self.tmp.disarm();
        mirror.sync_rel(&self.dir)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.dir.remove_file(&self.rel);
        }
    }
}

/// Tells a full disk apart from other I/O failures.
fn io_error(mirror: &Path, path: &Path, err: io::Error) -> MirrorError {
    if sys::is_no_space(&err) {
        MirrorError::NoSpace {
            mirror: mirror.to_path_buf(),
            path: path.to_path_buf(),
        }
    } else {
        MirrorError::Io {
            path: path.to_path_buf(),
            err,
        }
    }
}

/// Takes an exclusive lock on the whole file (flock) without waiting; `false` if
/// another open file holds it. The kernel drops it when the holder exits.
fn try_lock(file: &File) -> io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(fs::TryLockError::WouldBlock) => Ok(false),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Makes the directory `rel` beneath `dir` with `mode`; one already there is
/// fine, a symlink there is refused (never followed).
fn make_dir_in(dir: &Dir, rel: &Path, mode: u32) -> io::Result<()> {
    match dir.create_dir(rel, mode) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match dir.symlink_metadata(rel) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(meta) if meta.is_symlink() => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is a symlink where a directory must be, and paths in the mirror never follow symlinks",
                    rel.display()
                ),
            )),
            _ => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// Fsyncs the directory at `rel` beneath `dir` (`""` is `dir` itself).
fn sync_dir(dir: &Dir, rel: &Path) -> io::Result<()> {
    if rel.as_os_str().is_empty() {
        return dir.sync();
    }
    dir.open_dir(rel)?.sync()
}

/// Where temp files go, relative to the root.
fn tmp_rel() -> PathBuf {
    Path::new(STATE_DIR).join("tmp")
}

/// The root as messages name it: its parent resolved, its own name as given (it
/// was opened without following a symlink there).
fn display_root(root: &Path) -> PathBuf {
    let parent = match root.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => return root.to_path_buf(),
    };
    match (root.file_name(), fs::canonicalize(parent)) {
        (Some(name), Ok(parent)) => parent.join(name),
        _ => fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf()),
    }
}

/// Refuses a directory that `uid` does not own.
fn check_owner(dir: &Dir, path: &Path, uid: u32) -> Result<(), MirrorError> {
    let owner = dir.owner().map_err(|err| MirrorError::Io {
        path: path.to_path_buf(),
        err,
    })?;
    if owner == uid {
        Ok(())
    } else {
        Err(MirrorError::NotOwner {
            path: path.to_path_buf(),
            owner: UserName(owner),
            user: UserName(uid),
        })
    }
}

/// FNV-1a: a hash that is the same in every process, for lock offsets.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(key: &str) -> Key {
        Key::new(key).unwrap()
    }

    fn record(key_: &str, etag: &str, size: u64) -> Record {
        Record {
            key: key(key_),
            etag: ETag::new(etag),
            size,
            md5: None,
            corrupt: false,
        }
    }

    fn put(mirror: &Mirror, rel: &str, key: &str, data: &[u8], etag: &str) {
        let tmp = mirror.create_temp().unwrap();
        tmp.write_at(data, 0).unwrap();
        mirror
            .commit(
                tmp,
                Path::new(rel),
                &record(key, etag, data.len() as u64),
                SystemTime::UNIX_EPOCH,
            )
            .unwrap();
    }

    #[test]
    fn records_round_trip_any_key() {
        for key in ["a", "line\nbreak\n", &"\u{1}".repeat(1024), "é/../x"] {
            let r = record(key, "\"abc-2\"", 7);
            assert_eq!(Record::decode(&r.encode()), Some(r.clone()));
            assert!(
                r.encode().ends_with(key.as_bytes()),
                "the key is stored raw"
            );
            assert!(r.encode().len() <= key.len() + 64);
            let r = Record {
                md5: Some("0123456789abcdef0123456789abcdef".into()),
                ..r
            };
            assert_eq!(Record::decode(&r.encode()), Some(r.clone()));
            assert!(r.encode().len() <= key.len() + 96);
        }
        let corrupt = Record {
            md5: Some("0123456789abcdef0123456789abcdef".into()),
            corrupt: true,
            ..record("k", "\"e1\"", 3)
        };
        let encoded = corrupt.encode();
        assert!(encoded.starts_with(b"s3mirrorfs2\ncorrupt:\"e1\"\n"));
        assert_eq!(Record::decode(&encoded), Some(corrupt));
        assert_eq!(Record::decode(b"junk"), None);
        assert_eq!(Record::decode(b"s3mirrorfs1\n\"e\"\nx\nk"), None);
        assert_eq!(Record::decode(b"s3mirrorfs2\n\"e\"\n1\nnot-hex\nk"), None);
        assert_eq!(Record::decode(b"s3mirrorfs3\n\"e\"\n1\nk"), None);
        assert_eq!(
            Record::decode(b"s3mirrorfs1\n\"e\"\n1\n"),
            None,
            "an empty key"
        );
    }

    #[test]
    fn md5_of_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::open(dir.path(), "b").unwrap();
        let tmp = mirror.create_temp().unwrap();
        assert_eq!(tmp.md5().unwrap(), "d41d8cd98f00b204e9800998ecf8427e");
        tmp.write_at(b"hello", 0).unwrap();
        assert_eq!(tmp.md5().unwrap(), "5d41402abc4b2a76b9719d911017c592");
        // Larger than one read buffer.
        let big = vec![7u8; (3 << 20) + 5];
        tmp.write_at(&big, 0).unwrap();
        let expected = {
            use md5::Digest;
            format!("{:x}", md5::Md5::digest(&big))
        };
        assert_eq!(tmp.md5().unwrap(), expected);
    }

    #[test]
    fn a_prefix_md5_extended_in_steps_is_the_md5_of_the_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let bytes: Vec<u8> = (0..(2 << 20) + 3).map(|i: u32| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        let mut prefix = PrefixMd5::default();
        assert!(prefix.is_empty());
        for end in [10, 10, 1 << 20, (1 << 20) + 1, bytes.len() as u64] {
            prefix.extend(&file, Some(end)).unwrap();
            assert_eq!(prefix.len(), end);
        }
        assert_eq!(prefix.clone().finish(), md5_file(&file).unwrap());
        let past = prefix.extend(&file, Some(bytes.len() as u64 + 1));
        assert_eq!(past.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn commit_makes_a_complete_recorded_file() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::open(dir.path(), "b").unwrap();
        put(&mirror, "a/b/c.jpg", "a/b/c.jpg", b"hello", "\"e1\"");
        let path = dir.path().join("a/b/c.jpg");
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, FILE_MODE);
        assert_eq!(meta.mtime(), 0);
        assert_eq!(
            fs::metadata(dir.path().join("a/b")).unwrap().mode() & 0o777,
            DIR_MODE
        );
        assert_eq!(read_record(&path), Some(record("a/b/c.jpg", "\"e1\"", 5)));
        assert_eq!(
            mirror.status(
                Path::new("a/b/c.jpg"),
                &key("a/b/c.jpg"),
                &ETag::new("\"e1\""),
                5
            ),
            LocalStatus::Current
        );
        assert_eq!(
            mirror.status(
                Path::new("a/b/c.jpg"),
                &key("a/b/c.jpg"),
                &ETag::new("\"e2\""),
                5
            ),
            LocalStatus::Changed
        );
        assert_eq!(
            mirror.status(
                Path::new("a/b/c.jpg"),
                &key("a/b/c.jpg"),
                &ETag::new("\"e1\""),
                6
            ),
            LocalStatus::Stale
        );
        assert_eq!(
            mirror.status(Path::new("nope"), &key("nope"), &ETag::new("\"e1\""), 6),
            LocalStatus::Missing
        );
        assert_eq!(
            fs::read_dir(mirror.root().join(tmp_rel())).unwrap().count(),
            0
        );
    }

    #[test]
    fn a_dropped_temp_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::open(dir.path(), "b").unwrap();
        let tmp = mirror.create_temp().unwrap();
        tmp.write_at(b"partial", 0).unwrap();
        drop(tmp);
        assert_eq!(
            fs::read_dir(mirror.root().join(tmp_rel())).unwrap().count(),
            0
        );
    }

    #[test]
    fn stale_temp_files_are_cleaned_but_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::open(dir.path(), "b").unwrap();
        fs::write(mirror.root().join(tmp_rel()).join("dead.1.tmp"), b"x").unwrap();
        let live = mirror.create_temp().unwrap();
        let again = Mirror::open(dir.path(), "b").unwrap();
        let left: Vec<_> = fs::read_dir(again.root().join(tmp_rel()))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(left, vec![live.path().to_path_buf()]);
    }

    #[test]
    fn a_mirror_belongs_to_one_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let unclaimed = Mirror::open(dir.path(), "typo").unwrap();
        assert!(!unclaimed.is_claimed());
        Mirror::open(dir.path(), "one").unwrap().claim().unwrap();
        assert!(Mirror::open(dir.path(), "one").unwrap().is_claimed());
        let err = Mirror::open(dir.path(), "two").unwrap_err();
        assert!(matches!(err, MirrorError::WrongBucket { .. }), "{err}");
    }

    #[test]
    fn a_claim_records_the_source_and_an_older_record_is_completed() {
        let dir = tempfile::tempdir().unwrap();
        let json = || fs::read_to_string(dir.path().join(".s3mirrorfs/mirror.json")).unwrap();
        let source = |endpoint: &str, owner: Option<&str>| Source {
            endpoint: endpoint.to_string(),
            owner: owner.map(str::to_string),
        };
        // A mirror.json of an older version names the bucket only.
        let mirror = Mirror::open(dir.path(), "b").unwrap();
        mirror
            .write_state_file(IDENTITY_FILE, br#"{"bucket":"b"}"#)
            .unwrap();
        let mirror = Mirror::open(dir.path(), "b").unwrap();
        assert!(mirror.is_claimed());
        assert_eq!(mirror.expected_owner(None), None);
        mirror
            .check_source(&source("http://s3.local", Some("123456789012")), false)
            .unwrap();
        assert_eq!(
            json(),
            r#"{"bucket":"b"}"#,
            "nothing is written before the claim"
        );
        mirror.claim().unwrap();
        assert_eq!(
            json(),
            r#"{"bucket":"b","endpoint":"http://s3.local","owner":"123456789012"}"#
        );
        let again = Mirror::open(dir.path(), "b").unwrap();
        assert_eq!(again.expected_owner(None).as_deref(), Some("123456789012"));
        assert_eq!(
            again.expected_owner(Some("210987654321")).as_deref(),
            Some("210987654321")
        );
        let err = again.check_source(&source("", None), false).unwrap_err();
        assert!(err.is_other_source(), "{err}");
        again.check_source(&source("", None), true).unwrap();
        again.claim().unwrap();
        assert_eq!(
            json(),
            r#"{"bucket":"b","endpoint":"","owner":"123456789012"}"#
        );
    }

    #[test]
    fn run_lock_names_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::open(dir.path(), "b").unwrap();
        let held = mirror.lock("pid 1: test").unwrap();
        let err = mirror.lock("pid 2: test").unwrap_err();
        assert!(err.to_string().contains("pid 1: test"), "{err}");
        drop(held);
        mirror.lock("pid 2: test").unwrap();
    }

    #[test]
    fn a_file_in_the_way_of_a_directory_moves_to_its_renamed_path() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::open(dir.path(), "b").unwrap();
        put(&mirror, "photo", "photo", b"old", "\"e1\"");
        put(&mirror, "photo/1.jpg", "photo/1.jpg", b"new", "\"e2\"");
        assert_eq!(fs::read(dir.path().join("photo/1.jpg")).unwrap(), b"new");
        let moved = dir.path().join(renamed_path("photo"));
        assert_eq!(fs::read(&moved).unwrap(), b"old");
        assert_eq!(read_record(&moved).unwrap().key, key("photo"));
        // A directory keeps the name when the key comes back.
        assert_eq!(
            mirror.resolve(&key("photo"), Path::new("photo")),
            renamed_path("photo")
        );
        assert_eq!(
            mirror.resolve(&key("x"), Path::new("x")),
            PathBuf::from("x")
        );
    }

    #[test]
    fn recorded_files_skip_state_and_unrecorded_files() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::open(dir.path(), "b").unwrap();
        put(&mirror, "a/x", "a/x", b"1", "\"e\"");
        let renamed = renamed_path("../y");
        put(&mirror, renamed.to_str().unwrap(), "../y", b"2", "\"e\"");
        put(&mirror, ".s3mirrorfs/not-data", "state", b"3", "\"e\"");
        fs::write(dir.path().join("mine.txt"), b"user file").unwrap();
        let mut found: Vec<_> = mirror
            .recorded_files()
            .into_iter()
            .map(|(p, r)| (p, r.key))
            .collect();
        found.sort();
        let mut expected = vec![(PathBuf::from("a/x"), key("a/x")), (renamed, key("../y"))];
        expected.sort();
        assert_eq!(found, expected);
    }

    #[test]
    fn path_locks_exclude_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::open(dir.path(), "b").unwrap();
        let held = mirror.try_lock_path(Path::new("a")).unwrap().unwrap();
        assert!(mirror.try_lock_path(Path::new("a")).unwrap().is_none());
        assert!(mirror.try_lock_path(Path::new("b")).unwrap().is_some());
        drop(held);
        assert!(mirror.try_lock_path(Path::new("a")).unwrap().is_some());
    }
}
