//! The filesystem over the store and the mirror, with no FUSE types, so it is
//! tested without a kernel. Directories come from delimited listings (cached for
//! the metadata TTL, persisted, served from the mirror when S3 is away); a file
//! the mirror holds at the listed ETag is read from the mirror; any other file is
//! streamed to the reader while the one shared download path persists it.

pub mod error;
pub mod listing;
pub mod stream;

pub use error::FsError;

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use crate::fetch::{FetchError, Fetcher, Observer, Outcome};
use crate::layout::{Placement, place_alone};
use crate::mirror::{LocalStatus, Mirror};
use crate::store::{ETag, Key, ObjectStore};
use listing::{Entry, InFlight};
use stream::{Finished, Ready, Stream, read_full};

/// An inode number; the root is 1.
pub type Ino = u64;
pub const ROOT_INO: Ino = 1;

/// Longest a read waits for its bytes before it fails with EIO.
pub const READ_WAIT: Duration = Duration::from_secs(120);
/// After a failed listing, how long S3 is not asked again (reads still try).
pub const OFFLINE_BACKOFF: Duration = Duration::from_secs(30);
/// Siblings fetched in the background when one file of a directory is read cold:
/// at most this many, each at most `SIBLING_MAX_SIZE`, `SIBLINGS_AT_ONCE` at a time.
pub const SIBLINGS_MAX: usize = 256;
pub const SIBLING_MAX_SIZE: u64 = 32 << 20;
pub const SIBLINGS_AT_ONCE: usize = 16;
/// When a directory is read, the listings of its subdirectories are fetched ahead
/// in the background (at most `LIST_AHEAD_MAX` of them, `LIST_AHEAD_AT_ONCE` at a
/// time), so a walk such as `find` pays S3 latency about once per level, not once
/// per directory.
pub const LIST_AHEAD_MAX: usize = 64;
pub const LIST_AHEAD_AT_ONCE: usize = 8;
/// Longest a reader waits for a look-ahead listing before it lists by itself.
const LIST_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    File,
}

/// What `stat` shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: FileKind,
    pub size: u64,
    pub mtime: SystemTime,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
}

/// How the filesystem presents the bucket.
#[derive(Clone, Debug)]
pub struct FsConfig {
    /// Key prefix shown as the root ("" or ending in `/`).
    pub prefix: String,
    pub metadata_ttl: Duration,
    pub uid: u32,
    pub gid: u32,
}

struct Node {
    parent: Ino,
    kind: FileKind,
    /// The directory's key prefix (ending in `/`, or the root prefix) or the file's key.
    path: String,
    entry: Entry,
}

#[derive(Default)]
struct Inodes {
    nodes: HashMap<Ino, Node>,
    by_name: HashMap<(Ino, String), Ino>,
}

struct Listing {
    fetched: Instant,
    entries: Arc<Vec<Entry>>,
}

enum OpenFile {
    Local(Arc<File>),
    Stream {
        stream: Arc<Stream>,
        key: Key,
        etag: ETag,
        size: u64,
        rel: PathBuf,
        local: Mutex<Option<Arc<File>>>,
    },
}

/// An opened file: the handle, and the mirror file when reads can bypass the daemon.
pub struct Opened {
    pub fh: u64,
    pub local: Option<Arc<File>>,
}

/// The filesystem.
pub struct Fs {
    store: Arc<dyn ObjectStore>,
    fetcher: Fetcher,
    rt: Handle,
    config: FsConfig,
    inodes: Mutex<Inodes>,
    next_ino: AtomicU64,
    listings: Arc<Mutex<HashMap<String, Listing>>>,
    inflight: Arc<InFlight>,
    list_ahead: Arc<Semaphore>,
    offline_until: Mutex<Option<Instant>>,
    handles: Mutex<HashMap<u64, Arc<OpenFile>>>,
    next_fh: AtomicU64,
    /// Downloads readers are waiting on, by (key, ETag).
    streams: Mutex<HashMap<(String, String), Weak<Stream>>>,
    siblings_done: Mutex<HashMap<String, Instant>>,
    siblings: Arc<Semaphore>,
    /// Told the inode of every file a reader's download committed to the mirror.
    committed: Arc<std::sync::OnceLock<CommitHook>>,
    started: SystemTime,
}

