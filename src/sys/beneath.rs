//! Paths resolved beneath a directory without following symlinks: the mirror's
//! files are reached only through a `Dir` opened on its root, so a symlink that
//! its owner plants anywhere in the tree (the root, a subdirectory, the state
//! directory) can never send a write or a read elsewhere. `openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` where the kernel has it (5.6), else
//! one `openat` with `O_NOFOLLOW` per component; the other calls (`mkdirat`,
//! `renameat`, `linkat`, `unlinkat`) act on the last name relative to its
//! parent opened that way, and none of them follows a last-name symlink.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path};
use std::sync::atomic::{AtomicU8, Ordering};

/// A directory opened for resolving paths beneath it.
#[derive(Debug)]
pub struct Dir(File);

/// How a file is opened beneath a `Dir`; every open adds `O_NOFOLLOW` and `O_CLOEXEC`.
#[derive(Clone, Copy, Debug)]
pub struct Open {
    flags: libc::c_int,
    mode: libc::mode_t,
}

impl Open {
    /// Read only.
    pub fn read() -> Open {
        Open {
            flags: libc::O_RDONLY,
            mode: 0,
        }
    }

    /// Read and write an existing file.
    pub fn read_write() -> Open {
        Open {
            flags: libc::O_RDWR,
            mode: 0,
        }
    }

    /// Also create the file (with `mode`, less the umask) when it is missing.
    pub fn create(self, mode: u32) -> Open {
        Open {
            flags: self.flags | libc::O_CREAT,
            mode: mode as libc::mode_t,
        }
    }

    /// Create the file, failing if anything stands at its name.
    pub fn create_new(self, mode: u32) -> Open {
        Open {
            flags: self.flags | libc::O_CREAT | libc::O_EXCL,
            mode: mode as libc::mode_t,
        }
    }

    /// Writes go to the end.
    pub fn append(self) -> Open {
        Open {
            flags: self.flags | libc::O_APPEND,
            ..self
        }
    }

    /// A file without a name in the directory opened (`O_TMPFILE`): it goes
    /// away with its last handle. Needs `read_write`.
    pub fn unnamed(self, mode: u32) -> Open {
        Open {
            flags: self.flags | libc::O_TMPFILE,
            mode: mode as libc::mode_t,
        }
    }

    /// Do not block on a FIFO or a device someone left in the tree.
    pub fn nonblocking(self) -> Open {
        Open {
            flags: self.flags | libc::O_NONBLOCK,
            ..self
        }
    }
}

/// One entry of a directory listing.
#[derive(Clone, Debug)]
pub struct Entry {
    pub name: OsString,
    /// `DT_DIR`, `DT_REG`, `DT_LNK`, ... as the filesystem gave it (`DT_UNKNOWN` when it gives none).
    pub kind: u8,
}

impl Entry {
    /// Whether it is a directory (never true of a symlink to one).
    pub fn is_dir(&self) -> bool {
        self.kind == libc::DT_DIR
    }
}

/// The error for a path that leaves the directory or crosses a symlink.
fn refused(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{}: {why}", path.display()),
    )
}

/// Turns the kernel's answers for a refused resolution into one clear error.
fn explain(path: &Path, err: io::Error) -> io::Error {
    match err.raw_os_error() {
        Some(libc::ELOOP) => refused(
            path,
            "a symlink stands in the path, and paths in the mirror never follow symlinks",
        ),
        Some(libc::EXDEV) => refused(path, "the path leads out of the mirror"),
        _ => err,
    }
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cname(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in name"))
}

/// The components of a relative path, refusing anything that could leave the
/// directory (`..`, an absolute path). `.` components are dropped.
fn components(rel: &Path) -> io::Result<Vec<&OsStr>> {
    let mut out = Vec::new();
    for component in rel.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(refused(rel, "the path leads out of the mirror"));
            }
        }
    }
    Ok(out)
}

const UNKNOWN: u8 = 0;
const HAS_OPENAT2: u8 = 1;
const NO_OPENAT2: u8 = 2;
static OPENAT2: AtomicU8 = AtomicU8::new(UNKNOWN);

/// How a path is resolved: the kernel's `openat2`, or component by component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Openat2,
    Walk,
}

