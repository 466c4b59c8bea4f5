//! The listing cache: each directory's listing kept for the metadata TTL, the
//! look-ahead that lists subdirectories before a reader gets there, and the
//! back-off that stops asking S3 for a directory's listing for a while after it
//! failed (for every directory, when the endpoint could not be reached). Listings
//! are kept in memory up to a budget of bytes, least recently used out first
//! (the saved copies stay on disk), and what they held is handed back to the
//! system once enough of it was let go.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

use super::FsError;
use super::listing::{self, Entry, InFlight};
use crate::mirror::Mirror;
use crate::store::{Escaped, ObjectStore, StoreError};
use crate::sys;

/// After a failed listing, how long S3 is not asked again for that directory's
/// listing, or for any listing when the endpoint could not be reached (reads
/// still try).
pub const OFFLINE_BACKOFF: Duration = Duration::from_secs(30);
/// Directories whose back-off is remembered at once (the oldest are let go).
const BACKOFF_MAX: usize = 4096;
/// When a directory is read, the listings of its subdirectories are fetched ahead
/// in the background (at most `LIST_AHEAD_MAX` of them, `LIST_AHEAD_AT_ONCE` at a
/// time), so a walk such as `find` pays S3 latency about once per level, not once
/// per directory.
pub const LIST_AHEAD_MAX: usize = 64;
pub const LIST_AHEAD_AT_ONCE: usize = 8;
/// Bytes of memory the cached listings take in all (each entry with its name,
/// each listing with its prefix); the least recently used listings are dropped
/// first, never the one just cached.
pub const LISTED_BYTES_MAX: usize = 24 << 20;
/// Once listings of this many bytes have been dropped, the allocator is asked to
/// hand its free memory back to the system.
const RELEASE_AFTER: usize = 16 << 20;
/// Answers of LISTs of one name kept for the TTL (least recently used out first).
pub const NAMED_MAX: usize = 65_536;
/// Entries a directory's last listing may have for a lookup in it to list it
/// whole (one request, as S3 gives up to 1,000 keys a page) rather than its
/// one name: every lookup in it then shares that one request.
pub const ONE_PAGE_ENTRIES: usize = 1000;

/// Directory listings by key prefix. Cheap to share: the look-ahead tasks hold it.
pub struct ListingCache {
    shared: Arc<Shared>,
    rt: Handle,
}

struct Shared {
    store: Arc<dyn ObjectStore>,
    mirror: Arc<Mirror>,
    ttl: Duration,
    rt: Handle,
    listings: Mutex<Listings>,
    inflight: Arc<InFlight>,
    ahead: Semaphore,
    /// Until when S3 is not asked for listings at all: its endpoint was unreachable.
    unreachable_until: Mutex<Option<Instant>>,
    /// Until when S3 is not asked for one directory's listing, by prefix.
    failed_until: Mutex<LruCache<String, Instant>>,
    /// What a LIST of one name answered (`None`: absent), and when, by key.
    named: Mutex<LruCache<String, (Instant, Option<Entry>)>>,
}

struct Listing {
    /// When S3 gave it; `None` for one that was never fresh (rebuilt from the mirror).
    fetched: Option<Instant>,
    entries: Arc<Vec<Entry>>,
    /// About how many bytes it takes, its prefix included.
    weight: usize,
}

impl Listing {
    fn new(prefix: &str, fetched: Option<Instant>, entries: Arc<Vec<Entry>>) -> Listing {
        let fixed = std::mem::size_of::<Listing>() + 64 + 2 * prefix.len();
        let weight = fixed + entries.iter().map(Entry::weight).sum::<usize>();
        Listing {
            fetched,
            entries,
            weight,
        }
    }
}

/// Listings by prefix, least recently used first, within a budget of bytes.
struct Listings {
    lru: LruCache<String, Listing>,
    weight: usize,
    budget: usize,
    /// Bytes of listings dropped since the allocator last gave memory back.
    dropped: usize,
}

impl Listings {
    fn new(budget: usize) -> Listings {
        Listings {
            lru: LruCache::unbounded(),
            weight: 0,
            budget,
            dropped: 0,
        }
    }

    fn get(&mut self, prefix: &str) -> Option<&Listing> {
        self.lru.get(prefix)
    }