/// Called with the inode of a file whose download for readers was just committed.
pub type CommitHook = Box<dyn Fn(Ino) + Send + Sync>;

/// Permissions shown for files and directories (the mount itself is read-only).
pub const FILE_PERM: u16 = 0o644;
pub const DIR_PERM: u16 = 0o755;

impl Fs {
    pub fn new(store: Arc<dyn ObjectStore>, fetcher: Fetcher, config: FsConfig, rt: Handle) -> Fs {
        let mut inodes = Inodes::default();
        inodes.nodes.insert(
            ROOT_INO,
            Node {
                parent: ROOT_INO,
                kind: FileKind::Directory,
                path: config.prefix.clone(),
                entry: Entry {
                    name: String::new(),
                    dir: true,
                    size: 0,
                    etag: String::new(),
                    mtime_ns: 0,
                },
            },
        );
        Fs {
            store,
            fetcher,
            rt,
            config,
            inodes: Mutex::new(inodes),
            next_ino: AtomicU64::new(ROOT_INO + 1),
            listings: Arc::default(),
            inflight: Arc::default(),
            list_ahead: Arc::new(Semaphore::new(LIST_AHEAD_AT_ONCE)),
            offline_until: Mutex::new(None),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            streams: Mutex::new(HashMap::new()),
            siblings_done: Mutex::new(HashMap::new()),
            siblings: Arc::new(Semaphore::new(SIBLINGS_AT_ONCE)),
            committed: Arc::default(),
            started: SystemTime::now(),
        }
    }

    /// Sets what to do when a reader's download is committed (once; later calls
    /// are ignored). The FUSE adapter drops the kernel's cached pages of the file
    /// then: from now on its reads go to the mirror file.
    pub fn on_commit(&self, hook: CommitHook) {
        let _ = self.committed.set(hook);
    }

    /// How long the kernel may cache names and attributes.
    pub fn ttl(&self) -> Duration {
        self.config.metadata_ttl
    }

    fn mirror(&self) -> &Arc<Mirror> {
        self.fetcher.mirror()
    }

    fn attr_of(&self, ino: Ino, node: &Node) -> Attr {
        // S3 has no directory times: directories show when the mount started.
        let (perm, size, mtime) = match node.kind {
            FileKind::Directory => (DIR_PERM, 0, self.started),
            FileKind::File => (FILE_PERM, node.entry.size, node.entry.mtime()),
        };
        Attr {
            ino,
            kind: node.kind,
            size,
            mtime,
            perm,
            uid: self.config.uid,
            gid: self.config.gid,
        }
    }

    fn dir_path(&self, ino: Ino) -> Result<String, FsError> {
        let inodes = self.inodes.lock();
        let node = inodes.nodes.get(&ino).ok_or_else(FsError::not_found)?;
        match node.kind {
            FileKind::Directory => Ok(node.path.clone()),
            FileKind::File => Err(FsError::not_a_directory()),
        }
    }

    /// The node for `name` in `parent`, created or updated from a listing entry.
    fn child(&self, parent: Ino, parent_path: &str, entry: &Entry) -> (Ino, Attr) {
        let (kind, path) = if entry.dir {
            (FileKind::Directory, format!("{parent_path}{}/", entry.name))
        } else {
            (FileKind::File, format!("{parent_path}{}", entry.name))
        };
        let mut inodes = self.inodes.lock();
        let key = (parent, entry.name.clone());
        let ino = match inodes.by_name.get(&key) {
            Some(&ino) if inodes.nodes.get(&ino).is_some_and(|n| n.kind == kind) => ino,
            _ => {
                let ino = self.next_ino.fetch_add(1, Ordering::Relaxed);
                inodes.by_name.insert(key, ino);
                ino
            }
        };
        let node = Node {
            parent,
            kind,
            path,
            entry: entry.clone(),
        };
        let attr = self.attr_of(ino, &node);
        inodes.nodes.insert(ino, node);
        (ino, attr)
    }

