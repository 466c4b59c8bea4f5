//! The thin FUSE adapter: the one home of fuser. Each callback calls the
//! filesystem in `fs` and turns its `Result` into a reply; files the mirror holds
//! are handed to the kernel for passthrough reads where the kernel allows it.
//! What can be answered from here (the mirror, cached listings) is answered on
//! the FUSE thread; what waits on S3 takes its reply to the runtime's blocking
//! pool, so a slow S3 never holds the few FUSE threads.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use fuser::{
    BackingId, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, MountOption, Notifier, OpenAccMode, OpenFlags,
    ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyXattr, Request, Session, SessionACL,
};
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tracing::Level;

use crate::fs::{Attr, Bytes, Dir, Excess, FileKind, Fs, FsError, LetGoHook};
use crate::store::raw_bytes;

/// Requests waiting on S3 that hold a thread of the runtime's blocking pool at
/// once; more wait for a turn as tasks, holding no thread at all.
pub const S3_WAITS_AT_ONCE: usize = 64;
/// Background requests (readahead of streamed files) the kernel may send before it
/// queues more: higher than fuser's 16, so that readers waiting on S3 do not fill
/// the kernel's queue ahead of reads the mirror can answer at once.
pub const MAX_BACKGROUND: u16 = 256;

/// How to mount.
#[derive(Clone, Debug)]
pub struct MountConfig {
    pub fs_name: String,
    pub allow_other: bool,
    pub threads: usize,
    /// Give each thread its own /dev/fuse descriptor. Cloning opens /dev/fuse
    /// when serving starts, which a daemon that gave up root may not do: then the
    /// threads share the mount's descriptor.
    pub clone_fd: bool,
}

/// The one way a failure reaches the kernel: logged, with its whole chain of
/// causes, at the error's own level, and answered with its errno.
fn failed(op: &'static str, err: &FsError) -> Errno {
    let chain = err.chain();
    match err.level() {
        Level::ERROR => tracing::error!(op, "{chain}"),
        Level::WARN => tracing::warn!(op, "{chain}"),
        Level::INFO => tracing::info!(op, "{chain}"),
        Level::DEBUG => tracing::debug!(op, "{chain}"),
        Level::TRACE => tracing::trace!(op, "{chain}"),
    }
    Errno::from_i32(err.errno())
}

fn file_attr(attr: &Attr) -> FileAttr {
    let kind = match attr.kind {
        FileKind::Directory => FileType::Directory,
        FileKind::File => FileType::RegularFile,
    };
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: attr.mtime,
        mtime: attr.mtime,
        ctime: attr.mtime,
        crtime: attr.mtime,
        kind,
        perm: attr.perm,
        nlink: if kind == FileType::Directory { 2 } else { 1 },
        uid: attr.uid,
        gid: attr.gid,
        rdev: 0,
        blksize: 128 * 1024,
        flags: 0,
    }
}

/// Backing files registered for passthrough: one per inode, kept while handles use
/// it. The kernel refuses passthrough on an inode that also has handles served
/// through the daemon, so those are counted and passthrough waits for them to close.
#[derive(Default)]
struct Backing {
    by_handle: HashMap<u64, Arc<BackingId>>,
    by_inode: HashMap<u64, Weak<BackingId>>,
    served: HashMap<u64, usize>,
}

impl Backing {
    fn served_open(&mut self, ino: u64) {
        *self.served.entry(ino).or_default() += 1;
    }

    fn release(&mut self, ino: u64, fh: u64) {
        if self.by_handle.remove(&fh).is_some() {
            // The id is closed with its last handle; its entry goes with it.
            if self
                .by_inode
                .get(&ino)
                .is_some_and(|id| id.strong_count() == 0)
            {
                self.by_inode.remove(&ino);
            }
        } else if let Some(count) = self.served.get_mut(&ino) {
            *count -= 1;
            if *count == 0 {
                self.served.remove(&ino);
            }
        }
    }
}

/// One snapshot per open directory: the kernel reads a large directory in many
/// calls, and each must not rebuild the whole listing.
#[derive(Default)]
struct OpenDirs {
    open: Mutex<HashMap<u64, Arc<Dir>>>,
    next: AtomicU64,
}

impl OpenDirs {
    fn insert(&self, dir: Dir) -> FileHandle {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.open.lock().insert(fh, Arc::new(dir));
        FileHandle(fh)
    }
}