    fn contains(&self, prefix: &str) -> bool {
        self.lru.contains(prefix)
    }

    /// How many entries the cached listing of `prefix` has, however old.
    fn peek_len(&self, prefix: &str) -> Option<usize> {
        self.lru.peek(prefix).map(|l| l.entries.len())
    }

    /// Caches `listing`, dropping the least recently used ones beyond the
    /// budget. True when enough was dropped that the allocator should give
    /// memory back.
    fn insert(&mut self, prefix: String, listing: Listing) -> bool {
        self.weight += listing.weight;
        if let Some(old) = self.lru.put(prefix, listing) {
            self.weight -= old.weight;
            self.dropped += old.weight;
        }
        while self.weight > self.budget && self.lru.len() > 1 {
            let Some((_, oldest)) = self.lru.pop_lru() else {
                break;
            };
            self.weight -= oldest.weight;
            self.dropped += oldest.weight;
        }
        let release = self.dropped >= RELEASE_AFTER;
        if release {
            self.dropped = 0;
        }
        release
    }
}

impl ListingCache {
    /// An empty cache over `store`, persisting listings into `mirror`.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        mirror: Arc<Mirror>,
        ttl: Duration,
        rt: Handle,
    ) -> ListingCache {
        ListingCache::with_budget(store, mirror, ttl, rt, LISTED_BYTES_MAX)
    }

    /// `new`, keeping about `budget` bytes of listings in memory.
    fn with_budget(
        store: Arc<dyn ObjectStore>,
        mirror: Arc<Mirror>,
        ttl: Duration,
        rt: Handle,
        budget: usize,
    ) -> ListingCache {
        let shared = Shared {
            store,
            mirror,
            ttl,
            rt: rt.clone(),
            listings: Mutex::new(Listings::new(budget)),
            inflight: Arc::default(),
            ahead: Semaphore::new(LIST_AHEAD_AT_ONCE),
            unreachable_until: Mutex::new(None),
            failed_until: Mutex::new(LruCache::new(
                NonZeroUsize::new(BACKOFF_MAX).expect("not zero"),
            )),
            named: Mutex::new(LruCache::new(
                NonZeroUsize::new(NAMED_MAX).expect("not zero"),
            )),
        };
        ListingCache {
            shared: Arc::new(shared),
            rt,
        }
    }

    /// The cached listing of `prefix`, if younger than the TTL.
    #[cfg(test)]
    pub fn fresh(&self, prefix: &str) -> Option<Arc<Vec<Entry>>> {
        self.shared.fresh(prefix)
    }

    /// The cached listing of `prefix`, however old.
    pub fn cached(&self, prefix: &str) -> Option<Arc<Vec<Entry>>> {
        let mut listings = self.shared.listings.lock();
        listings.get(prefix).map(|l| Arc::clone(&l.entries))
    }

    /// The listing of `prefix`: cached, else from S3, else persisted, else rebuilt
    /// from the mirror. S3 being away is a warning, not an error to the reader,
    /// as long as something is known of the directory; else EIO (and nothing is
    /// cached, so the next try after the back-off asks S3 again).
    /// Blocks on S3; never call it from the runtime's own threads.
    pub fn entries(&self, prefix: &str) -> Result<Arc<Vec<Entry>>, FsError> {
        self.entries_asking(prefix, true)
            .map(|entries| entries.expect("S3 was asked"))
    }

    /// `entries` when it needs no request to S3 and no wait for one in flight;
    /// `Ok(None)` when it would.
    pub fn entries_now(&self, prefix: &str) -> Result<Option<Arc<Vec<Entry>>>, FsError> {
        self.entries_asking(prefix, false)
    }

    fn entries_asking(&self, prefix: &str, ask: bool) -> Result<Option<Arc<Vec<Entry>>>, FsError> {
        let shared = &self.shared;
        if let Some(entries) = shared.fresh(prefix) {
            return Ok(Some(entries));
        }
        // After a restart, a saved listing younger than the TTL is as good as a new one.
        if !shared.listings.lock().contains(prefix)
            && let Some(entries) = shared.load_young(prefix)
        {
            return Ok(Some(entries));
        }
        let failure = match shared.backing_off(prefix) {
            true => None,
            false if !ask => return Ok(None),
            false => match self.list_now(prefix) {
                Ok(entries) => return Ok(Some(entries)),
                Err(e) => e,
            },
        };
        if let Some(entries) = shared.fall_back(prefix) {
            return Ok(Some(entries));
        }
        let err = FsError::new(
            libc::EIO,
            format!(
                "cannot list {}/ and nothing of it is saved",
                Escaped(prefix.trim_end_matches('/'))
            ),
        );
        Err(match failure {
            Some(cause) => err.caused_by(cause),
            None => err,
        })
    }

    /// Lists `prefix` from S3, or takes the listing another reader or a
    /// look-ahead is bringing: one listing of a directory is in flight at a
    /// time, and the others wait for it. A failure holds further listings of it
    /// off for a while (of every directory, if the endpoint could not be
    /// reached); `Err(None)` when the listing waited for failed.
    fn list_now(&self, prefix: &str) -> Result<Arc<Vec<Entry>>, Option<StoreError>> {
        let shared = &self.shared;
        let _claim = loop {
            if let Some(claim) = shared.inflight.begin(prefix) {
                break claim;
            }
            shared.inflight.wait(prefix);
            if let Some(entries) = shared.fresh(prefix) {
                return Ok(entries);
            }
            if shared.backing_off(prefix) {
                return Err(None);
            }
        };
        // One may have landed between the caller's look and the claim.
        if let Some(entries) = shared.fresh(prefix) {
            return Ok(entries);
        }
        let listed = listing::list_dir(shared.store.as_ref(), prefix);
        match self.rt.block_on(listed) {
            Ok(entries) => {
                shared.answered(prefix);
                Ok(shared.keep(prefix, entries))
            }
            Err(e) => {
                shared.failed(prefix, &e);
                Err(Some(e))
            }
        }
    }

    /// What `name` is in directory `prefix`: from its listing while that is
    /// fresh; else from a new listing of it when the last one fit in one page
    /// or one is already on its way (lookups of any names share it); else from
    /// a LIST of that one name (its answer, absent too, kept for the TTL; one in
    /// flight a name), so a lookup in a big directory does not list all of it.
    /// With S3 away, from what `entries` falls back on.
    /// Blocks on S3; never call it from the runtime's own threads.
    pub fn entry(&self, prefix: &str, name: &str) -> Result<Option<Entry>, FsError> {
        self.entry_asking(prefix, name, true)
            .map(|answer| answer.expect("S3 was asked"))
    }

    /// `entry` when it needs no request to S3 and no wait for one in flight;
    /// `Ok(None)` when it would.
    pub fn entry_now(&self, prefix: &str, name: &str) -> Result<Option<Option<Entry>>, FsError> {
        self.entry_asking(prefix, name, false)
    }

    fn entry_asking(
        &self,
        prefix: &str,
        name: &str,
        ask: bool,
    ) -> Result<Option<Option<Entry>>, FsError> {
        let shared = &self.shared;
        let find = |entries: &[Entry]| {
            let at = entries.binary_search_by(|e| (*e.name).cmp(name));
            Some(at.ok().map(|at| entries[at].clone()))
        };
        if let Some(entries) = shared.fresh(prefix) {
            return Ok(find(&entries));
        }
        if !shared.listings.lock().contains(prefix)
            && let Some(entries) = shared.load_young(prefix)
        {
            return Ok(find(&entries));
        }
        if !listing::valid_name(name) {
            return Ok(Some(None));
        }
        let key = format!("{prefix}{name}");
        // A failed LIST of one name backs off that name (never a directory prefix:
        // it does not end in `/`), not its whole directory.
        let failure = match shared.backing_off(prefix) || shared.backing_off(&key) {
            true => None,
            false if !ask => return Ok(shared.named_within(&key, shared.ttl)),
            false => match self.ask(prefix, name, &key) {
                Ok(answer) => return Ok(Some(answer)),
                Err(e) => e,
            },
        };
        // S3 is away: the last answer for the name, however old, else the
        // directory's last listing; never a new listing of the whole directory.
        if let Some(answer) = shared.named_within(&key, Duration::MAX) {
            return Ok(Some(answer));
        }
        if let Some(entries) = shared.fall_back(prefix) {
            return Ok(find(&entries));
        }
        let err = FsError::new(
            libc::EIO,
            format!(
                "cannot look up {} and nothing of it is saved",
                Escaped(&key)
            ),
        );
        Err(match failure {
            Some(cause) => err.caused_by(cause),
            None => err,
        })
    }

    /// What `name` is, from S3: from a listing of the whole directory when that
    /// costs one request or is on its way already, else from a LIST of the name.
    fn ask(
        &self,
        prefix: &str,
        name: &str,
        key: &str,
    ) -> Result<Option<Entry>, Option<StoreError>> {
        let shared = &self.shared;
        if let Some(answer) = shared.named_within(key, shared.ttl) {
            return Ok(answer);
        }
        let last = shared.listings.lock().peek_len(prefix);
        let small = last.is_some_and(|n| n <= ONE_PAGE_ENTRIES);
        let big = last.is_some_and(|n| n > ONE_PAGE_ENTRIES);
        if small || (!big && shared.inflight.contains(prefix)) {
            let entries = self.list_now(prefix)?;
            let at = entries.binary_search_by(|e| (*e.name).cmp(name));
            return Ok(at.ok().map(|at| entries[at].clone()));
        }
        self.list_name(prefix, name, key)
    }

    /// The answer of a LIST of `name` alone, or of one in flight, or a fresh
    /// one kept. `Err(None)` when the LIST waited for failed.
    fn list_name(
        &self,
        prefix: &str,
        name: &str,
        key: &str,
    ) -> Result<Option<Entry>, Option<StoreError>> {
        let shared = &self.shared;
        let flight = format!("{key}\0");
        let _claim = loop {
            if let Some(answer) = shared.named_within(key, shared.ttl) {
                return Ok(answer);
            }
            if let Some(claim) = shared.inflight.begin(&flight) {
                // A LIST of the name may have landed between the look and the
                // claim: its answer is as good as a new one.
                if let Some(answer) = shared.named_within(key, shared.ttl) {
                    return Ok(answer);
                }
                break claim;
            }
            shared.inflight.wait(&flight);
            if shared.backing_off(key) {
                return Err(None);
            }
        };
        let store = shared.store.as_ref();
        match self.rt.block_on(listing::list_name(store, prefix, name)) {
            Ok(answer) => {
                shared.answered(key);
                let named = (Instant::now(), answer.clone());
                shared.named.lock().put(key.to_string(), named);
                Ok(answer)
            }
            Err(e) => {
                shared.failed(key, &e);
                Err(Some(e))
            }
        }
    }

    /// Calls `then` with the listing of `prefix`: now if one is cached, else once
    /// a background listing brought it (not at all if that failed, or a listing
    /// of it was already on its way). For work that needs a whole directory
    /// after a lookup listed only one name of it.
    pub fn then_listed(&self, prefix: &str, then: impl FnOnce(Arc<Vec<Entry>>) + Send + 'static) {
        if let Some(entries) = self.cached(prefix) {
            return then(entries);
        }
        let shared = Arc::clone(&self.shared);
        let prefix = prefix.to_string();
        self.rt.spawn(async move {
            Arc::clone(&shared).list_ahead_one(prefix.clone()).await;
            if let Some(entries) = shared.listings.lock().get(&prefix) {
                then(Arc::clone(&entries.entries));
            }
        });
    }

    /// Lists the subdirectories of `parent` in the background, bounded, skipping
    /// those cached or already on their way. Best effort: a failure only means the
    /// reader lists the directory itself when it gets there.
    pub fn list_ahead(&self, parent: &str, entries: &[Entry]) {
        let shared = &self.shared;
        if shared.unreachable() {
            return;
        }
        let prefixes: Vec<String> = entries
            .iter()
            .filter(|e| e.dir)
            .map(|e| format!("{parent}{}/", e.name))
            .filter(|p| shared.fresh(p).is_none() && !shared.inflight.contains(p))
            .filter(|p| !shared.backing_off(p))
            .take(LIST_AHEAD_MAX)
            .collect();
        for prefix in prefixes {
            self.rt.spawn(Arc::clone(shared).list_ahead_one(prefix));
        }
    }
}