/// Opens `rel` beneath `dirfd`. Returns the raw descriptor, owned by the caller.
fn open_beneath(
    dirfd: RawFd,
    rel: &Path,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<RawFd> {
    let method = match OPENAT2.load(Ordering::Relaxed) {
        NO_OPENAT2 => Method::Walk,
        _ => Method::Openat2,
    };
    match open_with(method, dirfd, rel, flags, mode) {
        Err(e) if method == Method::Openat2 && e.raw_os_error() == Some(libc::ENOSYS) => {
            OPENAT2.store(NO_OPENAT2, Ordering::Relaxed);
            open_with(Method::Walk, dirfd, rel, flags, mode)
        }
        other => {
            if method == Method::Openat2 && other.is_ok() {
                OPENAT2.store(HAS_OPENAT2, Ordering::Relaxed);
            }
            other
        }
    }
}

fn open_with(
    method: Method,
    dirfd: RawFd,
    rel: &Path,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<RawFd> {
    let parts = components(rel)?;
    let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // O_TMPFILE shares a bit with O_DIRECTORY: test it whole.
    let creates = flags & libc::O_CREAT != 0 || flags & libc::O_TMPFILE == libc::O_TMPFILE;
    let mode = if creates { mode } else { 0 };
    match method {
        Method::Openat2 => openat2(dirfd, &parts, flags, mode),
        Method::Walk => walk(dirfd, &parts, flags, mode),
    }
    .map_err(|e| explain(rel, e))
}

fn joined(parts: &[&OsStr]) -> OsString {
    if parts.is_empty() {
        return OsString::from(".");
    }
    let mut bytes = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            bytes.push(b'/');
        }
        bytes.extend_from_slice(part.as_bytes());
    }
    OsString::from_vec(bytes)
}

fn openat2(
    dirfd: RawFd,
    parts: &[&OsStr],
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<RawFd> {
    let path = cname(&joined(parts))?;
    // SAFETY: zeroed open_how is valid (all fields are integers); set below.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.mode = u64::from(mode);
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    for _ in 0..16 {
        // SAFETY: path is NUL-terminated and how lives across the call; the size is its own.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd,
                path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            return Ok(fd as RawFd);
        }
        let err = io::Error::last_os_error();
        // EAGAIN: a concurrent rename raced the resolution; it is safe to retry.
        if !matches!(err.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) {
            return Err(err);
        }
    }
    Err(io::Error::from_raw_os_error(libc::EAGAIN))
}