    pub fn getattr(&self, ino: Ino) -> Result<Attr, FsError> {
        let inodes = self.inodes.lock();
        let node = inodes.nodes.get(&ino).ok_or_else(FsError::not_found)?;
        Ok(self.attr_of(ino, node))
    }

    pub fn lookup(&self, parent: Ino, name: &str) -> Result<Attr, FsError> {
        let path = self.dir_path(parent)?;
        let entries = self.entries(&path)?;
        let at = entries
            .binary_search_by(|e| e.name.as_str().cmp(name))
            .map_err(|_| FsError::not_found())?;
        Ok(self.child(parent, &path, &entries[at]).1)
    }

    /// The directory's entries with their attributes, `.` and `..` first. Starts
    /// the look-ahead listing of its subdirectories.
    pub fn readdir(&self, ino: Ino) -> Result<Vec<(Attr, String)>, FsError> {
        let path = self.dir_path(ino)?;
        let entries = self.entries(&path)?;
        let parent = self
            .inodes
            .lock()
            .nodes
            .get(&ino)
            .map_or(ROOT_INO, |n| n.parent);
        let mut out = Vec::with_capacity(entries.len() + 2);
        out.push((self.getattr(ino)?, ".".to_string()));
        out.push((self.getattr(parent)?, "..".to_string()));
        for entry in entries.iter() {
            let (_, attr) = self.child(ino, &path, entry);
            out.push((attr, entry.name.clone()));
        }
        self.list_ahead(&path, &entries);
        Ok(out)
    }

    /// The cached listing of `prefix`, if younger than the TTL.
    fn fresh(&self, prefix: &str) -> Option<Arc<Vec<Entry>>> {
        self.listings
            .lock()
            .get(prefix)
            .filter(|l| l.fetched.elapsed() < self.config.metadata_ttl)
            .map(|l| Arc::clone(&l.entries))
    }

    fn is_offline(&self) -> bool {
        self.offline_until
            .lock()
            .is_some_and(|until| Instant::now() < until)
    }

    /// Lists the subdirectories of `parent` in the background, bounded, skipping
    /// those cached or already on their way. Best effort: a failure only means the
    /// reader lists the directory itself when it gets there.
    fn list_ahead(&self, parent: &str, entries: &[Entry]) {
        if self.is_offline() {
            return;
        }
        let prefixes: Vec<String> = entries
            .iter()
            .filter(|e| e.dir)
            .map(|e| format!("{parent}{}/", e.name))
            .filter(|p| self.fresh(p).is_none() && !self.inflight.contains(p))
            .take(LIST_AHEAD_MAX)
            .collect();
        for prefix in prefixes {
            let store = Arc::clone(&self.store);
            let mirror = Arc::clone(self.mirror());
            let listings = Arc::clone(&self.listings);
            let inflight = Arc::clone(&self.inflight);
            let permits = Arc::clone(&self.list_ahead);
            let ttl = self.config.metadata_ttl;
            self.rt.spawn(async move {
                let Ok(_permit) = permits.acquire_owned().await else {
                    return;
                };
                // Claimed only once it can start, so a reader never waits on a queued one.
                let fresh = listings
                    .lock()
                    .get(&prefix)
                    .is_some_and(|l| l.fetched.elapsed() < ttl);
                let Some(_claim) = (!fresh).then(|| inflight.begin(&prefix)).flatten() else {
                    return;
                };
                // After a restart, a saved listing younger than the TTL will do.
                if let Some((entries, age)) = listing::load(&mirror, store.bucket(), &prefix)
                    && age < ttl
                {
                    remember(&listings, &prefix, entries, age);
                    return;
                }
                match listing::list_dir(store.as_ref(), &prefix).await {
                    Ok(entries) => {
                        listing::persist(&mirror, store.bucket(), &prefix, &entries);
                        remember(&listings, &prefix, entries, Duration::ZERO);
                    }
                    Err(e) => tracing::debug!(prefix, "look-ahead listing failed: {e}"),
                }
            });
        }
    }

