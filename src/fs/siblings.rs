//! The sibling warm-up: after a cold read in a directory, the files after it
//! are fetched in the background (a window bounded in count and bytes, per
//! directory and in all, and never onto a nearly full volume). A reader that
//! reaches the middle of the window moves it on, so a pass over a folder (a
//! file manager making thumbnails, a viewer stepping through photos) stays
//! ahead of S3 instead of waiting on it file by file.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use super::archived::Archived;
use super::listing::Entry;
use crate::fetch::{FetchError, Fetcher};
use crate::store::{ETag, Escaped, Key, StoreError};
use crate::sys::{self, Space};

/// One window of the warm-up: at most this many files, each at most
/// `SIBLING_MAX_SIZE`, `SIBLINGS_AT_ONCE` at a time.
pub const SIBLINGS_MAX: usize = 256;
pub const SIBLING_MAX_SIZE: u64 = 32 << 20;
pub const SIBLINGS_AT_ONCE: usize = 16;
/// Bytes one window of a directory may fetch: files that would pass it wait
/// for the next window.
pub const SIBLINGS_DIR_BYTES: u64 = 256 << 20;
/// Bytes the warm-ups of all directories may have claimed and not yet fetched:
/// files that would pass it are left, so cold reads in many directories do not
/// pile up a backlog.
pub const SIBLINGS_PENDING_BYTES: u64 = 1 << 30;
/// No warm-up starts while the mirror's volume has less than this free, or less
/// than `SIBLINGS_MIN_FREE_PERCENT` of its size: room is kept for what readers
/// and the prefetch must write.
pub const SIBLINGS_MIN_FREE: u64 = 2 << 30;
pub const SIBLINGS_MIN_FREE_PERCENT: u64 = 5;

/// The byte limits of the warm-up.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub dir_bytes: u64,
    pub pending_bytes: u64,
    pub min_free: u64,
    pub min_free_percent: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            dir_bytes: SIBLINGS_DIR_BYTES,
            pending_bytes: SIBLINGS_PENDING_BYTES,
            min_free: SIBLINGS_MIN_FREE,
            min_free_percent: SIBLINGS_MIN_FREE_PERCENT,
        }
    }
}

impl Budget {
    /// Whether a volume with `room` is too full for a warm-up.
    fn too_full(&self, room: Space) -> bool {
        let percent = room.total / 100 * self.min_free_percent;
        room.available < self.min_free.max(percent)
    }
}

/// Directories whose warm-up is remembered (the least recently warmed are
/// forgotten first, and may then be warmed again).
const WARMED_MAX: usize = 4096;

/// Where a directory's warm-up stands. Names compare in listing order.
#[derive(Debug)]
struct Window {
    /// When a warm-up of the directory last started afresh.
    started: Instant,
    /// The last name the warm-up took (or the name it started after).
    end: Box<str>,
    next: Next,
}

/// What moves a directory's window on.
#[derive(Debug)]
enum Next {
    /// Nothing yet: the window is being planned (the listing may be on its way).
    Planning,
    /// A read of this name or a later one.
    At(Box<str>),
    /// Only a cold read past the end: nothing was left after it.
    PastEnd,
}

/// Which directories were warmed lately, and the budget of background fetches.
pub struct Siblings {
    done: Mutex<LruCache<String, Window>>,
    permits: Arc<Semaphore>,
    budget: Budget,
    /// Bytes claimed by warm-ups and not fetched yet.
    pending: Arc<AtomicU64>,
    /// A directory is warmed afresh at most once in this long.
    every: Duration,
    fetcher: Fetcher,
    rt: Handle,
    /// Archived objects are never fetched: what a GET answered goes here.
    archived: Arc<Archived>,
}

impl Siblings {
    /// Warms each directory afresh at most once per `every`, fetching through `fetcher`.
    pub fn new(fetcher: Fetcher, every: Duration, rt: Handle, archived: Arc<Archived>) -> Siblings {
        Siblings::with_budget(fetcher, every, rt, archived, Budget::default())
    }

    /// `new`, within `budget`.
    pub fn with_budget(
        fetcher: Fetcher,
        every: Duration,
        rt: Handle,
        archived: Arc<Archived>,
        budget: Budget,
    ) -> Siblings {
        Siblings {
            done: Mutex::new(LruCache::new(
                NonZeroUsize::new(WARMED_MAX).expect("not zero"),
            )),
            permits: Arc::new(Semaphore::new(SIBLINGS_AT_ONCE)),
            budget,
            pending: Arc::default(),
            every,
            fetcher,
            rt,
            archived,
        }
    }

