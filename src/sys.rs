//! Thin, safe wrappers over the few Linux calls std lacks: open-file-description
//! range locks, writeback hints, fork and signals for the daemon, unmounting,
//! errno tests, and the process's user; `beneath` resolves paths inside the
//! mirror without following symlinks. The one home of libc.

pub mod beneath;

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in name"))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Tunes the allocator for a long-running daemon: at most `arenas` arenas
/// (glibc gives busy threads arenas of their own, up to 8 a core, and memory
/// freed into one is never reused by a thread of another), and blocks of
/// `mmap_from` bytes or more mapped on their own, so they go back to the system
/// as soon as they are freed and a zeroed one is not cleared page by page out
/// of a heap (glibc would raise that bound as big blocks are freed). A no-op
/// where the C library is not glibc.
pub fn tune_allocator(arenas: u32, mmap_from: usize) {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets tunables of the allocator.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas as libc::c_int);
        let from = libc::c_int::try_from(mmap_from).unwrap_or(libc::c_int::MAX);
        libc::mallopt(libc::M_MMAP_THRESHOLD, from);
    }
    #[cfg(not(target_env = "gnu"))]
    let _ = (arenas, mmap_from);
}

/// Hands the allocator's free memory back to the system (glibc keeps what was
/// freed, even whole pages inside its heaps, for later allocations). A no-op
/// where the C library is not glibc.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns unused pages of the allocator's heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Gives `file` its blocks for `len` bytes at once, in order, and that length:
/// parts written later in any order then fill one run of the disk, which reads
/// back as fast as a file written from start to end, and a disk too full for
/// the file says so before anything is written. Where the filesystem cannot
/// allocate ahead, only the length is set (a sparse file).
pub fn preallocate(file: &File, len: u64) -> io::Result<()> {
    let Ok(length) = libc::off_t::try_from(len) else {
        return Err(io::Error::from_raw_os_error(libc::EFBIG));
    };
    // SAFETY: fallocate only reads the descriptor and the two numbers.
    let done = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, length) };
    if done == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL) => file.set_len(len),
        _ => Err(err),
    }
}

/// Whether an error means the filesystem has no user extended attributes.
pub fn is_xattr_unsupported(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::ENOTSUP)
}

/// Whether an error means the disk or quota is full.
pub fn is_no_space(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Whether an error is a dead FUSE mount's "Transport endpoint is not connected".
pub fn is_not_connected(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::ENOTCONN)
}

/// Takes a write lock on one byte of `file` at `offset`, owned by this open file
/// description and released when it is closed or its process dies.
/// With `wait == false` returns `Ok(false)` if someone else holds it.
pub fn ofd_lock_byte(file: &File, offset: u64, wait: bool) -> io::Result<bool> {
    // SAFETY: zeroed flock is a valid value; fields are set below.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as _;
    lock.l_whence = libc::SEEK_SET as _;
    lock.l_start = (offset & (i64::MAX as u64 >> 1)) as libc::off_t;
    lock.l_len = 1;
    let cmd = if wait {
        libc::F_OFD_SETLKW
    } else {
        libc::F_OFD_SETLK
    };
    loop {
        // SAFETY: fcntl with a valid fd and a pointer to an initialized flock.
        match check(unsafe { libc::fcntl(file.as_raw_fd(), cmd, &lock) }) {
            Ok(()) => return Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) && !wait =>
            {
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Starts writing a range of a file back to disk without waiting for it, so the
/// fsync that makes the whole file durable later has less left to do.
pub fn start_writeback(file: &File, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: plain syscall on an open fd; offsets are checked by the kernel.
    let rc = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Room on a filesystem, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    /// Free to an unprivileged writer.
    pub available: u64,
    pub total: u64,
}

/// The room on the filesystem that holds `path`.
pub fn space(path: &Path) -> io::Result<Space> {
    let path = cstring(path.as_os_str().as_bytes())?;
    // SAFETY: zeroed statvfs is a valid value for the kernel to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a pointer to a statvfs.
    check(unsafe { libc::statvfs(path.as_ptr(), &mut st) })?;
    let block = st.f_frsize as u64;
    Ok(Space {
        available: (st.f_bavail as u64).saturating_mul(block),
        total: (st.f_blocks as u64).saturating_mul(block),
    })
}

/// Forks. `Ok(None)` in the child, `Ok(Some(pid))` in the parent. Call it before
/// any thread is started.
pub fn fork() -> io::Result<Option<u32>> {
    // SAFETY: called while the process is single-threaded (before the runtime starts).
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(pid as u32)),
    }
}

/// Starts a new session, detaching from the controlling terminal.
pub fn setsid() -> io::Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::setsid() })
}

