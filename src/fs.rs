//! The filesystem over the store and the mirror, with no FUSE types, so it is
//! tested without a kernel. Directories come from delimited listings (cached for
//! the metadata TTL, persisted, served from the mirror when S3 is away); a file
//! the mirror holds at the listed ETag is read from the mirror; any other file is
//! streamed to the reader while the one shared download path persists it.
//!
//! `Fs` composes the parts, each in a module of its own: the inode table, the
//! listing cache, the shared downloads, the sibling warm-up and the open handles.

mod archived;
mod buffers;
pub mod error;
mod handles;
mod inodes;
pub mod listing;
mod listing_cache;
mod page_cache;
mod siblings;
pub mod stream;
mod streams;

use std::fs::File;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::runtime::Handle;

use crate::fetch::{FetchError, Fetcher};
use crate::store::{ETag, Key, ObjectStore, StorageClass, StoreError};
use archived::Archived;
use buffers::Buffers;
pub use buffers::Bytes;
pub use error::FsError;
use handles::Handles;
pub use inodes::{Excess, HELD_INODES_MAX, IDLE_INODES_MAX};
use inodes::{InodeTable, Node};
use listing::Entry;
use listing_cache::ListingCache;
pub use listing_cache::{
    LIST_AHEAD_AT_ONCE, LIST_AHEAD_MAX, LISTED_BYTES_MAX, OFFLINE_BACKOFF, ONE_PAGE_ENTRIES,
};
use page_cache::PageCaches;
use siblings::Siblings;
pub use siblings::{
    SIBLING_MAX_SIZE, SIBLINGS_AT_ONCE, SIBLINGS_DIR_BYTES, SIBLINGS_MAX, SIBLINGS_MIN_FREE,
    SIBLINGS_MIN_FREE_PERCENT, SIBLINGS_PENDING_BYTES,
};
use stream::{Ready, StreamError, read_full};
use streams::{Download, Streams};
pub use streams::{FINISH_LEFT, FINISH_SMALL};

/// An inode number; the root is 1.
pub type Ino = u64;
pub const ROOT_INO: Ino = 1;

/// Longest a read waits for its bytes before it fails with EIO.
pub const READ_WAIT: Duration = Duration::from_secs(120);

/// Reads copying their bytes out at once (each through a buffer of its own):
/// more would only wait for the cores the copies take.
pub const READS_AT_ONCE: usize = 4;

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

enum OpenFile {
    Local(Arc<File>),
    Stream(Streamed),
}

/// An open file handle: the file it reads, and what it opened.
struct OpenHandle {
    ino: Ino,
    file: OpenFile,
}

/// A file opened while the mirror did not hold its version.
struct Streamed {
    stream: Arc<Download>,
    key: Key,
    etag: ETag,
    size: u64,
    rel: PathBuf,
    /// As the listing shows it, for the message if S3 answers that it is archived.
    class: StorageClass,
    /// The mirror's copy, once the download is committed.
    local: Mutex<Option<Arc<File>>>,
}

/// A directory as one open handle of it sees it: its listing when it was opened,
/// read in as many calls as the kernel makes.
pub struct Dir {
    ino: Ino,
    parent: Ino,
    path: String,
    entries: Arc<Vec<Entry>>,
}

impl Dir {
    /// How many entries it has, `.` and `..` included.
    pub fn len(&self) -> usize {
        self.entries.len() + 2
    }