    /// The listing of `prefix`: cached, else from S3, else persisted, else rebuilt
    /// from the mirror. S3 being away is a warning, not an error to the reader.
    fn entries(&self, prefix: &str) -> Result<Arc<Vec<Entry>>, FsError> {
        let ttl = self.config.metadata_ttl;
        if let Some(entries) = self.fresh(prefix) {
            return Ok(entries);
        }
        let bucket = self.store.bucket().to_string();
        let saved = || listing::load(self.mirror(), &bucket, prefix);
        // After a restart, a saved listing younger than the TTL is as good as a new one.
        if !self.listings.lock().contains_key(prefix)
            && let Some((entries, age)) = saved()
            && age < ttl
        {
            return Ok(remember(&self.listings, prefix, entries, age));
        }
        if !self.is_offline() {
            // A look-ahead may be listing this directory already: wait for it
            // rather than send the same LIST twice.
            self.inflight.wait(prefix, LIST_WAIT);
            if let Some(entries) = self.fresh(prefix) {
                return Ok(entries);
            }
            let _claim = self.inflight.begin(prefix);
            match self
                .rt
                .block_on(listing::list_dir(self.store.as_ref(), prefix))
            {
                Ok(entries) => {
                    *self.offline_until.lock() = None;
                    listing::persist(self.mirror(), &bucket, prefix, &entries);
                    return Ok(remember(&self.listings, prefix, entries, Duration::ZERO));
                }
                Err(e) => {
                    tracing::warn!(
                        prefix,
                        "cannot list S3 ({e}); serving what the mirror knows"
                    );
                    *self.offline_until.lock() = Some(Instant::now() + OFFLINE_BACKOFF);
                }
            }
        }
        let cached = self
            .listings
            .lock()
            .get(prefix)
            .map(|l| Arc::clone(&l.entries));
        let entries = match cached {
            Some(entries) => (*entries).clone(),
            None => saved()
                .map(|(entries, _)| entries)
                .or_else(|| listing::from_mirror(self.mirror(), prefix))
                .unwrap_or_default(),
        };
        Ok(remember(&self.listings, prefix, entries, Duration::ZERO))
    }

    /// Where `key` lives in the mirror (the same placement prefetch uses).
    fn mirror_path(&self, key: &str, size: u64) -> PathBuf {
        match place_alone(key, size) {
            Placement::File(path) => self.mirror().resolve(key, &path),
            Placement::Directory(path) => path,
            Placement::Renamed { path, .. } => path,
        }
    }

    pub fn open(&self, ino: Ino) -> Result<Opened, FsError> {
        let (parent, key, entry) = {
            let inodes = self.inodes.lock();
            let node = inodes.nodes.get(&ino).ok_or_else(FsError::not_found)?;
            if node.kind == FileKind::Directory {
                return Err(FsError::is_a_directory());
            }
            (node.parent, node.path.clone(), node.entry.clone())
        };
        let rel = self.mirror_path(&key, entry.size);
        let mirror = self.mirror();
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        if mirror.status(&rel, &key, &entry.etag, entry.size) == LocalStatus::Current
            && let Ok(file) = File::open(mirror.root().join(&rel))
        {
            let file = Arc::new(file);
            self.handles
                .lock()
                .insert(fh, Arc::new(OpenFile::Local(Arc::clone(&file))));
            return Ok(Opened {
                fh,
                local: Some(file),
            });
        }
        let key = Key::new(key).map_err(|e| FsError::io("not an object key", e))?;
        let etag = ETag::new(&entry.etag);
        let stream = self.stream_for(ino, &key, &etag, entry.size, &rel);
        self.handles.lock().insert(
            fh,
            Arc::new(OpenFile::Stream {
                stream,
                key,
                etag,
                size: entry.size,
                rel,
                local: Mutex::new(None),
            }),
        );
        self.fetch_siblings(parent);
        Ok(Opened { fh, local: None })
    }