/// A pipe, both ends close-on-exec: (read end, write end).
pub fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds has room for two descriptors.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both descriptors were just created and are owned by nobody else.
    unsafe {
        use std::os::fd::FromRawFd;
        Ok((File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])))
    }
}

/// Points stdin and stdout at /dev/null and stderr at `log` (or /dev/null).
pub fn redirect_stdio(log: Option<&File>) -> io::Result<()> {
    let null = File::options().read(true).write(true).open("/dev/null")?;
    let err_fd = log.map_or(null.as_raw_fd(), |f| f.as_raw_fd());
    for (from, to) in [(null.as_raw_fd(), 0), (null.as_raw_fd(), 1), (err_fd, 2)] {
        // SAFETY: dup2 on open descriptors.
        check(unsafe { libc::dup2(from, to) })?;
    }
    Ok(())
}

fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset initializes the set before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &signal in signals {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

/// The signals that ask a daemon to stop.
pub const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// Blocks `signals` in this thread and in every thread it starts afterwards, so
/// one thread can take them with `wait_signal`.
pub fn block_signals(signals: &[libc::c_int]) {
    let set = sigset(signals);
    // SAFETY: set is initialized; the old mask is not needed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Waits for one of `signals` (blocked beforehand) and returns it.
pub fn wait_signal(signals: &[libc::c_int]) -> libc::c_int {
    let set = sigset(signals);
    let mut signal: libc::c_int = 0;
    // SAFETY: set is initialized and signal is a valid out pointer.
    unsafe { libc::sigwait(&set, &mut signal) };
    signal
}

/// Detaches the filesystem mounted at `path` (lazy unmount); as non-root, through
/// `fusermount3 -u -z`.
pub fn unmount_lazy(path: &Path) -> io::Result<()> {
    let cpath = cstring(path.as_os_str().as_bytes())?;
    // SAFETY: cpath is NUL-terminated.
    match check(unsafe { libc::umount2(cpath.as_ptr(), libc::MNT_DETACH) }) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            let status = std::process::Command::new("fusermount3")
                .args(["-u", "-z", "--"])
                .arg(path)
                .status()?;
            if status.success() {
                Ok(())
            } else {
                Err(io::Error::other(format!("fusermount3 -u failed: {status}")))
            }
        }
        other => other,
    }
}

/// Starts a watchdog process that unmounts `path` when this process dies, however
/// it dies, once it has been told the mount is up (`arm`). Call it while the
/// process is single-threaded. The returned pipe end is the daemon's lifeline.
pub fn unmount_watchdog(path: &Path) -> io::Result<Lifeline> {
    let cpath = cstring(path.as_os_str().as_bytes())?;
    let fusermount = c"fusermount3";
    let args = [
        c"fusermount3".as_ptr(),
        c"-u".as_ptr(),
        c"-z".as_ptr(),
        c"--".as_ptr(),
        cpath.as_ptr(),
        std::ptr::null(),
    ];
    let (read_end, write_end) = pipe()?;
    match fork()? {
        Some(_) => {
            drop(read_end);
            Ok(Lifeline(write_end))
        }
        None => {
            // Only async-signal-safe calls from here on.
            let keep = read_end.as_raw_fd();
            // SAFETY: plain syscalls on integers and buffers owned by this frame.
            unsafe {
                for signal in STOP_SIGNALS {
                    libc::signal(signal, libc::SIG_IGN);
                }
                close_all_but(keep);
                let mut armed = false;
                let mut byte = 0u8;
                loop {
                    let n = libc::read(keep, (&mut byte as *mut u8).cast(), 1);
                    if n == 1 {
                        armed = true;
                    } else if n == 0 || *libc::__errno_location() != libc::EINTR {
                        break;
                    }
                }
                if armed
                    && libc::umount2(cpath.as_ptr(), libc::MNT_DETACH) != 0
                    && *libc::__errno_location() == libc::EPERM
                {
                    libc::execvp(fusermount.as_ptr(), args.as_ptr());
                }
                libc::_exit(0);
            }
        }
    }
}