    /// Never: `.` and `..` are always there.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// An opened file: the handle, and the mirror file when reads can bypass the daemon.
pub struct Opened {
    pub fh: u64,
    pub local: Option<Arc<File>>,
    /// Whether the kernel may keep the pages it cached of the file: they are bytes
    /// of the version this handle reads.
    pub keep_cache: bool,
}

/// The filesystem.
pub struct Fs {
    fetcher: Fetcher,
    rt: Handle,
    config: FsConfig,
    started: SystemTime,
    inodes: InodeTable,
    listings: ListingCache,
    streams: Streams,
    siblings: Arc<Siblings>,
    handles: Handles<OpenHandle>,
    /// What the kernel's page cache of each open file may hold.
    page_caches: Arc<PageCaches>,
    /// What reads copy their bytes through.
    buffers: Arc<Buffers>,
    archived: Arc<Archived>,
    let_go: OnceLock<LetGoHook>,
}

/// Called with the inode of a file whose download for readers was just committed.
pub type CommitHook = Box<dyn Fn(Ino) + Send + Sync>;

/// Called with names the kernel holds beyond `HELD_INODES_MAX`, the oldest
/// given, for it to let go. Must not wait for the kernel: it is called while a
/// request is being answered.
pub type LetGoHook = Box<dyn Fn(Vec<Excess>) + Send + Sync>;

/// Permissions shown for files and directories (the mount itself is read-only).
pub const FILE_PERM: u16 = 0o644;
pub const DIR_PERM: u16 = 0o755;

impl Fs {
    /// The filesystem of `config.prefix` in `store`, mirrored through `fetcher`;
    /// background work runs on `rt`.
    pub fn new(store: Arc<dyn ObjectStore>, fetcher: Fetcher, config: FsConfig, rt: Handle) -> Fs {
        let mirror = Arc::clone(fetcher.mirror());
        let ttl = config.metadata_ttl;
        let swept = Arc::clone(&mirror);
        rt.spawn_blocking(move || {
            let keep = listing::SAVED_LISTING_KEEP;
            let removed = listing::sweep(&swept, keep);
            if removed > 0 {
                let days = keep.as_secs() / 86_400;
                tracing::info!("removed {removed} saved listings not written for {days} days");
            }
        });
        let archived = Arc::new(Archived::new(store.bucket(), &config.prefix, mirror.root()));
        Fs {
            inodes: InodeTable::new(&config.prefix),
            listings: ListingCache::new(store, mirror, ttl, rt.clone()),
            streams: Streams::new(fetcher.clone(), rt.clone()),
            siblings: Arc::new(Siblings::new(
                fetcher.clone(),
                ttl,
                rt.clone(),
                Arc::clone(&archived),
            )),
            handles: Handles::default(),
            page_caches: Arc::default(),
            buffers: Buffers::new(READS_AT_ONCE),
            archived,
            let_go: OnceLock::new(),
            fetcher,
            rt,
            config,
            started: SystemTime::now(),
        }
    }

    /// Sets what to do when a reader's download is committed (once; later calls
    /// are ignored), if no handle of the file is open by then. The FUSE adapter drops
    /// the kernel's cached pages of the file then: from now on its reads go to the
    /// mirror file. A reader still reading keeps them: they are the same bytes.
    pub fn on_commit(&self, hook: CommitHook) {
        let caches = Arc::clone(&self.page_caches);
        self.streams.on_commit(Box::new(move |ino| {
            if !caches.in_use(ino) {
                hook(ino);
            }
        }));
    }

    /// Sets how to tell the kernel to let names go (once; later calls are
    /// ignored). Without it, the kernel keeps what it was given until it
    /// forgets it by itself.
    pub fn on_let_go(&self, hook: LetGoHook) {
        let _ = self.let_go.set(hook);
    }

    /// Tells the kernel to let go of the oldest names it was given, if it holds
    /// more than the bound.
    fn let_go(&self) {
        if !self.inodes.over() {
            return;
        }
        if let Some(hook) = self.let_go.get() {
            let names = self.inodes.excess();
            if !names.is_empty() {
                hook(names);
            }
        }
    }

    /// The runtime background work runs on.
    pub fn runtime(&self) -> &Handle {
        &self.rt
    }

    /// How long the kernel may cache names and attributes.
    pub fn ttl(&self) -> Duration {
        self.config.metadata_ttl
    }