struct FuseFs {
    fs: Arc<Fs>,
    passthrough: AtomicBool,
    backing: Mutex<Backing>,
    dirs: Arc<OpenDirs>,
    rt: Handle,
    /// Places on the blocking pool for requests that wait on S3.
    waits: Arc<Semaphore>,
    behind: Arc<Behind>,
}

impl FuseFs {
    /// Runs `work`, which waits on S3 and then replies, on the runtime's blocking
    /// pool (`S3_WAITS_AT_ONCE` at a time), and returns at once. Should the work be
    /// dropped unrun (the runtime shutting down), its reply answers EIO.
    fn later(&self, work: impl FnOnce() + Send + 'static) {
        let waits = Arc::clone(&self.waits);
        self.rt.spawn(async move {
            let Ok(_turn) = waits.acquire_owned().await else {
                return;
            };
            let _ = tokio::task::spawn_blocking(work).await;
        });
    }

    /// Answers a readdir or readdirplus of `fh` with `fill`: from the handle's
    /// snapshot, else from a listing of `ino` (on the blocking pool if S3 is needed).
    fn with_dir<R: Send + 'static>(
        &self,
        op: &'static str,
        ino: INodeNo,
        fh: FileHandle,
        reply: R,
        fill: fn(&Fs, &Dir, R),
        fail: fn(R, Errno),
    ) {
        let snapshot = self.dirs.open.lock().get(&fh.0).cloned();
        let dir = match snapshot {
            Some(dir) => Ok(Some(dir)),
            None => self.fs.opendir_now(ino.0).map(|d| d.map(Arc::new)),
        };
        match dir {
            Ok(Some(dir)) => fill(&self.fs, &dir, reply),
            Err(e) => fail(reply, failed(op, &e)),
            Ok(None) => {
                let fs = Arc::clone(&self.fs);
                self.later(move || match fs.opendir(ino.0) {
                    Ok(dir) => fill(&fs, &dir, reply),
                    Err(e) => fail(reply, failed(op, &e)),
                });
            }
        }
    }
}

fn answer_entry(fs: &Fs, reply: ReplyEntry, found: Result<Attr, FsError>) {
    match found {
        Ok(attr) => reply.entry(&fs.ttl(), &file_attr(&attr), Generation(0)),
        Err(e) => reply.error(failed("lookup", &e)),
    }
}

fn answer_data(reply: ReplyData, read: Result<Bytes, FsError>) {
    match read {
        Ok(bytes) => reply.data(&bytes),
        Err(e) => reply.error(failed("read", &e)),
    }
}

fn answer_opendir(dirs: &OpenDirs, reply: ReplyOpen, opened: Result<Dir, FsError>) {
    match opened {
        Ok(dir) => reply.opened(dirs.insert(dir), FopenFlags::empty()),
        Err(e) => reply.error(failed("opendir", &e)),
    }
}

/// Entries of `dir` from `offset` on, as a plain readdir gives them.
fn fill_dir(fs: &Fs, dir: &Dir, (offset, mut reply): (u64, ReplyDirectory)) {
    for i in offset as usize..dir.len() {
        let Some((attr, name)) = fs.dir_entry(dir, i, false) else {
            break;
        };
        let attr = file_attr(&attr);
        if reply.add(attr.ino, i as u64 + 1, attr.kind, os_name(name)) {
            break;
        }
    }
    reply.ok()
}

