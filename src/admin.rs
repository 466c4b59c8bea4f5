//! The admin commands around the backup: `status` (what the mirror holds, from
//! local state only), `verify` (is every copy intact and complete), `restore` (put
//! the mirror back into a bucket) and `archive` (a directory as a tar.zst in S3).
//! Each returns a report the binary prints; none prints by itself.

pub mod archive;
pub mod history;
pub mod restore;
pub mod status;
pub mod verify;

use std::io;
use std::path::PathBuf;

use crate::mirror::inventory::MirrorView;
use crate::mirror::{MirrorError, UserName};
use crate::store::{Key, StoreError};
use crate::sys;

/// Failures that stop an admin command (per-object problems are reported instead).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The directory to archive cannot be used.
    #[error("{}: {problem}", .path.display())]
    Source {
        path: PathBuf,
        problem: SourceProblem,
    },
    /// A file of the directory could not be read while archiving it.
    #[error("archive of {} failed, nothing was uploaded: {source}", .path.display())]
    Archive {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The archiver stopped without an error of its own (it always ends the
    /// stream when it succeeds, so this is a bug if it happens).
    #[error("the archive stream ended early")]
    StreamEnded,
    /// `history` of a key the mirror holds no version of.
    #[error("the mirror holds no copy and no kept version of key {}", crate::store::Escaped(.0))]
    UnknownKey(String),
}

/// Why a directory cannot be archived.
#[derive(Debug, thiserror::Error)]
pub enum SourceProblem {
    #[error(transparent)]
    Unreadable(#[from] io::Error),
    #[error("not a directory")]
    NotADirectory,
    #[error("a directory with a UTF-8 name is needed (not /)")]
    NoName,
}

/// Refuses a mirror that the user running the command does not own: commands
/// that act for the mirror's owner (restore, archive) are the owner's to run.
fn refuse_other_owner(view: &MirrorView) -> Result<(), MirrorError> {
    refuse_owner(view.root(), view.owner()?)
}

fn refuse_owner(path: &std::path::Path, owner: u32) -> Result<(), MirrorError> {
    let user = sys::euid();
    if owner == user {
        return Ok(());
    }
    Err(MirrorError::NotOwner {
        path: path.to_path_buf(),
        owner: UserName(owner),
        user: UserName(user),
    })
}

/// Whether `key` lies under `prefix` ("" is the whole bucket).
fn under(key: &Key, prefix: &str) -> bool {
    key.as_str().starts_with(prefix)
}