    /// A reader opened `name` in directory `prefix` (`cold`: the mirror did not
    /// hold it). Returns the name after which a window is to be warmed, if one
    /// is: after a cold read in a directory not warmed lately, or past the
    /// window; after any read from the middle of the window on, from its end.
    pub fn claim(&self, prefix: &str, name: &str, cold: bool) -> Option<String> {
        let mut done = self.done.lock();
        let fresh = |name: &str| Window {
            started: Instant::now(),
            end: name.into(),
            next: Next::Planning,
        };
        match done.get_mut(prefix) {
            Some(window) if window.started.elapsed() < self.every => {
                let from = match &window.next {
                    Next::Planning => return None,
                    // A cold read past the window: it starts again from there.
                    _ if cold && name > &*window.end => name,
                    Next::At(at) if name >= &**at => &*window.end,
                    _ => return None,
                };
                let from = from.to_string();
                window.end = from.as_str().into();
                window.next = Next::Planning;
                Some(from)
            }
            _ if cold => {
                done.put(prefix.to_string(), fresh(name));
                Some(name.to_string())
            }
            _ => None,
        }
    }

    /// Fetches the small files among `entries` (the listing of `prefix`) that
    /// come after `after` (all of them for `""`) into the mirror in the
    /// background, leaving archived ones alone, within the budget (nothing at
    /// all on a nearly full volume), and marks where the next window starts.
    /// Best effort: a failure is only logged.
    pub fn warm(&self, prefix: &str, entries: &[Entry], after: &str) {
        let jobs = self.window(prefix, entries, after);
        if let Some(window) = self.done.lock().get_mut(prefix) {
            match jobs.last() {
                Some(last) => {
                    window.end = last.4.clone();
                    window.next = Next::At(jobs[jobs.len() / 2].4.clone());
                }
                None => window.next = Next::PastEnd,
            }
        }
        for (key, etag, size, rel, _) in jobs {
            let Some(claim) = Claim::new(&self.pending, size, self.budget.pending_bytes) else {
                continue;
            };
            let (fetcher, permits) = (self.fetcher.clone(), Arc::clone(&self.permits));
            let archived = Arc::clone(&self.archived);
            self.rt.spawn(async move {
                let _claim = claim;
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

    /// The files of one window: those after `after` the mirror may fetch, within
    /// the window's count and bytes, with the name each has in the directory.
    fn window(&self, prefix: &str, entries: &[Entry], after: &str) -> Vec<Job> {
        let mirror = self.fetcher.mirror();
        match sys::space(mirror.root()) {
            Ok(room) if self.budget.too_full(room) => {
                let free = room.available;
                tracing::info!(prefix = %Escaped(prefix), free, "the mirror's volume is nearly full: no warm-up");
                return Vec::new();
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("cannot tell the room on the mirror's volume: {e}"),
        }
        let mut dir_bytes = 0;
        entries
            .iter()
            .filter(|e| &*e.name > after && !e.dir && !e.archived && e.size <= SIBLING_MAX_SIZE)
            .take(SIBLINGS_MAX)
            .filter_map(|e| Some((Key::new(format!("{prefix}{}", e.name)).ok()?, e)))
            .map(|(key, e)| {
                let rel = mirror.path_for(&key, e.size);
                (key, ETag::new(&e.etag()), e.size, rel, e.name.clone())
            })
            .filter(|(key, etag, ..)| !self.archived.known(key, etag))
            .take_while(|(_, _, size, ..)| {
                dir_bytes += size;
                dir_bytes <= self.budget.dir_bytes
            })
            .collect()
    }
}

/// One background fetch: the key, its version and size, its path in the
/// mirror, and its name in the directory.
type Job = (Key, ETag, u64, std::path::PathBuf, Box<str>);

/// Bytes of the warm-up's pending budget held by one fetch, given back when it ends.
struct Claim {
    pending: Arc<AtomicU64>,
    size: u64,
}

impl Claim {
    /// Claims `size` bytes unless that would take `pending` past `limit`.
    fn new(pending: &Arc<AtomicU64>, size: u64, limit: u64) -> Option<Claim> {
        pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(size).filter(|&total| total <= limit)
            })
            .ok()?;
        Some(Claim {
            pending: Arc::clone(pending),
            size,
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.pending.fetch_sub(self.size, Ordering::AcqRel);
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
        assert_eq!(lately.claim("a/", "x", true).as_deref(), Some("x"));
        assert_eq!(
            lately.claim("a/", "y", true),
            None,
            "its window is being planned"
        );
        assert_eq!(
            lately.claim("b/", "x", false),
            None,
            "a read from the mirror starts none"
        );
        assert_eq!(
            lately.claim("b/", "x", true).as_deref(),
            Some("x"),
            "each directory on its own"
        );
        let always = Siblings::new(fetcher, Duration::ZERO, rt.handle().clone(), archived());
        assert!(always.claim("a/", "x", true).is_some());
        assert!(always.claim("a/", "x", true).is_some());
    }

    #[test]
    fn the_window_moves_on_as_a_reader_goes_through_the_directory() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (dir, store, fetcher) = files_of(&["d"]);
        let budget = Budget {
            dir_bytes: 300,
            pending_bytes: 1 << 20,
            min_free: 0,
            min_free_percent: 0,
        };
        let siblings = Siblings::with_budget(
            fetcher,
            Duration::from_secs(60),
            rt.handle().clone(),
            archived(),
            budget,
        );
        let entries = rt.block_on(list_dir(store.as_ref(), "d/")).unwrap();
        let mirrored = |wanted: &[u8]| {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let held: Vec<u8> = (0..10)
                    .filter(|i| dir.path().join(format!("d/{i:02}")).exists())
                    .collect();
                if held == wanted || Instant::now() > deadline {
                    return held;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        // A cold read of 00: the three files after it (300 bytes).
        let after = siblings.claim("d/", "00", true).unwrap();
        siblings.warm("d/", &entries, &after);
        assert_eq!(mirrored(&[1, 2, 3]), [1, 2, 3]);
        // Reading 01 from the mirror changes nothing; 02, the middle, moves the
        // window on past 03.
        assert_eq!(siblings.claim("d/", "01", false), None);
        let after = siblings.claim("d/", "02", false).unwrap();
        assert_eq!(after, "03");
        siblings.warm("d/", &entries, &after);
        assert_eq!(mirrored(&[1, 2, 3, 4, 5, 6]), [1, 2, 3, 4, 5, 6]);
        // A cold read inside the window starts nothing; one past it starts
        // there (09: nothing after it).
        assert_eq!(siblings.claim("d/", "03", true), None);
        let after = siblings.claim("d/", "09", true).unwrap();
        siblings.warm("d/", &entries, &after);
        assert_eq!(
            siblings.claim("d/", "09", false),
            None,
            "nothing left to move to"
        );
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(mirrored(&[1, 2, 3, 4, 5, 6]), [1, 2, 3, 4, 5, 6]);
        assert_eq!(store.gets.load(Ordering::Relaxed), 6, "each file once");
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
        siblings.warm("d/", &entries, "");
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

    #[test]
    fn the_warm_up_keeps_to_its_byte_budgets() {
        // Tasks run only inside `block_on`: every claim is made before any fetch ends.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (dir, store, fetcher) = files_of(&["d", "e", "f"]);
        let budget = Budget {
            dir_bytes: 350,
            pending_bytes: 500,
            min_free: 0,
            min_free_percent: 0,
        };
        let siblings = Siblings::with_budget(
            fetcher.clone(),
            Duration::from_secs(60),
            rt.handle().clone(),
            archived(),
            budget,
        );
        let listed = |d: &str| {
            rt.block_on(list_dir(store.as_ref(), &format!("{d}/")))
                .unwrap()
        };
        let lists = (listed("d"), listed("e"));
        siblings.warm("d/", &lists.0, "");
        assert_eq!(
            siblings.pending.load(Ordering::SeqCst),
            300,
            "3 files of d/"
        );
        siblings.warm("e/", &lists.1, "");
        assert_eq!(
            siblings.pending.load(Ordering::SeqCst),
            500,
            "2 of e/: all in all"
        );
        rt.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(10);
            while siblings.pending.load(Ordering::SeqCst) > 0 {
                assert!(Instant::now() < deadline, "the fetches end");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let mirrored = |d: &str| {
            (0..10)
                .filter(|i| dir.path().join(format!("{d}/{i:02}")).exists())
                .count()
        };
        assert_eq!((mirrored("d"), mirrored("e")), (3, 2));
        assert_eq!(
            store.gets.load(Ordering::Relaxed),
            5,
            "nothing else asked for"
        );

        // A volume short of room gets no warm-up at all.
        let full = Budget {
            min_free: u64::MAX,
            ..budget
        };
        let siblings = Siblings::with_budget(
            fetcher,
            Duration::from_secs(60),
            rt.handle().clone(),
            archived(),
            full,
        );
        siblings.warm("f/", &listed("f"), "");
        assert_eq!(siblings.pending.load(Ordering::SeqCst), 0);
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(100)).await });
        assert_eq!(mirrored("f"), 0);
        assert_eq!(store.gets.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn a_volume_is_too_full_below_a_floor_or_a_share_of_its_size() {
        const GIB: u64 = 1 << 30;
        let budget = Budget::default();
        let room = |available, total| Space { available, total };
        assert!(!budget.too_full(room(10 * GIB, 100 * GIB)));
        assert!(budget.too_full(room(4 * GIB, 100 * GIB)), "under 5 %");
        assert!(budget.too_full(room(GIB, 4 * GIB)), "under 2 GiB");
        assert!(!budget.too_full(room(3 * GIB, 4 * GIB)));
    }

    /// A mirror in a temp dir, fed from bucket `b` holding ten files of 100
    /// bytes (`00` to `09`) in each of `dirs`.
    fn files_of(dirs: &[&str]) -> (tempfile::TempDir, Arc<MemoryStore>, Fetcher) {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Arc::new(Mirror::open(dir.path(), "b").unwrap());
        let store = Arc::new(MemoryStore::new("b"));
        for d in dirs {
            for i in 0..10u8 {
                store.put(&format!("{d}/{i:02}"), vec![i; 100]);
            }
        }
        let fetcher = Fetcher::new(
            Arc::clone(&store) as Arc<dyn ObjectStore>,
            mirror,
            FetchConfig::default(),
        );
        (dir, store, fetcher)
    }

    fn archived() -> Arc<Archived> {
        Arc::new(Archived::new("b", "", Path::new("/m")))
    }
}