/// Entries of `dir` from `offset` on, with their attributes (readdirplus).
fn fill_dir_plus(fs: &Fs, dir: &Dir, (offset, mut reply): (u64, ReplyDirectoryPlus)) {
    let ttl = fs.ttl();
    for i in offset as usize..dir.len() {
        // The kernel counts a lookup of every entry it gets, but `.` and `..`.
        let counted = i >= 2;
        let Some((attr, name)) = fs.dir_entry(dir, i, counted) else {
            break;
        };
        let full = reply.add(
            INodeNo(attr.ino),
            i as u64 + 1,
            os_name(name),
            &ttl,
            &file_attr(&attr),
            Generation(0),
        );
        if full {
            // Not sent: the kernel holds no lookup of it.
            if counted {
                fs.forget(attr.ino, 1);
            }
            break;
        }
    }
    reply.ok()
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_background(MAX_BACKGROUND);
        let _ = config.set_congestion_threshold(MAX_BACKGROUND / 4 * 3);
        // The kernel picks readdirplus where lookups would follow (ls -l, find).
        let _ = config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        if config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok()
        {
            self.passthrough.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = key_name(name);
        match self.fs.lookup_now(parent.0, &name) {
            Ok(Some(attr)) => answer_entry(&self.fs, reply, Ok(attr)),
            Err(e) => answer_entry(&self.fs, reply, Err(e)),
            Ok(None) => {
                let (fs, name) = (Arc::clone(&self.fs), name.into_owned());
                self.later(move || answer_entry(&fs, reply, fs.lookup(parent.0, &name)));
            }
        }
    }

    /// fuser's `batch_forget` calls this once per inode (its `ForgetOne` is not
    /// public, so it cannot be overridden).
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
        let inodes = self.fs.inodes();
        tracing::trace!(ino = ino.0, inodes, "forgotten");
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(attr) => reply.attr(&self.fs.ttl(), &file_attr(&attr)),
            Err(e) => reply.error(failed("getattr", &e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let opened = if flags.acc_mode() != OpenAccMode::O_RDONLY {
            Err(FsError::read_only())
        } else {
            self.fs.open(ino.0)
        };
        let opened = match opened {
            Ok(opened) => opened,
            Err(e) => return reply.error(failed("open", &e)),
        };
        // The kernel keeps its cached pages only when they hold this version.
        let flags = if opened.keep_cache {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        };
        let mut backing = self.backing.lock();
        let Some(file) = opened.local else {
            backing.served_open(ino.0);
            return reply.opened(FileHandle(opened.fh), flags);
        };
        if self.passthrough.load(Ordering::Relaxed) && !backing.served.contains_key(&ino.0) {
            let existing = backing.by_inode.get(&ino.0).and_then(Weak::upgrade);
            let id = match existing {
                Some(id) => Ok(id),
                None => reply.open_backing(file.as_ref()).map(Arc::new),
            };
            match id {
                Ok(id) => {
                    backing.by_inode.insert(ino.0, Arc::downgrade(&id));
                    backing.by_handle.insert(opened.fh, Arc::clone(&id));
                    // Its reads go to the mirror file: pages cached of it through
                    // the daemon are dropped (no FOPEN_KEEP_CACHE).
                    return reply.opened_passthrough(
                        FileHandle(opened.fh),
                        FopenFlags::empty(),
                        &id,
                    );
                }
                Err(e) => {
                    tracing::info!(
                        "passthrough unavailable ({e}); serving mirror reads through the daemon"
                    );
                    self.passthrough.store(false, Ordering::Relaxed);
                }
            }
        }
        backing.served_open(ino.0);
        reply.opened(FileHandle(opened.fh), flags)
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if self.passthrough.load(Ordering::Relaxed) {
            self.behind.read(ino.0, fh.0, offset + u64::from(size));
        }
        match self.fs.read_now(fh.0, offset, size) {
            Ok(Some(bytes)) => answer_data(reply, Ok(bytes)),
            Err(e) => answer_data(reply, Err(e)),
            Ok(None) => {
                let fs = Arc::clone(&self.fs);
                self.later(move || answer_data(reply, fs.read(fh.0, offset, size)));
            }
        }
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.backing.lock().release(ino.0, fh.0);
        self.behind.release(fh.0);
        self.fs.release(fh.0);
        reply.ok();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is ever written, so there is nothing to flush: ENOSYS tells the
        // kernel to stop sending FLUSH on every close (it then reports success),
        // which saves a round trip through the daemon per file read.
        reply.error(Errno::ENOSYS);
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::NO_XATTR);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: ReplyXattr) {
        if size == 0 {
            reply.size(0)
        } else {
            reply.data(&[])
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir_now(ino.0) {
            Ok(Some(dir)) => answer_opendir(&self.dirs, reply, Ok(dir)),
            Err(e) => answer_opendir(&self.dirs, reply, Err(e)),
            Ok(None) => {
                let (fs, dirs) = (Arc::clone(&self.fs), Arc::clone(&self.dirs));
                self.later(move || answer_opendir(&dirs, reply, fs.opendir(ino.0)));
            }
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs.open.lock().remove(&fh.0);
        reply.ok();
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let fail = |(_, reply): (u64, ReplyDirectory), errno| reply.error(errno);
        self.with_dir("readdir", ino, fh, (offset, reply), fill_dir, fail);
    }

    /// Entries with their attributes, so `ls -l` and `find` need no lookup per name.
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        let fail = |(_, reply): (u64, ReplyDirectoryPlus), errno| reply.error(errno);
        self.with_dir("readdirplus", ino, fh, (offset, reply), fill_dir_plus, fail);
    }
}

/// Pages the kernel caches of a file read through the daemon, dropped once the
/// reader is well past them. While passthrough serves opens of mirrored files,
/// those pages are of no use after the read (later opens read the mirror file),
/// and the kernel drops what is left of them at the next such open, inside the
/// reader's `open` (~0.1 ms per MiB: 25 ms for 256 MiB opened again). Dropped
/// behind the reader, little is left by then, and the system keeps one copy of
/// a large file read cold, not two. Drops run on a thread of their own: the
/// kernel does the work in the thread that asks.
struct Behind {
    /// Each daemon-served handle that read: its inode, and where the pages
    /// dropped behind it end.
    handles: Mutex<HashMap<u64, (u64, u64)>>,
    drops: std::sync::OnceLock<std::sync::mpsc::Sender<Pages>>,
}

/// Pages of `ino` to drop: `len` bytes from `offset`, all of them if `len` is 0.
type Pages = (u64, u64, u64);

impl Behind {
    /// How far behind the furthest byte asked for pages are dropped: past the
    /// kernel's readahead, and the reads still being answered out of order.
    const LAG: u64 = 8 << 20;
    /// Dropped in steps this large, so that a read costs no notification.
    const STEP: u64 = 8 << 20;

    fn new() -> Behind {
        Behind {
            handles: Mutex::default(),
            drops: std::sync::OnceLock::new(),
        }
    }

    /// Starts the thread that drops pages.
    fn start(&self, notifier: Notifier) -> io::Result<()> {
        let (send, receive) = std::sync::mpsc::channel::<Pages>();
        std::thread::Builder::new()
            .name("drop-pages".into())
            .spawn(move || {
                for (ino, offset, len) in receive {
                    let (offset, len) = (offset as i64, len as i64);
                    // Forgotten meanwhile (pages and all) is fine.
                    if let Err(e) = notifier.inval_inode(INodeNo(ino), offset, len) {
                        tracing::debug!(ino, "cannot drop cached pages: {e}");
                    }
                }
            })?;
        let _ = self.drops.set(send);
        Ok(())
    }

    fn drop_pages(&self, ino: u64, offset: u64, len: u64) {
        if let Some(drops) = self.drops.get() {
            let _ = drops.send((ino, offset, len));
        }
    }

    /// Handle `fh` of `ino`, served by the daemon, was asked for bytes up to `end`.
    fn read(&self, ino: u64, fh: u64, end: u64) {
        let mut handles = self.handles.lock();
        let (_, dropped) = handles.entry(fh).or_insert((ino, 0));
        let upto = end.saturating_sub(Self::LAG);
        if upto >= *dropped + Self::STEP {
            let from = std::mem::replace(dropped, upto);
            drop(handles);
            self.drop_pages(ino, from, upto - from);
        }
    }

    fn release(&self, fh: u64) {
        self.handles.lock().remove(&fh);
    }
}

/// A mounted filesystem, serving until unmounted.
pub struct Mounted {
    session: Session<FuseFs>,
}

impl Mounted {
    /// Mounts `fs` read-only at `mountpoint`; returns once the kernel has answered.
    pub fn mount(fs: Arc<Fs>, mountpoint: &Path, options: &MountConfig) -> io::Result<Mounted> {
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::RO,
            MountOption::FSName(options.fs_name.clone()),
            MountOption::Subtype("s3mirrorfs".into()),
            MountOption::NoDev,
            MountOption::NoSuid,
            MountOption::DefaultPermissions,
        ];
        config.acl = if options.allow_other {
            SessionACL::All
        } else {
            SessionACL::Owner
        };
        config.n_threads = Some(options.threads.max(1));
        config.clone_fd = options.clone_fd && options.threads > 1;
        let shared = Arc::clone(&fs);
        let behind = Arc::new(Behind::new());
        let fuse = FuseFs {
            rt: fs.runtime().clone(),
            fs,
            passthrough: AtomicBool::new(false),
            backing: Mutex::new(Backing::default()),
            dirs: Arc::default(),
            waits: Arc::new(Semaphore::new(S3_WAITS_AT_ONCE)),
            behind: Arc::clone(&behind),
        };
        let session = Session::new(fuse, mountpoint, &config)?;
        behind.start(session.notifier())?;
        // Pages the kernel cached while a file streamed through the daemon are dead
        // weight once it is in the mirror and nobody reads it (later opens read the
        // mirror file, by passthrough): drop what is left of them now rather than
        // at the next open.
        shared.on_commit(Box::new(move |ino| behind.drop_pages(ino, 0, 0)));
        shared.on_let_go(let_go(session.notifier())?);
        Ok(Mounted { session })
    }

    /// Serves requests until the filesystem is unmounted.
    pub fn run(self) -> io::Result<()> {
        self.session.run()
    }
}

