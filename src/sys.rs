//! Thin, safe wrappers over the few Linux calls std lacks: extended attributes,
//! flock, open-file-description range locks and futimens. The one home of libc.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::SystemTime;

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

/// Sets an extended attribute on an open file.
pub fn fset_xattr(file: &File, name: &str, value: &[u8]) -> io::Result<()> {
    let name = cstring(name.as_bytes())?;
    // SAFETY: the fd is open for the call, name is NUL-terminated, value is a valid slice.
    check(unsafe {
        libc::fsetxattr(
            file.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// Reads an extended attribute of `path` without following a final symlink; `None` if absent.
pub fn get_xattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let cpath = cstring(path.as_os_str().as_bytes())?;
    let cname = cstring(name.as_bytes())?;
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: pointers are valid for the given lengths for the duration of the call.
        let n = unsafe {
            libc::lgetxattr(
                cpath.as_ptr(),
                cname.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(Some(buf));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENODATA) => return Ok(None),
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            _ => return Err(err),
        }
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

/// Takes an exclusive flock; with `wait == false` returns `Ok(false)` if another holder has it.
pub fn flock_exclusive(file: &File, wait: bool) -> io::Result<bool> {
    let op = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    // SAFETY: plain syscall on an open fd.
    match check(unsafe { libc::flock(file.as_raw_fd(), op) }) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(e),
    }
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

/// Sets a file's access and modification times.
pub fn set_mtime(file: &File, mtime: SystemTime) -> io::Result<()> {
    let since = mtime
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let ts = libc::timespec {
        tv_sec: since.as_secs() as libc::time_t,
        tv_nsec: since.subsec_nanos() as _,
    };
    let times = [ts, ts];
    // SAFETY: fd is open; times points to two timespecs.
    check(unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) })
}

/// Whether standard error is a terminal.
pub fn stderr_is_tty() -> bool {
    // SAFETY: isatty on a constant fd has no memory effects.
    unsafe { libc::isatty(libc::STDERR_FILENO) == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattr_round_trip_and_absence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        assert_eq!(get_xattr(&path, "user.test").unwrap(), None);
        let big = vec![b'x'; 3000];
        fset_xattr(&file, "user.test", &big).unwrap();
        assert_eq!(get_xattr(&path, "user.test").unwrap(), Some(big));
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
    fn flock_excludes_a_second_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let a = File::create(&path).unwrap();
        let b = File::open(&path).unwrap();
        assert!(flock_exclusive(&a, false).unwrap());
        assert!(!flock_exclusive(&b, false).unwrap());
        drop(a);
        assert!(flock_exclusive(&b, false).unwrap());
    }
}