    /// The attributes of a directory, which need no node: S3 gives directories none.
    fn dir_attr(&self, ino: Ino) -> Attr {
        Attr {
            ino,
            kind: FileKind::Directory,
            size: 0,
            mtime: self.started,
            perm: DIR_PERM,
            uid: self.config.uid,
            gid: self.config.gid,
        }
    }

    fn attr_of(&self, ino: Ino, node: &Node) -> Attr {
        // S3 has no directory times: directories show when the mount started.
        let (perm, size, mtime) = match node.kind() {
            FileKind::Directory => (DIR_PERM, 0, self.started),
            FileKind::File => (FILE_PERM, node.entry.size, node.entry.mtime()),
        };
        Attr {
            ino,
            kind: node.kind(),
            size,
            mtime,
            perm,
            uid: self.config.uid,
            gid: self.config.gid,
        }
    }

    /// The attributes of `ino`.
    pub fn getattr(&self, ino: Ino) -> Result<Attr, FsError> {
        self.inodes.with(ino, |node| self.attr_of(ino, node))
    }

    /// The attributes of `name` in directory `parent`. The kernel holds one more
    /// lookup of the inode it gets, until it forgets it.
    /// Blocks on S3 when the answer is not known here.
    pub fn lookup(&self, parent: Ino, name: &str) -> Result<Attr, FsError> {
        let path = self.inodes.dir_path(parent)?;
        let entry = self.listings.entry(&path, name)?;
        self.looked_up(parent, &path, entry)
    }

    /// `lookup` when it needs nothing of S3; `Ok(None)` when it would.
    pub fn lookup_now(&self, parent: Ino, name: &str) -> Result<Option<Attr>, FsError> {
        let path = self.inodes.dir_path(parent)?;
        let Some(entry) = self.listings.entry_now(&path, name)? else {
            return Ok(None);
        };
        self.looked_up(parent, &path, entry).map(Some)
    }

    fn looked_up(&self, parent: Ino, path: &str, entry: Option<Entry>) -> Result<Attr, FsError> {
        let entry = entry.ok_or_else(FsError::not_found)?;
        let attr_of = |ino, node: &Node| self.attr_of(ino, node);
        let attr = self.inodes.child(parent, path, &entry, true, attr_of);
        self.let_go();
        Ok(attr)
    }

    /// The kernel forgot `n` lookups of `ino`; the inode is dropped once it holds none.
    pub fn forget(&self, ino: Ino, n: u64) {
        if self.inodes.forget(ino, n) {
            // Off the kernel's path: it walks every heap of the allocator.
            self.rt.spawn_blocking(crate::sys::release_free_memory);
        }
        if self.inodes.with(ino, |_| ()).is_err() {
            self.page_caches.forget(ino);
        }
    }

    /// How many inodes the filesystem holds, the root included.
    pub fn inodes(&self) -> usize {
        self.inodes.len()
    }

    /// Opens directory `ino`: its listing as of now. Starts the look-ahead
    /// listing of its subdirectories. Blocks on S3 when the listing is not known here.
    pub fn opendir(&self, ino: Ino) -> Result<Dir, FsError> {
        let path = self.inodes.dir_path(ino)?;
        let entries = self.listings.entries(&path)?;
        Ok(self.opened_dir(ino, path, entries))
    }

    /// `opendir` when it needs nothing of S3; `Ok(None)` when it would.
    pub fn opendir_now(&self, ino: Ino) -> Result<Option<Dir>, FsError> {
        let path = self.inodes.dir_path(ino)?;
        let Some(entries) = self.listings.entries_now(&path)? else {
            return Ok(None);
        };
        Ok(Some(self.opened_dir(ino, path, entries)))
    }

    fn opened_dir(&self, ino: Ino, path: String, entries: Arc<Vec<Entry>>) -> Dir {
        let parent = self.inodes.with(ino, |n| n.parent).unwrap_or(ROOT_INO);
        self.listings.list_ahead(&path, &entries);
        Dir {
            ino,
            parent,
            path,
            entries,
        }
    }

