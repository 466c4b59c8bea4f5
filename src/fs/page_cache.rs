//! Which version of each file the kernel's page cache may hold, so that an open
//! lets the kernel keep the pages it cached only when they are bytes of the
//! version being opened (the kernel keeps one cache per inode, and an inode shows
//! whatever version the listing names now).

use std::collections::HashMap;

use parking_lot::Mutex;

use super::Ino;
use crate::store::ETag;

/// The cache state of every file opened since the kernel last forgot it.
#[derive(Default)]
pub struct PageCaches {
    files: Mutex<HashMap<Ino, Cached>>,
}

#[derive(Default)]
struct Cached {
    /// The version all cached pages belong to; `None` when pages of another may
    /// be there too.
    version: Option<ETag>,
    /// Open handles, each with the version it reads (and may cache pages of).
    open: Vec<(u64, ETag)>,
}

impl PageCaches {
    /// Handle `fh` of `ino` opens version `etag`. True when the kernel may keep the
    /// pages it cached; otherwise the open drops them.
    pub fn open(&self, ino: Ino, fh: u64, etag: &ETag) -> bool {
        let mut files = self.files.lock();
        let cached = files.entry(ino).or_default();
        let alone = cached.open.iter().all(|(_, e)| e == etag);
        let keep = alone && cached.version.as_ref() == Some(etag);
        if !keep {
            // The pages go now; from here on only open handles fill the cache, and
            // one of another version may fill it with its bytes.
            cached.version = alone.then(|| etag.clone());
        }
        cached.open.push((fh, etag.clone()));
        keep
    }

    /// Handle `fh` of `ino` is closed. What it cached stays, as the next open may use it.
    pub fn release(&self, ino: Ino, fh: u64) {
        if let Some(cached) = self.files.lock().get_mut(&ino) {
            cached.open.retain(|(open, _)| *open != fh);
        }
    }

    /// Whether some handle of `ino` is open.
    pub fn in_use(&self, ino: Ino) -> bool {
        self.files
            .lock()
            .get(&ino)
            .is_some_and(|cached| !cached.open.is_empty())
    }

    /// The kernel forgot `ino`, and its pages with it.
    pub fn forget(&self, ino: Ino) {
        let mut files = self.files.lock();
        if files.get(&ino).is_some_and(|cached| cached.open.is_empty()) {
            files.remove(&ino);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_kept_only_for_the_version_they_hold() {
        let caches = PageCaches::default();
        let (v1, v2) = (ETag::new("v1"), ETag::new("v2"));
        assert!(
            !caches.open(7, 1, &v1),
            "nothing known of the cache: dropped"
        );
        caches.release(7, 1);
        assert!(!caches.in_use(7));
        assert!(caches.open(7, 2, &v1), "the same version: kept");
        assert!(caches.open(7, 3, &v1), "and again, while the other is open");
        assert!(caches.in_use(7));
        assert!(!caches.open(7, 4, &v2), "another version: dropped");
        caches.release(7, 4);
        // Handles 2 and 3 of v1 may have cached v1 pages after the v2 open.
        assert!(!caches.open(7, 5, &v2), "pages of v1 may be there");
        for fh in [2, 3, 5] {
            caches.release(7, fh);
        }
        assert!(!caches.open(7, 6, &v2), "still unknown: dropped");
        caches.release(7, 6);
        assert!(caches.open(7, 7, &v2), "now all v2");
        caches.release(7, 7);
        assert!(!caches.open(8, 1, &v2), "another file");
        caches.forget(7);
        assert!(!caches.open(7, 8, &v2), "forgotten with its pages");
    }
}