/// Closes every file descriptor except `keep` (async-signal-safe: for a forked
/// child). close_range(2) needs Linux 5.9; older kernels get the loop.
unsafe fn close_all_but(keep: libc::c_int) {
    let keep = keep as libc::c_uint;
    // SAFETY: close_range on descriptor numbers only; no memory is touched.
    let closed = unsafe {
        (keep == 0 || libc::syscall(libc::SYS_close_range, 0, keep - 1, 0) == 0)
            && libc::syscall(libc::SYS_close_range, keep + 1, libc::c_uint::MAX, 0) == 0
    };
    if !closed {
        for fd in (0..1024).filter(|fd| *fd != keep) {
            // SAFETY: as above.
            unsafe { libc::close(fd as libc::c_int) };
        }
    }
}

/// The write end of the watchdog's pipe: closing it (by exiting) fires the watchdog.
pub struct Lifeline(File);

impl Lifeline {
    /// Tells the watchdog the mount is up, so it unmounts when this process ends.
    pub fn arm(&mut self) {
        use std::io::Write;
        let _ = self.0.write_all(b"m");
    }
}

/// Ends the process at once with SIGKILL, as `kill -9` would: no destructor, no
/// flush, no core file.
#[cfg(feature = "test-util")]
pub fn kill_self() -> ! {
    // SAFETY: kill(2) on our own pid; SIGKILL cannot be caught, so it does not return.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    std::process::abort()
}

/// The real user and group of this process.
pub fn uid_gid() -> (u32, u32) {
    // SAFETY: getuid/getgid cannot fail.
    unsafe { (libc::getuid(), libc::getgid()) }
}

/// The effective user of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// A user of the system, as the password database gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: Option<String>,
    pub uid: u32,
    /// The primary group.
    pub gid: u32,
}

/// Looks a user up by name, or by number (a number the database does not know is
/// taken as it is, with a group of the same number).
pub fn lookup_user(spec: &str) -> io::Result<User> {
    if let Ok(uid) = spec.parse::<u32>() {
        return Ok(user_by_uid(uid)?.unwrap_or(User {
            name: None,
            uid,
            gid: uid,
        }));
    }
    let name = cstring(spec.as_bytes())?;
    passwd_entry(|pwd, buf, result| {
        // SAFETY: every pointer is valid for the call; buf's length is passed.
        unsafe { libc::getpwnam_r(name.as_ptr(), pwd, buf.as_mut_ptr(), buf.len(), result) }
    })?
    .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no user {spec:?}")))
}

/// The user with this uid, if the password database has one.
pub fn user_by_uid(uid: u32) -> io::Result<Option<User>> {
    passwd_entry(|pwd, buf, result| {
        // SAFETY: every pointer is valid for the call; buf's length is passed.
        unsafe { libc::getpwuid_r(uid, pwd, buf.as_mut_ptr(), buf.len(), result) }
    })
}

fn passwd_entry(
    get: impl Fn(&mut libc::passwd, &mut [libc::c_char], &mut *mut libc::passwd) -> libc::c_int,
) -> io::Result<Option<User>> {
    let mut buf = vec![0 as libc::c_char; 1024];
    loop {
        // SAFETY: zeroed passwd is valid (integers and null pointers); filled by the call.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        match get(&mut pwd, &mut buf, &mut result) {
            0 if result.is_null() => return Ok(None),
            0 => {
                // SAFETY: on success pw_name points at a NUL-terminated string in buf.
                let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
                return Ok(Some(User {
                    name: Some(name.to_string_lossy().into_owned()),
                    uid: pwd.pw_uid,
                    gid: pwd.pw_gid,
                }));
            }
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return Ok(None),
            errno => return Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

/// The supplementary groups of a named user, its primary group included.
fn groups_of(name: &str, gid: u32) -> io::Result<Vec<libc::gid_t>> {
    let cname = cstring(name.as_bytes())?;
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut count = groups.len() as libc::c_int;
        // SAFETY: groups has room for count entries; count is updated by the call.
        let rc =
            unsafe { libc::getgrouplist(cname.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        if rc >= 0 {
            groups.truncate(count.max(0) as usize);
            return Ok(groups);
        }
        if groups.len() >= 1 << 16 {
            return Err(io::Error::other("too many groups"));
        }
        groups.resize((count.max(0) as usize).max(groups.len() * 2), 0);
    }
}

/// Gives up root for good: the user's supplementary groups (none for a user the
/// password database does not know), its primary group, then its uid as real,
/// effective and saved ids. Checks afterwards that root cannot be regained.
pub fn drop_privileges(user: &User) -> io::Result<()> {
    let groups = match &user.name {
        Some(name) => groups_of(name, user.gid)?,
        None => Vec::new(),
    };
    // glibc applies these to every thread of the process, not just the caller.
    // SAFETY: groups holds groups.len() entries.
    check(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) })?;
    // SAFETY: plain syscalls on integers.
    check(unsafe { libc::setresgid(user.gid, user.gid, user.gid) })?;
    // SAFETY: as above.
    check(unsafe { libc::setresuid(user.uid, user.uid, user.uid) })?;
    if user.uid != 0 {
        // SAFETY: as above; this must fail now.
        let regained = unsafe { libc::setresuid(0, 0, 0) } == 0 || unsafe { libc::setuid(0) } == 0;
        let (ruid, euid) = uid_gid_effective();
        if regained || ruid != user.uid || euid != user.uid {
            return Err(io::Error::other("root could be regained after dropping it"));
        }
    }
    Ok(())
}

/// Acts as `user` for file access (effective uid, gid and groups) while keeping
/// root as the saved uid, so `act_as_root` can take it back: what the process
/// creates or opens meanwhile is checked and owned as that user's.
pub fn act_as(user: &User) -> io::Result<()> {
    let groups = match &user.name {
        Some(name) => groups_of(name, user.gid)?,
        None => Vec::new(),
    };
    // SAFETY: groups holds groups.len() entries.
    check(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) })?;
    // SAFETY: plain syscalls on integers; -1 leaves an id as it is.
    check(unsafe { libc::setresgid(u32::MAX, user.gid, u32::MAX) })?;
    // SAFETY: as above.
    check(unsafe { libc::setresuid(u32::MAX, user.uid, u32::MAX) })
}