impl Shared {
    fn fresh(&self, prefix: &str) -> Option<Arc<Vec<Entry>>> {
        self.listings
            .lock()
            .get(prefix)
            .filter(|l| l.fetched.is_some_and(|t| t.elapsed() < self.ttl))
            .map(|l| Arc::clone(&l.entries))
    }

    /// S3 answered a listing of `prefix`: its back-off, if any, is over.
    fn answered(&self, prefix: &str) {
        *self.unreachable_until.lock() = None;
        self.failed_until.lock().pop(prefix);
    }

    /// S3 failed a listing of `prefix`: it is left alone for a while (and
    /// every directory is, if the endpoint could not be reached).
    fn failed(&self, prefix: &str, e: &StoreError) {
        tracing::warn!(
            prefix = %Escaped(prefix),
            "cannot list S3 ({e}); serving what the mirror knows"
        );
        let until = Instant::now() + OFFLINE_BACKOFF;
        self.failed_until.lock().put(prefix.to_string(), until);
        if matches!(e, StoreError::Unreachable { .. }) {
            *self.unreachable_until.lock() = Some(until);
        }
    }

    /// A LIST's answer for the key `key`, if younger than `age`.
    fn named_within(&self, key: &str, age: Duration) -> Option<Option<Entry>> {
        let mut named = self.named.lock();
        let (at, answer) = named.get(key)?;
        (at.elapsed() < age).then(|| answer.clone())
    }

