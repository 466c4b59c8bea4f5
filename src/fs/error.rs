//! Failures of filesystem operations: each carries the errno the kernel gets, its
//! typed cause (so a log shows the whole chain) and the level it is logged at.

use std::borrow::Cow;
use std::error::Error as _;
use std::fmt::Write as _;

use libc::c_int;
use tracing::Level;

use super::stream::StreamError;
use crate::fetch::FetchError;
use crate::store::{EmptyKey, StoreError};

/// What failed underneath an operation.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Key(#[from] EmptyKey),
}

/// A failed filesystem operation, as the FUSE adapter answers and logs it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct FsError {
    errno: c_int,
    message: Cow<'static, str>,
    #[source]
    source: Option<Cause>,
    level: Level,
}

impl FsError {
    /// A failure with no cause below it. A missing name is routine (shells and
    /// editors probe for files all the time), so ENOENT is logged at debug; any
    /// other failure at warn.
    pub fn new(errno: c_int, message: impl Into<Cow<'static, str>>) -> FsError {
        let level = if errno == libc::ENOENT {
            Level::DEBUG
        } else {
            Level::WARN
        };
        FsError {
            errno,
            message: message.into(),
            source: None,
            level,
        }
    }

    /// An I/O failure (EIO) caused by `cause`.
    pub fn io(message: impl Into<Cow<'static, str>>, cause: impl Into<Cause>) -> FsError {
        FsError::new(libc::EIO, message).caused_by(cause)
    }

    /// The same failure, with `cause` under it.
    pub fn caused_by(mut self, cause: impl Into<Cause>) -> FsError {
        self.source = Some(cause.into());
        self
    }

    /// ENOENT: no such name or inode.
    pub fn not_found() -> FsError {
        FsError::new(libc::ENOENT, "no such file or directory")
    }

    /// ENOTDIR: a file where a directory is needed.
    pub fn not_a_directory() -> FsError {
        FsError::new(libc::ENOTDIR, "not a directory")
    }

    /// EISDIR: a directory opened as a file.
    pub fn is_a_directory() -> FsError {
        FsError::new(libc::EISDIR, "is a directory")
    }

    /// EBADF: a handle that is not open.
    pub fn bad_handle() -> FsError {
        FsError::new(libc::EBADF, "stale file handle")
    }

    /// EROFS: the mount is never written.
    pub fn read_only() -> FsError {
        FsError::new(libc::EROFS, "read-only file system")
    }

    /// ENODATA: an archived object the mirror does not hold, which a GET cannot
    /// read until it is restored. Logged at debug: the filesystem says it once
    /// per key itself, not once per open or read.
    pub fn archived(message: impl Into<Cow<'static, str>>) -> FsError {
        FsError {
            level: Level::DEBUG,
            ..FsError::new(libc::ENODATA, message)
        }
    }

    /// The errno the kernel gets.
    pub fn errno(&self) -> c_int {
        self.errno
    }

    /// The level this failure is logged at.
    pub fn level(&self) -> Level {
        self.level
    }

    /// The message and every cause under it, `outer: inner: ...`.
    pub fn chain(&self) -> String {
        let mut out = self.message.to_string();
        let mut next = self.source();
        while let Some(cause) = next {
            let _ = write!(out, ": {cause}");
            next = cause.source();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BodyError;
    use std::sync::Arc;

    #[test]
    fn a_missing_name_is_routine_and_other_failures_are_not() {
        assert_eq!(FsError::not_found().level(), Level::DEBUG);
        for err in [
            FsError::not_a_directory(),
            FsError::is_a_directory(),
            FsError::bad_handle(),
            FsError::read_only(),
        ] {
            assert_eq!(err.level(), Level::WARN, "{err}");
        }
    }

    #[test]
    fn errnos_are_the_ones_named() {
        let errnos: Vec<c_int> = [
            FsError::not_found(),
            FsError::not_a_directory(),
            FsError::is_a_directory(),
            FsError::bad_handle(),
            FsError::read_only(),
            FsError::io("x", std::io::Error::other("y")),
            FsError::archived("z"),
        ]
        .iter()
        .map(FsError::errno)
        .collect();
        use libc::*;
        assert_eq!(
            errnos,
            [ENOENT, ENOTDIR, EISDIR, EBADF, EROFS, EIO, ENODATA]
        );
    }

    #[test]
    fn the_cause_stays_typed_and_shows_in_the_chain() {
        let short = BodyError::EndedEarly { at: 3, end: 10 };
        let download = Arc::new(FetchError::Store(StoreError::Body(short)));
        let err = FsError::io("read failed", StreamError::Failed(download));
        assert!(matches!(
            err.source().and_then(|s| s.downcast_ref::<Cause>()),
            Some(Cause::Stream(StreamError::Failed(_)))
        ));
        assert_eq!(
            err.chain(),
            "read failed: the download failed: response body failed: body ended at byte 3 of 10"
        );
        assert_eq!(err.to_string(), "read failed");
    }
}