    /// Entry `i` of `dir` (`.` and `..` first) with its attributes. With
    /// `counted`, the reply gives the inode to the kernel as a lookup would
    /// (readdirplus does, except for `.` and `..`); a plain readdir does not.
    pub fn dir_entry<'a>(&self, dir: &'a Dir, i: usize, counted: bool) -> Option<(Attr, &'a str)> {
        match i {
            0 => Some((self.dir_attr(dir.ino), ".")),
            1 => Some((self.dir_attr(dir.parent), "..")),
            _ => {
                let entry = dir.entries.get(i - 2)?;
                let attr_of = |ino, node: &Node| self.attr_of(ino, node);
                let attr = self
                    .inodes
                    .child(dir.ino, &dir.path, entry, counted, attr_of);
                if counted {
                    self.let_go();
                }
                Some((attr, &*entry.name))
            }
        }
    }

    /// Opens a file: from the mirror if it holds the listed version, else as a
    /// stream of the download readers of that version share. An archived object
    /// the mirror does not hold fails at once (ENODATA), with no request.
    pub fn open(&self, ino: Ino) -> Result<Opened, FsError> {
        let (key, parent, entry) = self.inodes.file(ino)?;
        let Some(key) = key else {
            return Err(FsError::is_a_directory());
        };
        let key = Key::new(key).map_err(|e| FsError::io("not an object key", e))?;
        let etag = ETag::new(&entry.etag());
        let mirror = self.fetcher.mirror();
        if let Some(file) = mirror.open_current(&key, &etag, entry.size) {
            self.fetch_siblings(parent, &entry.name, false);
            let file = Arc::new(file);
            let fh = self.handles.insert(OpenHandle {
                ino,
                file: OpenFile::Local(Arc::clone(&file)),
            });
            return Ok(Opened {
                fh,
                local: Some(file),
                keep_cache: self.page_caches.open(ino, fh, &etag),
            });
        }
        if entry.archived || self.archived.known(&key, &etag) {
            return Err(self.archived.refuse(&key, &entry.storage_class()));
        }
        let rel = mirror.path_for(&key, entry.size);
        let stream = self.streams.open(ino, &key, &etag, entry.size, &rel);
        let fh = self.handles.insert(OpenHandle {
            ino,
            file: OpenFile::Stream(Streamed {
                stream,
                key,
                etag: etag.clone(),
                size: entry.size,
                rel,
                class: entry.storage_class(),
                local: Mutex::new(None),
            }),
        });
        self.fetch_siblings(parent, &entry.name, true);
        Ok(Opened {
            fh,
            local: None,
            keep_cache: self.page_caches.open(ino, fh, &etag),
        })
    }

    /// After a cold read in a directory, fetches the files after `opened` in
    /// the background, and moves that window on as readers go through it (not
    /// `opened` itself, which its reader's download is fetching: were that to
    /// fail, as for an archived object, the warm-up would only ask S3 again).
    fn fetch_siblings(&self, dir: Ino, opened: &str, cold: bool) {
        let Ok(prefix) = self.inodes.dir_path(dir) else {
            return;
        };
        let Some(after) = self.siblings.claim(&prefix, opened, cold) else {
            return;
        };
        // A lookup lists only its own name: the directory may need a listing first.
        let siblings = Arc::clone(&self.siblings);
        self.listings.then_listed(&prefix.clone(), move |entries| {
            siblings.warm(&prefix, &entries, &after);
        });
    }