    /// The download readers of `key` share, started if none is running.
    fn stream_for(
        &self,
        ino: Ino,
        key: &Key,
        etag: &ETag,
        size: u64,
        rel: &std::path::Path,
    ) -> Arc<Stream> {
        let mut streams = self.streams.lock();
        streams.retain(|_, s| s.strong_count() > 0);
        let id = (key.as_str().to_string(), etag.as_str().to_string());
        if let Some(stream) = streams.get(&id).and_then(Weak::upgrade)
            && !stream.failed()
        {
            return stream;
        }
        let stream = Arc::new(Stream::default());
        streams.insert(id, Arc::downgrade(&stream));
        let (fetcher, key, etag, rel) = (
            self.fetcher.clone(),
            key.clone(),
            etag.clone(),
            rel.to_path_buf(),
        );
        let observer = Arc::clone(&stream);
        let committed = Arc::clone(&self.committed);
        self.rt.spawn(async move {
            let result = fetcher
                .ensure_observed(
                    &key,
                    &etag,
                    size,
                    &rel,
                    Some(Arc::clone(&observer) as Arc<dyn Observer>),
                )
                .await;
            match result {
                Ok(outcome) => {
                    observer.finish(Finished::Complete);
                    if matches!(outcome, Outcome::Downloaded { .. })
                        && let Some(hook) = committed.get()
                    {
                        hook(ino);
                    }
                }
                Err(FetchError::Mirror(e)) => {
                    // The copy is best effort to a reader: its bytes still come from S3.
                    tracing::error!(%key, "cannot persist to the mirror ({e}); serving it from S3");
                    observer.finish(Finished::Unpersisted);
                }
                Err(e) => {
                    tracing::warn!(%key, "download failed: {e}");
                    observer.finish(Finished::Failed(Arc::new(e)));
                }
            }
        });
        stream
    }