/// Tells the kernel to drop names, on a thread of its own: the kernel takes the
/// directory's lock for it, which a readdirplus of that directory being
/// answered right now holds.
fn let_go(notifier: Notifier) -> io::Result<LetGoHook> {
    let (send, receive) = std::sync::mpsc::channel::<Vec<Excess>>();
    std::thread::Builder::new()
        .name("let-go".into())
        .spawn(move || {
            for names in receive {
                for (parent, name) in names {
                    // Not there any more (forgotten meanwhile) is fine.
                    if let Err(e) = notifier.inval_entry(INodeNo(parent), &os_name(&name)) {
                        tracing::trace!(parent, "cannot drop a name: {e}");
                    }
                }
            }
        })?;
    Ok(Box::new(move |names| {
        let _ = send.send(names);
    }))
}

/// The text form of a name the kernel asks for: a name that is not UTF-8 (or
/// holds a character that stands for a byte) can only be that of such a key
/// (`store::raw_bytes`).
fn key_name(name: &OsStr) -> Cow<'_, str> {
    match name.to_str() {
        Some(name) if !raw_bytes::has_raw_bytes(name) => Cow::Borrowed(name),
        _ => Cow::Owned(raw_bytes::text_from_bytes(name.as_bytes().to_vec())),
    }
}