/// Takes root back as the effective user after `act_as`.
pub fn act_as_root() -> io::Result<()> {
    // SAFETY: plain syscalls on integers; -1 leaves an id as it is.
    check(unsafe { libc::setresuid(u32::MAX, 0, u32::MAX) })?;
    // SAFETY: as above.
    check(unsafe { libc::setresgid(u32::MAX, 0, u32::MAX) })
}

/// The real, effective, saved and filesystem uids and gids, as
/// `/proc/self/status` shows them.
pub fn ids() -> ((u32, u32, u32), (u32, u32, u32)) {
    let (mut ruid, mut euid, mut suid) = (0, 0, 0);
    let (mut rgid, mut egid, mut sgid) = (0, 0, 0);
    // SAFETY: out pointers to live integers.
    unsafe {
        libc::getresuid(&mut ruid, &mut euid, &mut suid);
        libc::getresgid(&mut rgid, &mut egid, &mut sgid);
    }
    ((ruid, euid, suid), (rgid, egid, sgid))
}

fn uid_gid_effective() -> (u32, u32) {
    // SAFETY: getuid/geteuid cannot fail.
    unsafe { (libc::getuid(), libc::geteuid()) }
}

/// Sends a state line to systemd when started as a `Type=notify` service.
pub fn notify_systemd(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
    } else {
        socket.send_to(state.as_bytes(), Path::new(&path))
    };
    if let Err(e) = sent {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preallocated_file_has_its_length_and_its_blocks() {
        use std::os::unix::fs::{FileExt, MetadataExt};
        let file = tempfile::tempfile().unwrap();
        preallocate(&file, 3 << 20).unwrap();
        let meta = file.metadata().unwrap();
        assert_eq!(meta.len(), 3 << 20);
        // Blocks are counted in 512-byte units; a sparse file would have none.
        assert!(meta.blocks() * 512 >= 3 << 20, "{} blocks", meta.blocks());
        // Parts land at their offsets, in any order; the rest reads as zeros.
        file.write_all_at(b"tail", (3 << 20) - 4).unwrap();
        file.write_all_at(b"head", 0).unwrap();
        let mut buf = [1u8; 8];
        file.read_exact_at(&mut buf, 1 << 20).unwrap();
        assert_eq!(buf, [0; 8]);
        assert_eq!(file.metadata().unwrap().len(), 3 << 20);
    }

    #[test]
    fn ofd_locks_exclude_other_descriptions_in_the_same_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let a = File::create(&path).unwrap();
        let b = File::options().write(true).open(&path).unwrap();
        assert!(ofd_lock_byte(&a, 7, false).unwrap());
        assert!(!ofd_lock_byte(&b, 7, false).unwrap());
        assert!(ofd_lock_byte(&b, 8, false).unwrap());
        drop(a);
        assert!(ofd_lock_byte(&b, 7, false).unwrap());
    }

    #[test]
    fn the_room_on_a_filesystem_is_known() {
        let dir = tempfile::tempdir().unwrap();
        let room = space(dir.path()).unwrap();
        assert!(room.total > 0 && room.available <= room.total, "{room:?}");
        assert!(space(&dir.path().join("missing")).is_err());
    }
}