    /// After a cold read in a directory, fetches its other files in the background
    /// (bounded), so a pass over a folder does not wait on S3 file by file.
    fn fetch_siblings(&self, dir: Ino) {
        let Ok(prefix) = self.dir_path(dir) else {
            return;
        };
        {
            let mut done = self.siblings_done.lock();
            if done
                .get(&prefix)
                .is_some_and(|t| t.elapsed() < self.config.metadata_ttl)
            {
                return;
            }
            done.insert(prefix.clone(), Instant::now());
        }
        let Some(entries) = self
            .listings
            .lock()
            .get(&prefix)
            .map(|l| Arc::clone(&l.entries))
        else {
            return;
        };
        let jobs: Vec<(Key, ETag, u64, PathBuf)> = entries
            .iter()
            .filter(|e| !e.dir && e.size <= SIBLING_MAX_SIZE)
            .take(SIBLINGS_MAX)
            .filter_map(|e| {
                let key = Key::new(format!("{prefix}{}", e.name)).ok()?;
                let rel = self.mirror_path(key.as_str(), e.size);
                Some((key, ETag::new(&e.etag), e.size, rel))
            })
            .collect();
        for (key, etag, size, rel) in jobs {
            let (fetcher, permits) = (self.fetcher.clone(), Arc::clone(&self.siblings));
            self.rt.spawn(async move {
                let Ok(_permit) = permits.acquire_owned().await else {
                    return;
                };
                if let Err(e) = fetcher.ensure(&key, &etag, size, &rel).await {
                    tracing::debug!(%key, "background fetch failed: {e}");
                }
            });
        }
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, FsError> {
        let handle = self
            .handles
            .lock()
            .get(&fh)
            .cloned()
            .ok_or_else(FsError::bad_handle)?;
        match handle.as_ref() {
            OpenFile::Local(file) => read_at(file, offset, size),
            OpenFile::Stream {
                stream,
                key,
                etag,
                size: object_size,
                rel,
                local,
            } => {
                if let Some(file) = local.lock().as_ref() {
                    return read_at(file, offset, size);
                }
                let end = offset.saturating_add(u64::from(size)).min(*object_size);
                if offset >= end {
                    return Ok(Vec::new());
                }
                match stream.read(offset..end, READ_WAIT) {
                    Ok(Ready::Data(bytes)) => Ok(bytes),
                    Ok(Ready::ReadMirror) => {
                        let file = Arc::new(
                            File::open(self.mirror().root().join(rel))
                                .map_err(|e| FsError::io("cannot open the mirrored file", e))?,
                        );
                        *local.lock() = Some(Arc::clone(&file));
                        read_at(&file, offset, size)
                    }
                    Ok(Ready::FetchDirect) => self.read_direct(key, etag, offset..end),
                    Err(e) => Err(FsError::io("cannot read the download", e)),
                }
            }
        }
    }

    /// A ranged GET of its own for a read far ahead of the download (or of one that
    /// cannot be persisted), pinned to the version the handle opened. A body that
    /// breaks off or stalls resumes where it stopped, as downloads do.
    fn read_direct(
        &self,
        key: &Key,
        etag: &ETag,
        range: std::ops::Range<u64>,
    ) -> Result<Vec<u8>, FsError> {
        let fetch = self.fetcher.read_pinned(key, etag, range);
        self.rt
            .block_on(async move { tokio::time::timeout(READ_WAIT, fetch).await })
            .map_err(|_| {
                FsError::new(
                    libc::EIO,
                    format!("ranged read timed out after {READ_WAIT:?}"),
                )
            })?
            .map_err(|e| FsError::io("ranged read failed", e))
    }

    pub fn release(&self, fh: u64) {
        self.handles.lock().remove(&fh);
    }
}

/// Caches a listing as fetched `age` ago, and returns it.
fn remember(
    listings: &Mutex<HashMap<String, Listing>>,
    prefix: &str,
    entries: Vec<Entry>,
    age: Duration,
) -> Arc<Vec<Entry>> {
    let entries = Arc::new(entries);
    let fetched = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
    listings.lock().insert(
        prefix.to_string(),
        Listing {
            fetched,
            entries: Arc::clone(&entries),
        },
    );
    entries
}

fn read_at(file: &File, offset: u64, size: u32) -> Result<Vec<u8>, FsError> {
    let mut buf = vec![0u8; size as usize];
    let n = read_full(file, &mut buf, offset)
        .map_err(|e| FsError::io("cannot read the mirrored file", e))?;
    buf.truncate(n);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::FetchConfig;
    use crate::store::memory::MemoryStore;

    struct Fixture {
        fs: Fs,
        store: Arc<MemoryStore>,
        mirror: Arc<Mirror>,
        _dir: tempfile::TempDir,
        _rt: tokio::runtime::Runtime,
    }

    fn fixture(ttl: Duration) -> Fixture {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MemoryStore::new("b"));
        store.put("a/1.jpg", vec![1u8; 1000]);
        store.put("a/2.jpg", vec![2u8; 2000]);
        store.put("a/sub/3.jpg", vec![3u8; 3]);
        store.put("top", "hello");
        store.put("x//bad", "unshowable name");
        let mirror = Arc::new(Mirror::open(dir.path(), "b").unwrap());
        let config = FetchConfig {
            part_size: 700,
            ..FetchConfig::default()
        };
        let fetcher = Fetcher::new(
            Arc::clone(&store) as Arc<dyn ObjectStore>,
            Arc::clone(&mirror),
            config,
        );
        let fs = Fs::new(
            Arc::clone(&store) as Arc<dyn ObjectStore>,
            fetcher,
            FsConfig {
                prefix: String::new(),
                metadata_ttl: ttl,
                uid: 1,
                gid: 2,
            },
            rt.handle().clone(),
        );
        Fixture {
            fs,
            store,
            mirror,
            _dir: dir,
            _rt: rt,
        }
    }