    /// Up to `size` bytes of the open file `fh` at `offset` (fewer at its end).
    /// Blocks on S3 while the bytes have not arrived.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Bytes, FsError> {
        self.read_waiting(fh, offset, size, true)
            .map(|bytes| bytes.expect("the read waited"))
    }

    /// `read` when the bytes are here (in the mirror or already downloaded);
    /// `Ok(None)` when it would wait on S3.
    pub fn read_now(&self, fh: u64, offset: u64, size: u32) -> Result<Option<Bytes>, FsError> {
        self.read_waiting(fh, offset, size, false)
    }

    fn read_waiting(
        &self,
        fh: u64,
        offset: u64,
        size: u32,
        wait: bool,
    ) -> Result<Option<Bytes>, FsError> {
        match &self.handles.get(fh)?.file {
            OpenFile::Local(file) => self.read_at(file, offset, size).map(Some),
            OpenFile::Stream(streamed) => self.read_streamed(streamed, offset, size, wait),
        }
    }

    /// A read of a file opened as a stream: from the file being filled, from the
    /// mirror once the download is committed, or by a ranged GET of its own.
    /// Without `wait`, `None` instead of waiting for bytes or a GET.
    fn read_streamed(
        &self,
        file: &Streamed,
        offset: u64,
        size: u32,
        wait: bool,
    ) -> Result<Option<Bytes>, FsError> {
        if let Some(local) = file.local.lock().as_ref() {
            return self.read_at(local, offset, size).map(Some);
        }
        let end = offset.saturating_add(u64::from(size)).min(file.size);
        if offset >= end {
            return Ok(Some(Bytes::from(Vec::new())));
        }
        let limit = if wait { READ_WAIT } else { Duration::ZERO };
        let ready = match file.stream.read(offset..end, limit) {
            Err(StreamError::TimedOut(_)) if !wait => return Ok(None),
            Ok(Ready::FetchDirect) if !wait => return Ok(None),
            ready => ready.map_err(|e| self.download_failed(file, e))?,
        };
        let bytes = match ready {
            Ready::InFile(filling) => self.read_at(&filling, offset, (end - offset) as u32),
            Ready::ReadMirror => {
                let mirror = self.fetcher.mirror();
                let local = mirror
                    .open_copy(&file.rel)
                    .map_err(|e| FsError::io("cannot open the mirrored file", e))?;
                let local = Arc::new(local);
                *file.local.lock() = Some(Arc::clone(&local));
                self.read_at(&local, offset, size)
            }
            Ready::FetchDirect => self
                .read_direct(&file.key, &file.etag, offset..end)
                .map(Bytes::from),
        };
        bytes.map(Some)
    }

    /// A reader's failure when its download failed: ENODATA, once S3 answered
    /// that the object is archived (and later opens fail at once), else EIO.
    fn download_failed(&self, file: &Streamed, e: StreamError) -> FsError {
        let StreamError::Failed(fetch) = &e else {
            return FsError::io("cannot read the download", e);
        };
        let FetchError::Store(StoreError::Archived(answer)) = fetch.as_ref() else {
            return FsError::io("cannot read the download", e);
        };
        self.archived.answered(&file.key, &file.etag);
        let class = answer.storage_class.as_ref().unwrap_or(&file.class);
        self.archived.refuse(&file.key, class)
    }

    /// A ranged GET of its own for a read far ahead of the download (or of one that
    /// cannot be persisted), pinned to the version the handle opened. A body that
    /// breaks off or stalls resumes where it stopped, as downloads do.
    fn read_direct(&self, key: &Key, etag: &ETag, range: Range<u64>) -> Result<Vec<u8>, FsError> {
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

    /// Up to `size` bytes of `file` at `offset`, in a lent buffer.
    fn read_at(&self, file: &File, offset: u64, size: u32) -> Result<Bytes, FsError> {
        self.buffers
            .fill(size as usize, |buf| read_full(file, buf, offset))
            .map_err(|e| FsError::io("cannot read the mirrored file", e))
    }

    /// Closes `fh`.
    pub fn release(&self, fh: u64) {
        if let Some(handle) = self.handles.remove(fh) {
            self.page_caches.release(handle.ino, fh);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    use super::*;
    use crate::fetch::FetchConfig;
    use crate::mirror::LocalStatus;
    use crate::testing::{Scratch, runtime};

    struct Fixture {
        fs: Fs,
        scratch: Scratch,
        _rt: tokio::runtime::Runtime,
    }

    fn fixture(ttl: Duration) -> Fixture {
        let rt = runtime(2);
        let scratch = Scratch::new(&[
            ("a/1.jpg", &[1u8; 1000]),
            ("a/2.jpg", &[2u8; 2000]),
            ("a/sub/3.jpg", &[3u8; 3]),
            ("top", b"hello"),
            ("x//bad", b"unshowable name"),
        ]);
        let fetcher = scratch.fetcher(FetchConfig {
            part_size: 700,
            ..FetchConfig::default()
        });
        let fs = Fs::new(
            scratch.store(),
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
            scratch,
            _rt: rt,
        }
    }

    /// A whole directory, as a plain readdir reads it.
    fn readdir(fs: &Fs, ino: Ino) -> Result<Vec<(Attr, String)>, FsError> {
        let dir = fs.opendir(ino)?;
        let entries = (0..dir.len()).map_while(|i| fs.dir_entry(&dir, i, false));
        Ok(entries.map(|(a, n)| (a, n.to_string())).collect())
    }

    #[test]
    fn inodes_live_while_the_kernel_holds_lookups_of_them() {
        let f = fixture(Duration::from_secs(60));
        let a = f.fs.lookup(ROOT_INO, "a").unwrap();
        let dir = f.fs.opendir(a.ino).unwrap();
        assert_eq!(dir.len(), 5, ". .. 1.jpg 2.jpg sub");
        // As readdirplus gives them: each entry is a lookup, `.` and `..` are not.
        let given: Vec<Attr> = (0..dir.len())
            .map(|i| f.fs.dir_entry(&dir, i, true).unwrap().0)
            .collect();
        assert_eq!(f.fs.inodes(), 1 + 1 + 3);
        assert!(f.fs.dir_entry(&dir, dir.len(), true).is_none());
        let one = f.fs.lookup(a.ino, "1.jpg").unwrap();
        assert_eq!(one.ino, given[2].ino, "the same name, the same inode");
        f.fs.forget(one.ino, 1);
        assert_eq!(f.fs.getattr(one.ino).unwrap().size, 1000, "one lookup left");
        for attr in &given[2..] {
            f.fs.forget(attr.ino, 1);
        }
        f.fs.forget(a.ino, 1);
        assert_eq!(f.fs.inodes(), 1, "only the root is left");
        assert_eq!(f.fs.getattr(one.ino).unwrap_err().errno(), libc::ENOENT);
        // A plain readdir gives no lookups; its inodes are kept up to a bound.
        readdir(&f.fs, ROOT_INO).unwrap();
        assert_eq!(f.fs.inodes(), 1 + 3);
        f.fs.forget(ROOT_INO, 1);
        assert_eq!(f.fs.getattr(ROOT_INO).unwrap().kind, FileKind::Directory);
    }

    fn names(fs: &Fs, ino: Ino) -> Vec<String> {
        readdir(fs, ino)
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
            out.extend_from_slice(&chunk);
        }
        fs.release(opened.fh);
        out
    }

    #[test]
    fn answers_that_would_ask_s3_are_told_apart_from_those_known_here() {
        let f = fixture(Duration::from_secs(60));
        let lists = || f.scratch.store.lists.load(Ordering::Relaxed);
        assert_eq!(f.fs.lookup_now(ROOT_INO, "a").unwrap(), None);
        assert!(f.fs.opendir_now(ROOT_INO).unwrap().is_none());
        assert_eq!(lists(), 0, "neither asked S3");
        let a = f.fs.lookup(ROOT_INO, "a").unwrap();
        assert_eq!(f.fs.lookup_now(ROOT_INO, "a").unwrap(), Some(a.clone()));
        readdir(&f.fs, a.ino).unwrap();
        let one = f.fs.lookup_now(a.ino, "1.jpg").unwrap().expect("listed");
        assert!(f.fs.opendir_now(a.ino).unwrap().is_some());
        let absent = f.fs.lookup_now(a.ino, "nope").unwrap_err();
        assert_eq!(absent.errno(), libc::ENOENT, "absent is known too");
        assert_eq!(read_all(&f.fs, one.ino), vec![1u8; 1000]);
        wait_for_copy(&f, "a/1.jpg", 1000);
        let opened = f.fs.open(one.ino).unwrap();
        let bytes = f.fs.read_now(opened.fh, 10, 20).unwrap();
        let bytes = bytes.map(|b| b.to_vec());
        assert_eq!(bytes, Some(vec![1u8; 20]), "the mirror answers at once");
        f.fs.release(opened.fh);
    }

    #[test]
    fn directories_and_files_come_from_delimited_listings() {
        let f = fixture(Duration::from_secs(60));
        let names: Vec<_> = readdir(&f.fs, ROOT_INO)
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
            readdir(&f.fs, x.ino).unwrap().len(),
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
        while f.scratch.mirror.status(
            std::path::Path::new("a/2.jpg"),
            &Key::new("a/2.jpg").unwrap(),
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

    #[test]
    fn the_kernel_keeps_cached_pages_only_of_the_version_opened() {
        let f = fixture(Duration::ZERO);
        let keeps = |ino| {
            let opened = f.fs.open(ino).unwrap();
            f.fs.release(opened.fh);
            opened.keep_cache
        };
        let top = f.fs.lookup(ROOT_INO, "top").unwrap();
        assert!(!keeps(top.ino), "nothing is known of the cache");
        assert_eq!(read_all(&f.fs, top.ino), b"hello");
        assert!(keeps(top.ino), "the same version, streamed or not");
        wait_for_copy(&f, "top", 5);
        let opened = f.fs.open(top.ino).unwrap();
        assert!(
            opened.local.is_some() && opened.keep_cache,
            "from the mirror"
        );
        f.scratch.store.put("top", "changed");
        let top = f.fs.lookup(ROOT_INO, "top").unwrap();
        assert!(
            !keeps(top.ino),
            "another version: a handle of the old is open"
        );
        f.fs.release(opened.fh);
        assert!(!keeps(top.ino), "pages of the old one may be there");
        assert!(keeps(top.ino));
        assert_eq!(read_all(&f.fs, top.ino), b"changed");
    }

    fn etag_of(f: &Fixture, key: &str) -> ETag {
        let page = f
            ._rt
            .block_on(f.scratch.store.list_page(key, false, None))
            .unwrap();
        page.objects[0].etag.clone()
    }

    #[test]
    fn archived_objects_are_served_from_the_mirror_or_fail_at_once_with_enodata() {
        let f = fixture(Duration::ZERO);
        let store = &f.scratch.store;
        store.put_with_class("cold/glacier", "never mirrored", StorageClass::Glacier);
        // Alone in its directory, so no sibling warm-up finds it before the reader.
        store.put_with_class("tiers/t", "tier", StorageClass::IntelligentTiering);
        store.archive_tier("tiers/t");
        store.put("cold/warm", "mirrored first");
        let cold = f.fs.lookup(ROOT_INO, "cold").unwrap();
        let warm = f.fs.lookup(cold.ino, "warm").unwrap();
        assert_eq!(read_all(&f.fs, warm.ino), b"mirrored first");
        wait_for_copy(&f, "cold/warm", 14);
        store.set_class("cold/warm", StorageClass::DeepArchive);
        let warm = f.fs.lookup(cold.ino, "warm").unwrap();
        assert_eq!(
            read_all(&f.fs, warm.ino),
            b"mirrored first",
            "from the mirror"
        );
        let gets = || store.gets.load(Ordering::Relaxed);
        let before = gets();
        let glacier = f.fs.lookup(cold.ino, "glacier").unwrap();
        assert_eq!(glacier.size, 14, "listed like any other");
        let err =
            f.fs.open(glacier.ino)
                .err()
                .expect("an archived object fails");
        assert_eq!(err.errno(), libc::ENODATA);
        assert_eq!(gets(), before, "no request: the listing told");
        let tiers = f.fs.lookup(ROOT_INO, "tiers").unwrap();
        let tier = f.fs.lookup(tiers.ino, "t").unwrap();
        let opened = f.fs.open(tier.ino).unwrap();
        let started = Instant::now();
        let err = f.fs.read(opened.fh, 0, 100).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no retries, no hang"
        );
        assert_eq!(err.errno(), libc::ENODATA);
        assert!(err.to_string().contains("INTELLIGENT_TIERING"), "{err}");
        f.fs.release(opened.fh);
        let after = gets();
        let again = f.fs.open(tier.ino).err().expect("fails at once now");
        assert_eq!(again.errno(), libc::ENODATA);
        assert_eq!(gets(), after, "the answer is remembered");
    }

    fn wait_for_copy(f: &Fixture, key: &str, size: u64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let (rel, key) = (std::path::Path::new(key), Key::new(key).unwrap());
        while f
            .scratch
            .mirror
            .status(rel, &key, &etag_of(f, key.as_str()), size)
            != LocalStatus::Current
        {
            assert!(Instant::now() < deadline, "the copy is committed");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn offline_listings_come_from_the_persisted_copy_or_the_mirror() {
        let f = fixture(Duration::ZERO);
        let a = f.fs.lookup(ROOT_INO, "a").unwrap();
        let one = f.fs.lookup(a.ino, "1.jpg").unwrap();
        assert_eq!(read_all(&f.fs, one.ino).len(), 1000);
        // A lookup lists one name; reading a directory lists (and saves) all.
        names(&f.fs, ROOT_INO);
        names(&f.fs, a.ino);
        f.scratch.store.set_offline(true);
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
        readdir(&f.fs, ROOT_INO).unwrap();
        let a = f.fs.lookup(ROOT_INO, "a").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while f.fs.listings.fresh("a/").is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // With S3 away, only a listing fetched ahead can name these.
        f.scratch.store.set_offline(true);
        assert_eq!(
            names(&f.fs, a.ino),
            vec![".", "..", "1.jpg", "2.jpg", "sub"]
        );
    }

    #[test]
    fn after_a_restart_saved_listings_younger_than_the_ttl_need_no_request() {
        let f = fixture(Duration::from_secs(60));
        readdir(&f.fs, ROOT_INO).unwrap();
        // The subdirectories are listed ahead; let that finish first.
        let deadline = Instant::now() + Duration::from_secs(10);
        while ["a/", "x/"]
            .iter()
            .any(|p| f.fs.listings.fresh(p).is_none())
        {
            assert!(Instant::now() < deadline, "look-ahead listings arrive");
            std::thread::sleep(Duration::from_millis(10));
        }
        let lists = f.scratch.store.lists.load(Ordering::Relaxed);
        let fetcher = Fetcher::new(
            Arc::clone(&f.scratch.store) as Arc<dyn ObjectStore>,
            Arc::clone(&f.scratch.mirror),
            crate::fetch::FetchConfig::default(),
        );
        let config = f.fs.config.clone();
        let restarted = Fs::new(
            Arc::clone(&f.scratch.store) as Arc<dyn ObjectStore>,
            fetcher,
            config,
            f._rt.handle().clone(),
        );
        assert_eq!(readdir(&restarted, ROOT_INO).unwrap().len(), 5);
        // Its own look-ahead finds the saved listings of the subdirectories too.
        std::thread::sleep(Duration::from_millis(200));
        assert!(restarted.listings.fresh("a/").is_some());
        assert_eq!(
            f.scratch.store.lists.load(Ordering::Relaxed),
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
        let entries = listing::from_mirror(&f.scratch.mirror, "a/").unwrap();
        let names: Vec<_> = entries.iter().map(|e| &*e.name).collect();
        assert!(names.contains(&"1.jpg"));
        assert!(
            listing::from_mirror(&f.scratch.mirror, "")
                .unwrap()
                .iter()
                .all(|e| &*e.name != crate::layout::STATE_DIR)
        );
    }
}