/// The name the kernel shows for an entry: a key that is not UTF-8 gets its own bytes back.
fn os_name(name: &str) -> Cow<'_, OsStr> {
    match raw_bytes::bytes_of(name) {
        Cow::Borrowed(bytes) => Cow::Borrowed(OsStr::from_bytes(bytes)),
        Cow::Owned(bytes) => Cow::Owned(OsString::from_vec(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_answered_with_its_own_errno() {
        let cases = [
            (FsError::not_found(), Errno::ENOENT),
            (FsError::not_a_directory(), Errno::ENOTDIR),
            (FsError::read_only(), Errno::EROFS),
            (FsError::io("x", io::Error::other("y")), Errno::EIO),
        ];
        for (err, errno) in cases {
            assert_eq!(failed("test", &err), errno, "{err}");
        }
    }

    #[test]
    fn passthrough_waits_for_handles_served_by_the_daemon() {
        let mut backing = Backing::default();
        backing.served_open(7);
        backing.served_open(7);
        backing.release(7, 1);
        assert!(backing.served.contains_key(&7), "one handle still open");
        backing.release(7, 2);
        assert!(!backing.served.contains_key(&7));
    }

    #[test]
    fn pages_are_dropped_in_steps_well_behind_each_reader() {
        let behind = Behind::new();
        let (send, dropped) = std::sync::mpsc::channel();
        behind.drops.set(send).unwrap();
        let (lag, step) = (Behind::LAG, Behind::STEP);
        // Reads up to a step past the lag drop nothing yet.
        behind.read(7, 1, 1 << 20);
        behind.read(7, 1, lag + step - 1);
        assert!(dropped.try_recv().is_err());
        behind.read(7, 1, lag + step);
        assert_eq!(dropped.try_recv(), Ok((7, 0, step)));
        // Another handle of the same file keeps its own place.
        behind.read(7, 2, lag + step + 1);
        assert_eq!(dropped.try_recv(), Ok((7, 0, step + 1)));
        // A read behind what was dropped, or less than a step on, drops nothing.
        behind.read(7, 1, 4 << 20);
        behind.read(7, 1, lag + 2 * step - 1);
        assert!(dropped.try_recv().is_err());
        behind.read(7, 1, lag + 5 * step);
        assert_eq!(dropped.try_recv(), Ok((7, step, 4 * step)));
        // A released handle starts over, should its number come again.
        behind.release(1);
        behind.read(7, 1, lag + step);
        assert_eq!(dropped.try_recv(), Ok((7, 0, step)));
    }
}
