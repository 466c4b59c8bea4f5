//! Archived objects in the mount: reading one the mirror does not hold fails at
//! once with ENODATA (no request when the listing or an earlier GET already
//! told), and the daemon says once per key what it is and what restores it.

use std::collections::HashSet;

use parking_lot::Mutex;

use super::FsError;
use crate::store::{ETag, Key, StorageClass};

/// Keys logged before the set is cleared, so a mount over a huge archived
/// bucket does not grow without bound (a key may then be logged again).
const LOGGED_MAX: usize = 65_536;

/// What the mount knows of archived objects.
pub struct Archived {
    /// Versions a GET answered are archived (an Intelligent-Tiering archive
    /// tier, which listings do not show), with the class S3 named.
    answered: Mutex<HashSet<(Key, ETag)>>,
    /// Keys whose refusal was logged.
    logged: Mutex<HashSet<Key>>,
    /// The prefetch that restores them, for the log line.
    command: String,
}

impl Archived {
    /// Nothing known yet; `command` is the prefetch of this mount's bucket and mirror.
    pub fn new(bucket: &str, prefix: &str, mirror_dir: &std::path::Path) -> Archived {
        let target = format!("{bucket}/{prefix}");
        Archived {
            answered: Mutex::default(),
            logged: Mutex::default(),
            command: format!(
                "s3mirrorfs prefetch {} --mirror-dir {} --restore-archived DAYS",
                target.trim_end_matches('/'),
                mirror_dir.display()
            ),
        }
    }

    /// Whether a GET of this version answered that it is archived.
    pub fn known(&self, key: &Key, etag: &ETag) -> bool {
        self.answered.lock().contains(&(key.clone(), etag.clone()))
    }

    /// Remembers that a GET of this version answered that it is archived.
    pub fn answered(&self, key: &Key, etag: &ETag) {
        let mut answered = self.answered.lock();
        if answered.len() >= LOGGED_MAX {
            answered.clear();
        }
        answered.insert((key.clone(), etag.clone()));
    }

    /// The failure of a read of an archived object the mirror does not hold;
    /// the first for its key is logged, naming the key, its class and the
    /// command that restores it.
    pub fn refuse(&self, key: &Key, class: &StorageClass) -> FsError {
        let first = {
            let mut logged = self.logged.lock();
            if logged.len() >= LOGGED_MAX {
                logged.clear();
            }
            logged.insert(key.clone())
        };
        if first {
            tracing::warn!(
                "{key} is archived in {class} and not in the mirror: reads fail with ENODATA \
                 until it is restored and fetched: {}",
                self.command
            );
        }
        FsError::archived(format!(
            "{key} is archived in {class} and not in the mirror"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_enodata_and_answered_versions_are_remembered() {
        let archived = Archived::new("b", "photos/", std::path::Path::new("/m"));
        assert!(
            archived
                .command
                .starts_with("s3mirrorfs prefetch b/photos --mirror-dir /m ")
        );
        let key = Key::new("photos/a.jpg").unwrap();
        let etag = ETag::new("e");
        assert!(!archived.known(&key, &etag));
        archived.answered(&key, &etag);
        assert!(archived.known(&key, &etag));
        assert!(
            !archived.known(&key, &ETag::new("other")),
            "a new version is tried"
        );
        let err = archived.refuse(&key, &StorageClass::Glacier);
        assert_eq!(err.errno(), libc::ENODATA);
        assert_eq!(err.level(), tracing::Level::DEBUG, "logged once, by refuse");
        assert!(err.to_string().contains("archived in GLACIER"), "{err}");
        assert!(archived.logged.lock().contains(&key));
    }
}