    /// Whether S3's endpoint was unreachable lately.
    fn unreachable(&self) -> bool {
        self.unreachable_until
            .lock()
            .is_some_and(|until| Instant::now() < until)
    }

    /// Whether S3 is not to be asked for the listing of `prefix` now.
    fn backing_off(&self, prefix: &str) -> bool {
        let now = Instant::now();
        self.unreachable()
            || self
                .failed_until
                .lock()
                .peek(prefix)
                .is_some_and(|&t| now < t)
    }

    /// The persisted listing of `prefix`, cached, if younger than the TTL.
    fn load_young(&self, prefix: &str) -> Option<Arc<Vec<Entry>>> {
        let (entries, age) = listing::load(&self.mirror, self.store.bucket(), prefix)?;
        (age < self.ttl).then(|| self.remember(prefix, entries, Some(age)))
    }

    /// Persists and caches a listing S3 just gave.
    fn keep(&self, prefix: &str, entries: Vec<Entry>) -> Arc<Vec<Entry>> {
        listing::persist(&self.mirror, self.store.bucket(), prefix, &entries);
        self.remember(prefix, entries, Some(Duration::ZERO))
    }

    /// With S3 away: the last listing seen, else the persisted one however old,
    /// else what the mirror holds; `None` when nothing is known of the directory
    /// (an empty directory rebuilt from the mirror tells nothing). Cached as it
    /// is, never as fresh: the back-off keeps S3 from being asked meanwhile.
    fn fall_back(&self, prefix: &str) -> Option<Arc<Vec<Entry>>> {
        let cached = self
            .listings
            .lock()
            .get(prefix)
            .map(|l| Arc::clone(&l.entries));
        if cached.is_some() {
            return cached;
        }
        if let Some((entries, age)) = listing::load(&self.mirror, self.store.bucket(), prefix) {
            return Some(self.remember(prefix, entries, Some(age)));
        }
        let rebuilt = listing::from_mirror(&self.mirror, prefix).filter(|e| !e.is_empty())?;
        Some(self.remember(prefix, rebuilt, None))
    }