    fn names(fs: &Fs, ino: Ino) -> Vec<String> {
        fs.readdir(ino)
            .unwrap()
            .into_iter()
            .map(|(_, n)| n)
            .collect()
    }

    fn read_all(fs: &Fs, ino: Ino) -> Vec<u8> {
        let opened = fs.open(ino).unwrap();
        let mut out = Vec::new();
        loop {
            let chunk = fs.read(opened.fh, out.len() as u64, 512).unwrap();
            if chunk.is_empty() {
                break;
            }
            out.extend(chunk);
        }
        fs.release(opened.fh);
        out
    }

    #[test]
    fn directories_and_files_come_from_delimited_listings() {
        let f = fixture(Duration::from_secs(60));
        let names: Vec<_> =
            f.fs.readdir(ROOT_INO)
                .unwrap()
                .into_iter()
                .map(|(a, n)| (n, a.kind))
                .collect();
        assert_eq!(
            names,
            vec![
                (".".to_string(), FileKind::Directory),
                ("..".to_string(), FileKind::Directory),
                ("a".to_string(), FileKind::Directory),
                ("top".to_string(), FileKind::File),
                ("x".to_string(), FileKind::Directory),
            ]
        );
        let a = f.fs.lookup(ROOT_INO, "a").unwrap();
        let one = f.fs.lookup(a.ino, "1.jpg").unwrap();
        assert_eq!(
            (one.size, one.perm, one.uid, one.gid),
            (1000, FILE_PERM, 1, 2)
        );
        fn errno<T>(r: Result<T, FsError>) -> Option<libc::c_int> {
            r.err().map(|e| e.errno())
        }
        assert_eq!(errno(f.fs.lookup(a.ino, "nope")), Some(libc::ENOENT));
        assert_eq!(errno(f.fs.lookup(one.ino, "x")), Some(libc::ENOTDIR));
        assert_eq!(errno(f.fs.open(a.ino)), Some(libc::EISDIR));
        assert_eq!(errno(f.fs.read(999, 0, 1)), Some(libc::EBADF));
        let x = f.fs.lookup(ROOT_INO, "x").unwrap();
        assert_eq!(
            f.fs.readdir(x.ino).unwrap().len(),
            2,
            "a key with an empty name is not shown"
        );
        assert_eq!(
            f.fs.lookup(ROOT_INO, "a").unwrap().ino,
            a.ino,
            "inodes are stable"
        );
    }

