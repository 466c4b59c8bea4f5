//! The admin commands around the backup: `status` (what the mirror holds, from
//! local state only), `verify` (is every copy intact and complete), `restore` (put
//! the mirror back into a bucket) and `archive` (a directory as a tar.zst in S3).
//! Each returns a report the binary prints; none prints by itself.

pub mod archive;
pub mod restore;
pub mod status;
pub mod verify;

use std::io;
use std::path::PathBuf;

use crate::mirror::MirrorError;
use crate::store::StoreError;

/// Failures that stop an admin command (per-object problems are reported instead).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: io::Error },
    #[error("{0}")]
    Invalid(String),
}

/// Whether `key` lies under `prefix` ("" is the whole bucket).
fn under(key: &str, prefix: &str) -> bool {
    key.starts_with(prefix)
}