/// The fallback: each directory opened with `O_NOFOLLOW | O_DIRECTORY` relative
/// to the one before, the last name with the caller's flags and `O_NOFOLLOW`.
fn walk(
    dirfd: RawFd,
    parts: &[&OsStr],
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<RawFd> {
    let Some((last, dirs)) = parts.split_last() else {
        let dot = c".";
        // SAFETY: a NUL-terminated literal.
        return check(unsafe {
            libc::openat(dirfd, dot.as_ptr(), flags, libc::c_uint::from(mode))
        });
    };
    let mut current: Option<File> = None;
    for dir in dirs {
        let name = cname(dir)?;
        let at = current.as_ref().map_or(dirfd, |f| f.as_raw_fd());
        // SAFETY: name is NUL-terminated; at is an open descriptor.
        let fd = check(unsafe {
            libc::openat(
                at,
                name.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        })
        .map_err(|e| symlink_as_eloop(at, &name, e))?;
        // SAFETY: fd was just opened and is owned by nobody else.
        current = Some(unsafe { File::from_raw_fd(fd) });
    }
    let name = cname(last)?;
    let at = current.as_ref().map_or(dirfd, |f| f.as_raw_fd());
    // SAFETY: as above.
    check(unsafe { libc::openat(at, name.as_ptr(), flags, libc::c_uint::from(mode)) })
        .map_err(|e| symlink_as_eloop(at, &name, e))
}

/// `O_DIRECTORY | O_NOFOLLOW` on a symlink fails with ENOTDIR, as on a file: say
/// ELOOP when a symlink is what stands there.
fn symlink_as_eloop(at: RawFd, name: &CString, err: io::Error) -> io::Error {
    if err.raw_os_error() != Some(libc::ENOTDIR) {
        return err;
    }
    // SAFETY: zeroed stat is valid; filled by the call.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: name is NUL-terminated; st is a valid out pointer.
    let rc = unsafe { libc::fstatat(at, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if rc == 0 && st.st_mode & libc::S_IFMT == libc::S_IFLNK {
        io::Error::from_raw_os_error(libc::ELOOP)
    } else {
        err
    }
}

impl Dir {
    /// Opens `path` as the directory everything else is resolved beneath. Its last
    /// component must not be a symlink (`O_NOFOLLOW | O_DIRECTORY`); the parents
    /// are resolved as usual (they belong to whoever made the path, not to the
    /// mirror's owner).
    pub fn open_root(path: &Path) -> io::Result<Dir> {
        let cpath = cname(path.as_os_str())?;
        // SAFETY: cpath is NUL-terminated.
        let fd = check(unsafe {
            libc::open(
                cpath.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        })
        .map_err(|e| symlink_as_eloop(libc::AT_FDCWD, &cpath, e))
        .map_err(|e| match e.raw_os_error() {
            // O_NOFOLLOW on a symlink gives ELOOP; O_DIRECTORY on one may give ENOTDIR.
            Some(libc::ELOOP) => refused(
                path,
                "is a symlink; the mirror directory must be a real directory",
            ),
            _ => e,
        })?;
        // SAFETY: fd was just opened and is owned by nobody else.
        Ok(Dir(unsafe { File::from_raw_fd(fd) }))
    }

    /// The directory's own metadata (owner, mode).
    pub fn metadata(&self) -> io::Result<fs::Metadata> {
        self.0.metadata()
    }

    /// The uid that owns the directory.
    pub fn owner(&self) -> io::Result<u32> {
        Ok(self.metadata()?.uid())
    }

    /// The directory as an open file (for fsync and extended attributes).
    pub fn as_file(&self) -> &File {
        &self.0
    }

    /// Another handle on the same directory.
    pub fn try_clone(&self) -> io::Result<Dir> {
        Ok(Dir(self.0.try_clone()?))
    }

    /// Opens the directory at `rel` (`""` is this one).
    pub fn open_dir(&self, rel: &Path) -> io::Result<Dir> {
        let fd = open_beneath(
            self.0.as_raw_fd(),
            rel,
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )?;
        // SAFETY: fd was just opened and is owned by nobody else.
        Ok(Dir(unsafe { File::from_raw_fd(fd) }))
    }

    /// Opens the file at `rel` as `how` says.
    pub fn open(&self, rel: &Path, how: Open) -> io::Result<File> {
        let fd = open_beneath(self.0.as_raw_fd(), rel, how.flags, how.mode)?;
        // SAFETY: fd was just opened and is owned by nobody else.
        Ok(unsafe { File::from_raw_fd(fd) })
    }

    /// Opens `rel` for reading: a file or a directory, never through a symlink,
    /// never blocking on a FIFO.
    pub fn open_read(&self, rel: &Path) -> io::Result<File> {
        let file = self.open(rel, Open::read().nonblocking())?;
        // Reads of regular files ignore O_NONBLOCK, but clear it all the same.
        // SAFETY: fcntl on an open descriptor.
        unsafe {
            let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
            if flags >= 0 {
                libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
            }
        }
        Ok(file)
    }

    /// Reads the whole file at `rel`.
    pub fn read(&self, rel: &Path) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let mut bytes = Vec::new();
        self.open_read(rel)?.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// What stands at `rel`, not following a symlink there (as `lstat`).
    pub fn symlink_metadata(&self, rel: &Path) -> io::Result<fs::Metadata> {
        // O_PATH | O_NOFOLLOW opens a last-name symlink itself, so its metadata is the link's.
        let fd = open_beneath(self.0.as_raw_fd(), rel, libc::O_PATH, 0)?;
        // SAFETY: fd was just opened and is owned by nobody else.
        unsafe { File::from_raw_fd(fd) }.metadata()
    }

    /// Runs `op` on the parent of `rel`, opened beneath this directory, and the last name.
    fn at_parent<T>(
        &self,
        rel: &Path,
        op: impl FnOnce(RawFd, &CString) -> io::Result<T>,
    ) -> io::Result<T> {
        let parts = components(rel)?;
        let Some((last, dirs)) = parts.split_last() else {
            return Err(refused(rel, "names no entry"));
        };
        let name = cname(last)?;
        if dirs.is_empty() {
            return op(self.0.as_raw_fd(), &name).map_err(|e| explain(rel, e));
        }
        let parent = self.open_dir(&dirs.iter().collect::<std::path::PathBuf>())?;
        op(parent.0.as_raw_fd(), &name).map_err(|e| explain(rel, e))
    }

    /// Makes the directory `rel` with exactly `mode` (its parent must exist).
    pub fn create_dir(&self, rel: &Path, mode: u32) -> io::Result<()> {
        self.at_parent(rel, |fd, name| {
            // SAFETY: name is NUL-terminated; fd is an open directory.
            check(unsafe { libc::mkdirat(fd, name.as_ptr(), mode as libc::mode_t) }).map(drop)
        })?;
        // The umask may have taken bits: set the mode on what was made, not
        // through its name again.
        self.open_dir(rel)?
            .0
            .set_permissions(fs::Permissions::from_mode(mode))
    }

    /// Renames `from` to `to`, both beneath this directory (a symlink at either
    /// name is renamed or replaced, never followed).
    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.at_parent(from, |from_fd, from_name| {
            self.at_parent(to, |to_fd, to_name| {
                // SAFETY: names are NUL-terminated; fds are open directories.
                check(unsafe {
                    libc::renameat(from_fd, from_name.as_ptr(), to_fd, to_name.as_ptr())
                })
                .map(drop)
            })
        })
    }

    /// Makes `to` a new hard link of the file at `from` (a symlink there is linked
    /// itself, never followed).
    pub fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.at_parent(from, |from_fd, from_name| {
            self.at_parent(to, |to_fd, to_name| {
                // SAFETY: names are NUL-terminated; fds are open directories; no
                // AT_SYMLINK_FOLLOW.
                check(unsafe {
                    libc::linkat(from_fd, from_name.as_ptr(), to_fd, to_name.as_ptr(), 0)
                })
                .map(drop)
            })
        })
    }

    /// Removes the file (or symlink) at `rel`.
    pub fn remove_file(&self, rel: &Path) -> io::Result<()> {
        self.at_parent(rel, |fd, name| {
            // SAFETY: name is NUL-terminated; fd is an open directory.
            check(unsafe { libc::unlinkat(fd, name.as_ptr(), 0) }).map(drop)
        })
    }

    /// Removes the empty directory at `rel`.
    pub fn remove_dir(&self, rel: &Path) -> io::Result<()> {
        self.at_parent(rel, |fd, name| {
            // SAFETY: name is NUL-terminated; fd is an open directory.
            check(unsafe { libc::unlinkat(fd, name.as_ptr(), libc::AT_REMOVEDIR) }).map(drop)
        })
    }

    /// The entries of the directory at `rel`, without `.` and `..`.
    pub fn read_dir(&self, rel: &Path) -> io::Result<Vec<Entry>> {
        self.open_dir(rel)?.entries()
    }

    /// The entries of this directory, without `.` and `..`.
    pub fn entries(&self) -> io::Result<Vec<Entry>> {
        // fdopendir takes the descriptor over, so give it its own.
        // SAFETY: dup of an open descriptor.
        let fd = check(unsafe { libc::fcntl(self.0.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })?;
        // SAFETY: fd is ours; on failure it is closed below.
        let stream = unsafe { libc::fdopendir(fd) };
        if stream.is_null() {
            let err = io::Error::last_os_error();
            // SAFETY: fdopendir failed, so fd is still ours.
            unsafe { libc::close(fd) };
            return Err(err);
        }
        // The dup shares its offset with our descriptor: start from the beginning.
        // SAFETY: stream is a valid DIR*.
        unsafe { libc::rewinddir(stream) };
        let mut entries = Vec::new();
        let result = loop {
            // SAFETY: errno is thread-local; reset so end and error are told apart.
            unsafe { *libc::__errno_location() = 0 };
            // SAFETY: stream is a valid DIR*; the entry is read before the next call.
            let entry = unsafe { libc::readdir64(stream) };
            if entry.is_null() {
                let errno = io::Error::last_os_error();
                break match errno.raw_os_error() {
                    Some(0) | None => Ok(()),
                    _ => Err(errno),
                };
            }
            // SAFETY: d_name is a NUL-terminated array inside the entry.
            let (name, kind) = unsafe {
                let name = std::ffi::CStr::from_ptr((*entry).d_name.as_ptr());
                (name.to_bytes().to_vec(), (*entry).d_type)
            };
            if name != b"." && name != b".." {
                entries.push(Entry {
                    name: OsString::from_vec(name),
                    kind,
                });
            }
        };
        // SAFETY: stream is valid and closed once (this also closes fd).
        unsafe { libc::closedir(stream) };
        result.map(|()| entries)
    }

    /// Flushes the directory's entries to disk.
    pub fn sync(&self) -> io::Result<()> {
        self.0.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    use super::*;

    fn both<T>(
        dirfd: RawFd,
        rel: &str,
        flags: libc::c_int,
        what: impl Fn(io::Result<RawFd>) -> T,
    ) -> [T; 2] {
        let open = |method| {
            let fd = open_with(method, dirfd, Path::new(rel), flags, 0o600);
            if let Ok(fd) = fd {
                // SAFETY: fd was just opened by the call above.
                drop(unsafe { File::from_raw_fd(fd) });
            }
            what(fd)
        };
        [open(Method::Openat2), open(Method::Walk)]
    }

    fn tree() -> (tempfile::TempDir, PathBuf, Dir) {
        let top = tempfile::tempdir().unwrap();
        let root = top.path().join("root");
        let outside = top.path().join("outside");
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(root.join("a/b/file"), b"inside").unwrap();
        fs::write(outside.join("secret"), b"outside").unwrap();
        symlink(&outside, root.join("a/link")).unwrap();
        symlink(outside.join("secret"), root.join("a/b/filelink")).unwrap();
        let dir = Dir::open_root(&root).unwrap();
        (top, outside, dir)
    }

    #[test]
    fn nested_paths_resolve_with_either_method() {
        let (_top, _outside, dir) = tree();
        let fd = dir.0.as_raw_fd();
        for opened in both(fd, "a/b/file", libc::O_RDONLY, |r| r.map(drop)) {
            opened.unwrap();
        }
        for opened in both(fd, "./a/./b", libc::O_RDONLY | libc::O_DIRECTORY, |r| {
            r.map(drop)
        }) {
            opened.unwrap();
        }
        assert_eq!(dir.read(Path::new("a/b/file")).unwrap(), b"inside");
        let names: Vec<_> = dir
            .read_dir(Path::new("a"))
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn a_symlinked_component_is_refused_with_either_method() {
        let (_top, outside, dir) = tree();
        let fd = dir.0.as_raw_fd();
        for rel in ["a/link/secret", "a/b/filelink", "a/link"] {
            for err in both(fd, rel, libc::O_RDONLY, |r| r.unwrap_err()) {
                assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{rel}: {err}");
                assert!(err.to_string().contains("symlink"), "{err}");
            }
        }
        // Creating through a symlinked directory is refused too, and nothing lands outside.
        for err in both(fd, "a/link/new", libc::O_RDWR | libc::O_CREAT, |r| {
            r.unwrap_err()
        }) {
            assert!(err.to_string().contains("symlink"), "{err}");
        }
        assert!(dir.create_dir(Path::new("a/link/d"), 0o750).is_err());
        assert!(
            dir.rename(Path::new("a/b/file"), Path::new("a/link/file"))
                .is_err()
        );
        assert!(
            dir.hard_link(Path::new("a/b/file"), Path::new("a/link/file"))
                .is_err()
        );
        assert!(dir.remove_file(Path::new("a/link/secret")).is_err());
        let mut left: Vec<_> = fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, vec![OsString::from("secret")]);
        // The link itself can be looked at and removed.
        assert!(
            dir.symlink_metadata(Path::new("a/link"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        dir.remove_file(Path::new("a/link")).unwrap();
    }

    #[test]
    fn paths_that_leave_the_directory_are_refused() {
        let (_top, _outside, dir) = tree();
        let fd = dir.0.as_raw_fd();
        for rel in [
            "../outside/secret",
            "a/../../outside/secret",
            "/etc/passwd",
            "a/b/../../..",
        ] {
            for err in both(fd, rel, libc::O_RDONLY, |r| r.unwrap_err()) {
                assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{rel}: {err}");
            }
        }
        assert!(dir.create_dir(Path::new("../x"), 0o750).is_err());
    }

    #[test]
    fn a_symlinked_root_is_refused() {
        let (top, _outside, _dir) = tree();
        let link = top.path().join("rootlink");
        symlink(top.path().join("outside"), &link).unwrap();
        let err = Dir::open_root(&link).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
    }

    #[test]
    fn writes_land_beneath_with_their_mode() {
        let (top, _outside, dir) = tree();
        dir.create_dir(Path::new("a/c"), 0o750).unwrap();
        let file = dir
            .open(Path::new("a/c/new"), Open::read_write().create_new(0o640))
            .unwrap();
        drop(file);
        dir.hard_link(Path::new("a/c/new"), Path::new("a/c/linked"))
            .unwrap();
        dir.rename(Path::new("a/c/new"), Path::new("a/b/moved"))
            .unwrap();
        dir.remove_file(Path::new("a/c/linked")).unwrap();
        dir.remove_dir(Path::new("a/c")).unwrap();
        let root = top.path().join("root");
        assert!(root.join("a/b/moved").is_file());
        assert!(!root.join("a/c").exists());
        dir.create_dir(Path::new("a/d"), 0o750).unwrap();
        assert_eq!(
            fs::metadata(root.join("a/d")).unwrap().mode() & 0o777,
            0o750
        );
        assert!(dir.symlink_metadata(Path::new("a/d")).unwrap().is_dir());
    }
}