    #[test]
    fn a_cold_read_streams_and_persists_then_reads_come_from_the_mirror() {
        let f = fixture(Duration::from_secs(60));
        let a = f.fs.lookup(ROOT_INO, "a").unwrap();
        let two = f.fs.lookup(a.ino, "2.jpg").unwrap();
        assert_eq!(read_all(&f.fs, two.ino), vec![2u8; 2000]);
        let deadline = Instant::now() + Duration::from_secs(5);
        while f.mirror.status(
            std::path::Path::new("a/2.jpg"),
            "a/2.jpg",
            &etag_of(&f, "a/2.jpg"),
            2000,
        ) != LocalStatus::Current
        {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(10));
        }
        let opened = f.fs.open(two.ino).unwrap();
        assert!(opened.local.is_some(), "served from the mirror");
        f.fs.release(opened.fh);
    }

    fn etag_of(f: &Fixture, key: &str) -> String {
        let page = f._rt.block_on(f.store.list_page(key, false, None)).unwrap();
        page.objects[0].etag.as_str().to_string()
    }

    #[test]
    fn offline_listings_come_from_the_persisted_copy_or_the_mirror() {
        let f = fixture(Duration::ZERO);
        let a = f.fs.lookup(ROOT_INO, "a").unwrap();
        let one = f.fs.lookup(a.ino, "1.jpg").unwrap();
        assert_eq!(read_all(&f.fs, one.ino).len(), 1000);
        f.store.set_offline(true);
        assert_eq!(
            names(&f.fs, a.ino),
            vec![".", "..", "1.jpg", "2.jpg", "sub"]
        );
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            read_all(&f.fs, one.ino),
            vec![1u8; 1000],
            "mirrored data is served"
        );
        let top = f.fs.lookup(ROOT_INO, "top").unwrap();
        let opened = f.fs.open(top.ino).unwrap();
        let err = f.fs.read(opened.fh, 0, 10).unwrap_err();
        assert_eq!(err.errno(), libc::EIO, "not mirrored: EIO");
        assert!(
            err.chain().contains("memory store is offline"),
            "the cause is kept: {}",
            err.chain()
        );
    }

    #[test]
    fn reading_a_directory_lists_its_subdirectories_ahead() {
        let f = fixture(Duration::from_secs(60));
        f.fs.readdir(ROOT_INO).unwrap();
        let a = f.fs.lookup(ROOT_INO, "a").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while f.fs.fresh("a/").is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // With S3 away, only a listing fetched ahead can name these.
        f.store.set_offline(true);
        assert_eq!(
            names(&f.fs, a.ino),
            vec![".", "..", "1.jpg", "2.jpg", "sub"]
        );
    }

    #[test]
    fn after_a_restart_saved_listings_younger_than_the_ttl_need_no_request() {
        let f = fixture(Duration::from_secs(60));
        f.fs.readdir(ROOT_INO).unwrap();
        // The subdirectories are listed ahead; let that finish first.
        let deadline = Instant::now() + Duration::from_secs(10);
        while ["a/", "x/"].iter().any(|p| f.fs.fresh(p).is_none()) {
            assert!(Instant::now() < deadline, "look-ahead listings arrive");
            std::thread::sleep(Duration::from_millis(10));
        }
        let lists = f.store.lists.load(Ordering::Relaxed);
        let fetcher = Fetcher::new(
            Arc::clone(&f.store) as Arc<dyn ObjectStore>,
            Arc::clone(&f.mirror),
            crate::fetch::FetchConfig::default(),
        );
        let config = f.fs.config.clone();
        let restarted = Fs::new(
            Arc::clone(&f.store) as Arc<dyn ObjectStore>,
            fetcher,
            config,
            f._rt.handle().clone(),
        );
        assert_eq!(restarted.readdir(ROOT_INO).unwrap().len(), 5);
        // Its own look-ahead finds the saved listings of the subdirectories too.
        std::thread::sleep(Duration::from_millis(200));
        assert!(restarted.fresh("a/").is_some());
        assert_eq!(
            f.store.lists.load(Ordering::Relaxed),
            lists,
            "no LIST after the restart"
        );
    }

    #[test]
    fn listings_are_rebuilt_from_mirrored_files() {
        let f = fixture(Duration::from_secs(60));
        let a = f.fs.lookup(ROOT_INO, "a").unwrap();
        let one = f.fs.lookup(a.ino, "1.jpg").unwrap();
        read_all(&f.fs, one.ino);
        std::thread::sleep(Duration::from_millis(100));
        let entries = listing::from_mirror(&f.mirror, "a/").unwrap();
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert!(names.contains(&"1.jpg"));
        assert!(
            listing::from_mirror(&f.mirror, "")
                .unwrap()
                .iter()
                .all(|e| e.name != crate::layout::STATE_DIR)
        );
    }
}
