//! The sibling warm-up: after a cold read in a directory, its other small files
//! are fetched in the background (bounded), so a pass over a folder does not wait
//! on S3 file by file.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use super::archived::Archived;
use super::listing::Entry;
use crate::fetch::{FetchError, Fetcher};
use crate::store::{ETag, Key, StoreError};

/// Siblings fetched in the background when one file of a directory is read cold:
/// at most this many, each at most `SIBLING_MAX_SIZE`, `SIBLINGS_AT_ONCE` at a time.
pub const SIBLINGS_MAX: usize = 256;
pub const SIBLING_MAX_SIZE: u64 = 32 << 20;
pub const SIBLINGS_AT_ONCE: usize = 16;
/// Directories whose warm-up is remembered (the least recently warmed are
/// forgotten first, and may then be warmed again).
const WARMED_MAX: usize = 4096;

/// Which directories were warmed lately, and the budget of background fetches.
pub struct Siblings {
    done: Mutex<LruCache<String, Instant>>,
    permits: Arc<Semaphore>,
    /// A directory is warmed at most once in this long.
    every: Duration,
    fetcher: Fetcher,
    rt: Handle,
    /// Archived objects are never fetched: what a GET answered goes here.
    archived: Arc<Archived>,
}

impl Siblings {
    /// Warms each directory at most once per `every`, fetching through `fetcher`.
    pub fn new(fetcher: Fetcher, every: Duration, rt: Handle, archived: Arc<Archived>) -> Siblings {
        Siblings {
            done: Mutex::new(LruCache::new(
                NonZeroUsize::new(WARMED_MAX).expect("not zero"),
            )),
            permits: Arc::new(Semaphore::new(SIBLINGS_AT_ONCE)),
            every,
            fetcher,
            rt,
            archived,
        }
    }

    /// Claims the warm-up of directory `prefix`: false if it had one lately.
    pub fn claim(&self, prefix: &str) -> bool {
        let mut done = self.done.lock();
        if done.get(prefix).is_some_and(|t| t.elapsed() < self.every) {
            return false;
        }
        done.put(prefix.to_string(), Instant::now());
        true
    }

    /// Fetches the small files among `entries` (the listing of `prefix`) into the
    /// mirror in the background, leaving archived ones alone. Best effort: a
    /// failure is only logged.
    pub fn warm(&self, prefix: &str, entries: &[Entry]) {
        let mirror = self.fetcher.mirror();
        let jobs = entries
            .iter()
            .filter(|e| !e.dir && !e.archived && e.size <= SIBLING_MAX_SIZE)
            .take(SIBLINGS_MAX)
            .filter_map(|e| Some((Key::new(format!("{prefix}{}", e.name)).ok()?, e)))
            .map(|(key, e)| {
                let rel = mirror.path_for(&key, e.size);
                (key, ETag::new(&e.etag), e.size, rel)
            })
            .filter(|(key, etag, _, _)| !self.archived.known(key, etag));
        for (key, etag, size, rel) in jobs.collect::<Vec<_>>() {
            let (fetcher, permits) = (self.fetcher.clone(), Arc::clone(&self.permits));
            let archived = Arc::clone(&self.archived);
            self.rt.spawn(async move {
                let Ok(_permit) = permits.acquire_owned().await else {
                    return;
                };
                match fetcher.ensure(&key, &etag, size, &rel).await {
                    Ok(_) => {}
                    Err(FetchError::Store(StoreError::Archived(_))) => {
                        archived.answered(&key, &etag);
                    }
                    Err(e) => tracing::debug!(%key, "background fetch failed: {e}"),
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::fetch::FetchConfig;
    use crate::fs::listing::list_dir;
    use crate::mirror::{LocalStatus, Mirror};
    use crate::store::memory::MemoryStore;
    use crate::store::{ObjectStore, StorageClass};

    #[test]
    fn a_directory_is_claimed_once_a_while() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mirror = Arc::new(Mirror::open(dir.path(), "b").unwrap());
        let store = Arc::new(MemoryStore::new("b")) as Arc<dyn ObjectStore>;
        let fetcher = Fetcher::new(store, mirror, FetchConfig::default());
        let lately = Siblings::new(
            fetcher.clone(),
            Duration::from_secs(60),
            rt.handle().clone(),
            archived(),
        );
        assert!(lately.claim("a/"));
        assert!(!lately.claim("a/"));
        assert!(lately.claim("b/"), "each directory on its own");
        let always = Siblings::new(fetcher, Duration::ZERO, rt.handle().clone(), archived());
        assert!(always.claim("a/"));
        assert!(always.claim("a/"));
    }

    #[test]
    fn small_files_are_fetched_and_large_ones_and_directories_left() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mirror = Arc::new(Mirror::open(dir.path(), "b").unwrap());
        let store = Arc::new(MemoryStore::new("b"));
        let small = store.put("d/small", "x");
        let large = store.put("d/large", vec![0u8; SIBLING_MAX_SIZE as usize + 1]);
        store.put("d/sub/inner", "x");
        let cold = store.put_with_class("d/cold", "x", StorageClass::Glacier);
        let tier = store.put_with_class("d/tier", "x", StorageClass::IntelligentTiering);
        store.archive_tier("d/tier");
        let fetcher = Fetcher::new(
            Arc::clone(&store) as Arc<dyn ObjectStore>,
            Arc::clone(&mirror),
            FetchConfig::default(),
        );
        let known = archived();
        let siblings = Siblings::new(
            fetcher,
            Duration::from_secs(60),
            rt.handle().clone(),
            Arc::clone(&known),
        );
        let entries = rt.block_on(list_dir(store.as_ref(), "d/")).unwrap();
        siblings.warm("d/", &entries);
        let status = |key: &str, etag: &ETag, size| {
            mirror.status(Path::new(key), &Key::new(key).unwrap(), etag, size)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while status("d/small", &small, 1) != LocalStatus::Current {
            assert!(Instant::now() < deadline, "the small file arrives");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(50));
        let tier_key = Key::new("d/tier").unwrap();
        while !known.known(&tier_key, &tier) {
            assert!(Instant::now() < deadline, "the archive tier is remembered");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(50));
        let large_size = SIBLING_MAX_SIZE + 1;
        assert_eq!(status("d/large", &large, large_size), LocalStatus::Missing);
        assert_eq!(status("d/cold", &cold, 1), LocalStatus::Missing);
        assert!(!dir.path().join("d/sub").exists());
        assert_eq!(
            store.gets.load(std::sync::atomic::Ordering::Relaxed),
            2,
            "no GET for the object the listing shows archived"
        );
    }

    fn archived() -> Arc<Archived> {
        Arc::new(Archived::new("b", "", Path::new("/m")))
    }
}