    /// Caches a listing as fetched `age` ago (`None`: never fresh), and returns it.
    fn remember(
        &self,
        prefix: &str,
        entries: Vec<Entry>,
        age: Option<Duration>,
    ) -> Arc<Vec<Entry>> {
        let entries = Arc::new(entries);
        let fetched = age.and_then(|age| Instant::now().checked_sub(age));
        let listing = Listing::new(prefix, fetched, Arc::clone(&entries));
        if self.listings.lock().insert(prefix.to_string(), listing) {
            // Off the caller's path: it walks every heap of the allocator.
            self.rt.spawn_blocking(sys::release_free_memory);
        }
        entries
    }

    /// One look-ahead listing, once a permit lets it start.
    async fn list_ahead_one(self: Arc<Self>, prefix: String) {
        let Ok(_permit) = self.ahead.acquire().await else {
            return;
        };
        // Claimed only once it can start, so a reader never waits on a queued one.
        let fresh = self.fresh(&prefix).is_some();
        let Some(_claim) = (!fresh).then(|| self.inflight.begin(&prefix)).flatten() else {
            return;
        };
        // After a restart, a saved listing younger than the TTL will do.
        if self.load_young(&prefix).is_some() {
            return;
        }
        match listing::list_dir(self.store.as_ref(), &prefix).await {
            Ok(entries) => {
                self.keep(&prefix, entries);
            }
            Err(e) => tracing::debug!(prefix = %Escaped(&prefix), "look-ahead listing failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::store::failing::{FailingStore, slow_down};
    use crate::store::memory::MemoryStore;
    use crate::testing::{Scratch, runtime};

    struct Fixture {
        cache: ListingCache,
        scratch: Scratch,
        rt: tokio::runtime::Runtime,
    }

    fn fixture(ttl: Duration) -> Fixture {
        let rt = runtime(1);
        let keys = ["a/1", "a/2", "b/3", "b/c/4", "top"];
        let scratch = Scratch::new(&keys.map(|k| (k, &b"x"[..])));
        let mirror = Arc::clone(&scratch.mirror);
        let cache = ListingCache::new(
            scratch.store(),
            Arc::clone(&mirror),
            ttl,
            rt.handle().clone(),
        );
        Fixture { cache, scratch, rt }
    }

    fn names(entries: &[Entry]) -> Vec<&str> {
        entries.iter().map(|e| &*e.name).collect()
    }

    fn lists(f: &Fixture) -> u64 {
        f.scratch.store.lists.load(Ordering::Relaxed)
    }

    #[test]
    fn a_listing_is_asked_for_once_per_ttl() {
        let f = fixture(Duration::from_secs(60));
        assert_eq!(names(&f.cache.entries("a/").unwrap()), ["1", "2"]);
        assert_eq!(lists(&f), 1);
        f.scratch.store.put("a/new", "x");
        assert_eq!(names(&f.cache.entries("a/").unwrap()), ["1", "2"], "cached");
        assert_eq!(lists(&f), 1);
        let expired = fixture(Duration::ZERO);
        expired.cache.entries("a/").unwrap();
        expired.cache.entries("a/").unwrap();
        assert_eq!(lists(&expired), 2, "no TTL: every call lists");
    }

    #[test]
    fn with_s3_away_the_last_listing_is_served_and_s3_left_alone_a_while() {
        let f = fixture(Duration::ZERO);
        f.cache.entries("a/").unwrap();
        f.scratch.store.set_offline(true);
        assert_eq!(
            names(&f.cache.entries("a/").unwrap()),
            ["1", "2"],
            "the last listing"
        );
        // The persisted listing serves a directory this process never cached...
        let other = fixture(Duration::ZERO);
        let restarted = ListingCache::new(
            Arc::clone(&other.scratch.store) as Arc<dyn ObjectStore>,
            Arc::clone(&f.scratch.mirror),
            Duration::ZERO,
            f.rt.handle().clone(),
        );
        other.scratch.store.set_offline(true);
        assert_eq!(names(&restarted.entries("a/").unwrap()), ["1", "2"]);
        // ...and after one failure S3 is not asked again during the back-off.
        let asked = lists(&other);
        other.scratch.store.set_offline(false);
        let err = restarted.entries("b/").unwrap_err();
        assert_eq!(err.errno(), libc::EIO, "nothing known of b/: {err}");
        assert_eq!(lists(&other), asked);
    }

    #[test]
    fn a_failing_directory_backs_off_alone_and_fails_until_something_is_known() {
        let rt = runtime(1);
        let memory = MemoryStore::new("b");
        for key in ["a/1", "b/2", "c/3"] {
            memory.put(key, "x");
        }
        let store = Arc::new(FailingStore::new(memory));
        let scratch = Scratch::new(&[]);
        let cache = ListingCache::new(
            Arc::clone(&store) as Arc<dyn ObjectStore>,
            Arc::clone(&scratch.mirror),
            Duration::ZERO,
            rt.handle().clone(),
        );
        store.fail_list(1, slow_down("ListObjectsV2", "a/"));
        let err = cache.entries("a/").unwrap_err();
        assert_eq!(err.errno(), libc::EIO);
        assert!(err.chain().contains("cannot list a/"), "{}", err.chain());
        assert!(
            err.chain().contains("SlowDown"),
            "the cause: {}",
            err.chain()
        );
        assert!(cache.cached("a/").is_none(), "nothing is cached");
        // Other directories are still listed from S3; a/ is left alone a while.
        assert_eq!(names(&cache.entries("b/").unwrap()), ["2"]);
        assert_eq!(cache.entries("a/").unwrap_err().errno(), libc::EIO);
        assert_eq!(store.lists(), 2, "a/ once, b/ once");
        // Once b/ is known, a failure of its own serves the last listing.
        store.fail_list(3, slow_down("ListObjectsV2", "b/"));
        assert_eq!(names(&cache.entries("b/").unwrap()), ["2"]);
        assert_eq!(names(&cache.entries("c/").unwrap()), ["3"]);
        assert_eq!(store.lists(), 4);
    }

    #[test]
    fn one_listing_of_a_directory_is_in_flight_and_the_others_wait_for_it() {
        let f = fixture(Duration::from_secs(60));
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| assert_eq!(names(&f.cache.entries("a/").unwrap()), ["1", "2"]));
            }
        });
        assert_eq!(lists(&f), 1);
    }

    /// A cache over a directory `big/` of more names than one page of a
    /// listing shows, besides the fixture's keys.
    fn with_big_dir(f: &Fixture, ttl: Duration) -> ListingCache {
        for i in 0..=ONE_PAGE_ENTRIES {
            f.scratch.store.put(&format!("big/{i:05}"), "x");
        }
        ListingCache::new(
            f.scratch.store(),
            Arc::clone(&f.scratch.mirror),
            ttl,
            f.rt.handle().clone(),
        )
    }

    #[test]
    fn after_the_ttl_a_lookup_in_a_big_directory_lists_its_name_alone_and_keeps_the_answer() {
        let ttl = Duration::from_millis(300);
        let f = fixture(ttl);
        let cache = with_big_dir(&f, ttl);
        cache.entries("big/").unwrap();
        let listed = lists(&f);
        assert_eq!(
            &*cache.entry("big/", "00001").unwrap().unwrap().name,
            "00001"
        );
        assert_eq!(lists(&f), listed, "fresh: from the listing");
        std::thread::sleep(ttl);
        f.scratch.store.put("big/new", "x");
        assert!(
            cache.entry("big/", "new").unwrap().is_some(),
            "seen after the TTL"
        );
        assert!(cache.entry("big/", "gone").unwrap().is_none());
        assert_eq!(lists(&f), listed + 2, "one small LIST per name");
        cache.entry("big/", "new").unwrap();
        cache.entry("big/", "gone").unwrap();
        assert_eq!(
            lists(&f),
            listed + 2,
            "answers, absent too, are kept for the TTL"
        );
        assert!(
            cache.fresh("big/").is_none(),
            "the directory was not listed again"
        );
        // With S3 away, the last answer for a name stands, else the last listing.
        f.scratch.store.set_offline(true);
        std::thread::sleep(ttl);
        assert!(cache.entry("big/", "new").unwrap().is_some());
        assert!(cache.entry("big/", "00002").unwrap().is_some());
        let err = cache.entry("never/", "x").unwrap_err();
        assert_eq!(err.errno(), libc::EIO, "{err}");
    }

    #[test]
    fn after_the_ttl_lookups_in_a_small_directory_share_one_listing_of_it() {
        let ttl = Duration::from_millis(200);
        let f = fixture(ttl);
        f.cache.entries("a/").unwrap();
        std::thread::sleep(ttl);
        f.scratch.store.put("a/new", "x");
        let listed = lists(&f);
        std::thread::scope(|scope| {
            for name in ["1", "2", "new", "gone"].repeat(4) {
                let cache = &f.cache;
                scope.spawn(move || {
                    let found = cache.entry("a/", name).unwrap();
                    assert_eq!(found.is_some(), name != "gone", "{name}");
                });
            }
        });
        assert_eq!(
            lists(&f),
            listed + 1,
            "one listing for 16 lookups of 4 names"
        );
        assert!(f.cache.fresh("a/").is_some(), "which is kept");
    }

    #[test]
    fn concurrent_lookups_in_a_big_directory_list_each_name_once_and_never_all_of_it() {
        // Long enough that 16 threads on a loaded machine all start within it.
        let ttl = Duration::from_secs(1);
        let f = fixture(ttl);
        let cache = with_big_dir(&f, ttl);
        cache.entries("big/").unwrap();
        std::thread::sleep(ttl);
        let listed = lists(&f);
        let together = std::sync::Barrier::new(16);
        std::thread::scope(|scope| {
            for _ in 0..16 {
                let (cache, together) = (&cache, &together);
                scope.spawn(move || {
                    together.wait();
                    assert!(cache.entry("big/", "00007").unwrap().is_some())
                });
            }
        });
        assert_eq!(lists(&f), listed + 1, "16 lookups of one name: one LIST");
        std::thread::scope(|scope| {
            for i in 0..16 {
                let (cache, together) = (&cache, &together);
                let name = format!("{:05}", 100 + i);
                scope.spawn(move || {
                    together.wait();
                    assert!(cache.entry("big/", &name).unwrap().is_some())
                });
            }
        });
        assert_eq!(
            lists(&f),
            listed + 1 + 16,
            "a LIST of a name each, not 2 pages"
        );
        assert!(
            cache.fresh("big/").is_none(),
            "the directory was not listed"
        );
    }

    #[test]
    fn a_lookup_waits_for_a_listing_of_its_directory_on_its_way() {
        let f = fixture(Duration::from_secs(60));
        let root = f.cache.entries("").unwrap();
        // The look-ahead claims b/ before the lookup asks.
        let claim = f.cache.shared.inflight.begin("b/").unwrap();
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| f.cache.entry("b/", "3").unwrap());
            std::thread::sleep(Duration::from_millis(100));
            assert!(!waiter.is_finished(), "it waits for the listing");
            let listed = listing::list_dir(f.scratch.store.as_ref(), "b/");
            let entries = f.rt.block_on(listed).unwrap();
            f.cache.shared.keep("b/", entries);
            drop(claim);
            assert!(waiter.join().unwrap().is_some());
        });
        assert_eq!(lists(&f), 2, "the root and b/; no LIST of b/3");
        drop(root);
    }

    #[test]
    fn listings_in_memory_are_bounded_by_their_bytes() {
        let f = fixture(Duration::from_secs(60));
        let weight = |prefix: &str| {
            let listed = listing::list_dir(f.scratch.store.as_ref(), prefix);
            let entries = Arc::new(f.rt.block_on(listed).unwrap());
            Listing::new(prefix, None, entries).weight
        };
        // Room for all three but one byte: the root is one listing too many.
        let budget = weight("a/") + weight("b/") + weight("") - 1;
        let cache = ListingCache::with_budget(
            f.scratch.store(),
            Arc::clone(&f.scratch.mirror),
            Duration::from_secs(60),
            f.rt.handle().clone(),
            budget,
        );
        let asked = lists(&f);
        cache.entries("a/").unwrap();
        cache.entries("b/").unwrap();
        assert!(cache.fresh("a/").is_some() && cache.fresh("b/").is_some());
        cache.entries("a/").unwrap();
        cache.entries("").unwrap();
        assert!(cache.fresh("b/").is_none(), "the least recently used went");
        assert!(cache.fresh("a/").is_some() && cache.fresh("").is_some());
        // Dropped from memory, a listing young enough is read back from disk.
        let asked = asked + 3;
        assert_eq!(lists(&f), asked);
        assert_eq!(names(&cache.entries("b/").unwrap()), ["3", "c"]);
        assert_eq!(lists(&f), asked, "no LIST");
    }

    #[test]
    fn subdirectories_are_listed_ahead_in_the_background() {
        let f = fixture(Duration::from_secs(60));
        let root = f.cache.entries("").unwrap();
        f.cache.list_ahead("", &root);
        let deadline = Instant::now() + Duration::from_secs(10);
        while f.cache.fresh("a/").is_none() || f.cache.fresh("b/").is_none() {
            assert!(Instant::now() < deadline, "look-ahead listings arrive");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(lists(&f), 3, "the root, a/ and b/; not b/c/");
        assert!(f.cache.fresh("b/c/").is_none());
        // Nothing left to list ahead: no request.
        f.cache.list_ahead("", &root);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(lists(&f), 3);
    }
}
