//! Listing a large prefix with many requests at once, with exactly the keys a
//! serial listing returns, in the same order.
//!
//! The key space is cut into parts listed at once:
//! - a directory (a prefix ending in `/`) is first asked for one page grouped
//!   at the next `/`; when that page holds the whole directory, its objects are
//!   done and each of its subdirectories becomes a part of its own;
//! - a directory too big for one grouped page is listed flat, as a range of
//!   keys `(after, upto]`. Each range lists page after page; whenever fewer parts
//!   are waiting than there are workers, a range splits what it has not listed
//!   yet at points taken from the keys it has seen (see `split_points`), keeps
//!   the first piece and hands the others out.
//!
//! Parts never overlap and together cover the prefix, so sorting the parts by
//! their first key gives the serial listing. A page that fails with an error
//! that may pass (S3 unreachable, throttling, 5xx, timeouts) is asked again
//! with backoff for `retry_for`; after that the listing stops and returns what
//! it has, with the error, so a caller can still use the keys it got.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::raw_bytes::bytes_of;
use super::{ListPage, ObjectMeta, ObjectStore, StoreError};

/// Keys per page asked for (S3's most).
pub const PAGE_KEYS: u32 = 1000;
/// Most boundaries one split hands out.
const MAX_SPLIT: usize = 48;

/// How a listing runs.
#[derive(Clone, Debug)]
pub struct SplitOptions {
    /// Requests in flight at most.
    pub workers: usize,
    /// How long a page that keeps failing is asked again before the listing gives up.
    pub retry_for: Duration,
    /// The first pause between two attempts of a page; it doubles up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for SplitOptions {
    fn default() -> Self {
        SplitOptions {
            workers: 16,
            retry_for: Duration::from_secs(5 * 60),
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// What a listing found: every key under the prefix in S3's order, or, when
/// it gave up, the keys it listed before (`error` says why it stopped).
#[derive(Debug, Default)]
pub struct Listing {
    pub objects: Vec<ObjectMeta>,
    pub error: Option<StoreError>,
}

/// One part of the key space.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    /// Every key under `prefix`, which ends in `/` (or is empty).
    Dir { prefix: String },
    /// The keys under `scope` after `after` (from the first when `None`), up to
    /// and including `upto` (to the last when `None`).
    Range {
        scope: String,
        after: Option<String>,
        upto: Option<String>,
    },
}

/// What listing one part gave: its keys (runs of consecutive keys, each in
/// order) and the parts it handed out.
struct Listed {
    runs: Vec<Vec<ObjectMeta>>,
    parts: Vec<Part>,
    error: Option<StoreError>,
}

/// Lists every object under `prefix`, `options.workers` requests at once.
pub async fn list_split(
    store: Arc<dyn ObjectStore>,
    prefix: &str,
    options: &SplitOptions,
) -> Listing {
    let workers = options.workers.max(1);
    // One worker lists page after page, as a serial listing does.
    let first = if workers > 1 && (prefix.is_empty() || prefix.ends_with('/')) {
        Part::Dir {
            prefix: prefix.to_string(),
        }
    } else {
        Part::Range {
            scope: prefix.to_string(),
            after: None,
            upto: None,
        }
    };
    // Parts waiting or being listed: a range splits only while this is below the target.
    let open = Arc::new(AtomicUsize::new(1));
    // Whether S3 answered a page yet: until it has, a page that cannot reach it
    // is a wrong endpoint or no network, reported at once rather than retried.
    let answered = Arc::new(AtomicBool::new(false));
    let mut waiting = vec![first];
    let mut running = JoinSet::new();
    let mut done: Vec<Vec<ObjectMeta>> = Vec::new();
    let mut error = None;
    loop {
        while error.is_none() && running.len() < workers {
            let Some(part) = waiting.pop() else { break };
            let store = Arc::clone(&store);
            let open = Arc::clone(&open);
            let answered = Arc::clone(&answered);
            let options = options.clone();
            // Parts wanted: enough to keep every worker busy, none for one worker.
            let want = if workers == 1 { 0 } else { 2 * workers };
            running.spawn(async move {
                let retry = Retry {
                    options: &options,
                    answered: &answered,
                };
                list_part(store.as_ref(), part, &retry, || {
                    open.load(Ordering::Relaxed) < want
                })
                .await
            });
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let listed = match joined {
            Ok(listed) => listed,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        done.extend(listed.runs.into_iter().filter(|run| !run.is_empty()));
        open.fetch_add(listed.parts.len(), Ordering::Relaxed);
        open.fetch_sub(1, Ordering::Relaxed);
        waiting.extend(listed.parts);
        if error.is_none() {
            error = listed.error;
        }
    }
    done.sort_by(|a, b| bytes_of(a[0].key.as_str()).cmp(&bytes_of(b[0].key.as_str())));
    let mut objects = Vec::with_capacity(done.iter().map(Vec::len).sum());
    for part in done {
        objects.extend(part);
    }
    Listing { objects, error }
}

/// Lists one part; `split_wanted` tells whether more parts would keep the
/// workers busy.
async fn list_part(
    store: &dyn ObjectStore,
    part: Part,
    retry: &Retry<'_>,
    split_wanted: impl Fn() -> bool,
) -> Listed {
    match part {
        Part::Dir { prefix } => list_dir(store, prefix, retry).await,
        Part::Range { scope, after, upto } => {
            list_range(store, scope, after, upto, retry, split_wanted).await
        }
    }
}

/// One grouped page of a directory: when it is the whole directory, its objects
/// and its subdirectories as parts; otherwise the directory as one flat range.
async fn list_dir(store: &dyn ObjectStore, prefix: String, retry: &Retry<'_>) -> Listed {
    let page = retry.run(|| store.list_first(&prefix, PAGE_KEYS)).await;
    match page {
        Err(error) => Listed {
            runs: Vec::new(),
            parts: Vec::new(),
            error: Some(error),
        },
        Ok(page) if page.next.is_some() => Listed {
            runs: Vec::new(),
            parts: vec![Part::Range {
                scope: prefix,
                after: None,
                upto: None,
            }],
            error: None,
        },
        Ok(page) => Listed {
            runs: runs_between(page.objects, &page.prefixes),
            parts: page
                .prefixes
                .into_iter()
                .map(|prefix| Part::Dir { prefix })
                .collect(),
            error: None,
        },
    }
}

/// Lists the keys of `scope` in `(after, upto]` page by page, handing out
/// pieces of what is left when `split_wanted` says so.
async fn list_range(
    store: &dyn ObjectStore,
    scope: String,
    after: Option<String>,
    mut upto: Option<String>,
    retry: &Retry<'_>,
    split_wanted: impl Fn() -> bool,
) -> Listed {
    let mut listed = Listed {
        runs: vec![Vec::new()],
        parts: Vec::new(),
        error: None,
    };
    let mut token: Option<String> = None;
    loop {
        let page = retry
            .run(|| match (&token, &after) {
                (Some(token), _) => store.list_page(&scope, false, Some(token.clone())),
                (None, Some(after)) => store.list_after(&scope, after, PAGE_KEYS),
                (None, None) => store.list_page(&scope, false, None),
            })
            .await;
        let page = match page {
            Ok(page) => page,
            Err(error) => {
                listed.error = Some(error);
                return listed;
            }
        };
        let first = page.objects.first().map(|o| o.key.clone());
        for object in page.objects {
            if beyond(object.key.as_str(), upto.as_deref()) {
                return listed;
            }
            listed.runs[0].push(object);
        }
        let Some(next) = page.next else {
            return listed;
        };
        token = Some(next);
        let (Some(first), Some(last)) = (first, listed.runs[0].last()) else {
            continue;
        };
        if !split_wanted() {
            continue;
        }
        let last = last.key.as_str().to_string();
        let points = split_points(first.as_str(), &last, upto.as_deref(), scope.len());
        if points.is_empty() {
            continue;
        }
        // This part keeps (last, first point]; each point starts a part up to the next.
        for (i, point) in points.iter().enumerate() {
            let end = points.get(i + 1).cloned().or_else(|| upto.clone());
            listed.parts.push(Part::Range {
                scope: scope.clone(),
                after: Some(point.clone()),
                upto: end,
            });
        }
        upto = Some(points[0].clone());
    }
}

/// A directory's objects cut into runs that no subdirectory's keys fall between.
fn runs_between(objects: Vec<ObjectMeta>, prefixes: &[String]) -> Vec<Vec<ObjectMeta>> {
    let mut runs = vec![Vec::new()];
    let mut prefixes = prefixes.iter().map(|p| bytes_of(p)).peekable();
    for object in objects {
        let key = bytes_of(object.key.as_str()).into_owned();
        let mut passed = false;
        while prefixes.next_if(|p| p.as_ref() < key.as_slice()).is_some() {
            passed = true;
        }
        if passed && !runs.last().is_some_and(Vec::is_empty) {
            runs.push(Vec::new());
        }
        runs.last_mut().expect("never empty").push(object);
    }
    runs
}

/// Whether `key` lies past the inclusive end `upto`, in S3's (byte) order.
fn beyond(key: &str, upto: Option<&str>) -> bool {
    upto.is_some_and(|upto| bytes_of(key).as_ref() > upto.as_bytes())
}

/// How a page that fails is asked again.
struct Retry<'a> {
    options: &'a SplitOptions,
    answered: &'a AtomicBool,
}

impl Retry<'_> {
    /// Runs `request` until it succeeds, fails for good, or has failed for
    /// `retry_for`. Before S3 answered any page, only throttling and server
    /// errors are retried: an endpoint never reached is reported at once.
    async fn run<'a, F>(&self, request: F) -> Result<ListPage, StoreError>
    where
        F: Fn() -> super::BoxFuture<'a, Result<ListPage, StoreError>>,
    {
        let started = Instant::now();
        let mut pause = self.options.first_backoff;
        loop {
            let e = match request().await {
                Ok(page) => {
                    self.answered.store(true, Ordering::Relaxed);
                    return Ok(page);
                }
                Err(e) => e,
            };
            let again =
                e.is_throttling() || (e.is_transient() && self.answered.load(Ordering::Relaxed));
            if !again || started.elapsed() + pause > self.options.retry_for {
                return Err(e);
            }
            tracing::warn!("listing page failed, asking again in {pause:?}: {e}");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(self.options.max_backoff);
        }
    }
}

/// Points that cut the keys after `last` (up to `upto`) into pieces, each a
/// string after which a piece starts, in increasing order. Taken from `last`:
/// keys usually share a stem and vary at its end (`img-0004711.jpg`), so the
/// positions from where the page's keys start to differ back to the scope are
/// tried with the next characters of their class (digits and hex letters,
/// lowercase, uppercase): `img-00048`, `img-00049`, `img-0005`, ... Every point
/// sorts after `last` and before `upto`; a point with no key after it only
/// costs one request.
pub fn split_points(first: &str, last: &str, upto: Option<&str>, scope_len: usize) -> Vec<String> {
    let (first_b, last_b) = (first.as_bytes(), last.as_bytes());
    let varying = common_len(first_b, last_b).min(last_b.len().saturating_sub(1));
    let floor = match upto {
        Some(upto) => scope_len.max(common_len(last_b, upto.as_bytes())),
        None => scope_len,
    };
    let mut points = Vec::new();
    let mut at = varying + 1;
    while at > floor && points.len() < MAX_SPLIT {
        at -= 1;
        let c = last_b[at];
        if !c.is_ascii() {
            continue;
        }
        for next in class_after(c) {
            if points.len() == MAX_SPLIT {
                break;
            }
            let mut point = last[..at].to_string();
            point.push(next as char);
            let past_last = point.as_bytes() > last_b;
            let before_end = upto.is_none_or(|u| point.as_bytes() < u.as_bytes());
            if past_last && before_end {
                points.push(point);
            }
        }
    }
    points.sort();
    points.dedup();
    points
}

/// The characters after `c` in its class, in order.
fn class_after(c: u8) -> Vec<u8> {
    let range = |from: u8, to: u8| (from..=to).filter(|x| *x > c).collect::<Vec<u8>>();
    match c {
        b'0'..=b'9' => [range(b'0', b'9'), range(b'a', b'f')].concat(),
        b'a'..=b'z' => range(b'a', b'z'),
        b'A'..=b'Z' => range(b'A', b'Z'),
        _ => Vec::new(),
    }
}

fn common_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::list_all;
    use crate::store::memory::MemoryStore;

    fn keys(objects: &[ObjectMeta]) -> Vec<String> {
        objects.iter().map(|o| o.key.as_str().to_string()).collect()
    }

    #[test]
    fn points_follow_the_varying_digits() {
        let points = split_points("big/img-0000000", "big/img-0000999", None, 4);
        for cut in [
            "big/img-0001",
            "big/img-0009",
            "big/img-001",
            "big/img-009",
            "big/img-09",
        ] {
            assert!(points.contains(&cut.to_string()), "{cut} in {points:?}");
        }
        assert!(points.windows(2).all(|w| w[0] < w[1]));
        assert!(points.iter().all(|p| p.as_str() > "big/img-0000999"));
        assert!(points.len() <= MAX_SPLIT);
    }

    #[test]
    fn points_stay_inside_the_range() {
        let points = split_points("a/k0100000", "a/k0100999", Some("a/k02"), 2);
        assert!(!points.is_empty());
        for p in &points {
            assert!(p.as_str() > "a/k0100999" && p.as_str() < "a/k02", "{p}");
        }
        // Nothing to cut between two neighbours.
        assert!(split_points("a", "a0", Some("a1"), 0).is_empty());
    }

    /// Keys made to straddle the points a split picks: each point itself, the
    /// keys just before and after it, keys that extend it, and non-ASCII ones.
    fn straddling_keys() -> Vec<String> {
        let mut keys = Vec::new();
        for i in 0..3000u32 {
            keys.push(format!("flat/img-{i:07}"));
        }
        for p in split_points("flat/img-0000000", "flat/img-0000999", None, 5) {
            keys.push(p.clone());
            keys.push(format!("{p}0"));
            keys.push(format!("{p}/x"));
            keys.push(format!("{p}\u{e9}"));
            let mut before = p.clone().into_bytes();
            *before.last_mut().unwrap() -= 1;
            keys.push(String::from_utf8(before).unwrap());
        }
        for d in 0..40 {
            for f in 0..30 {
                keys.push(format!("tree/d{d:03}/f{f:03}.jpg"));
            }
        }
        keys.extend(["a", "a/", "a//b", "a-b", "z\u{10FFFF}", "tree/d000/"].map(String::from));
        keys
    }

    #[tokio::test]
    async fn a_split_listing_is_the_serial_listing() {
        let store = MemoryStore::new("b").with_page_size(50);
        for key in straddling_keys() {
            store.put(&key, vec![1]);
        }
        let store: Arc<dyn ObjectStore> = Arc::new(store);
        for prefix in ["", "flat/", "tree/", "flat/img-00", "nothing/"] {
            let serial = keys(&list_all(store.as_ref(), prefix).await.unwrap());
            for workers in [1, 4, 16] {
                let options = SplitOptions {
                    workers,
                    ..SplitOptions::default()
                };
                let listing = list_split(Arc::clone(&store), prefix, &options).await;
                assert!(listing.error.is_none());
                let split = keys(&listing.objects);
                assert_eq!(split.len(), serial.len(), "{prefix:?} with {workers}");
                assert!(
                    split == serial,
                    "{prefix:?} with {workers}: not the serial order"
                );
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Any set of keys, any page size, any number of workers: the split
        /// listing is the serial one.
        #[test]
        fn any_keys_list_as_serially(
            names in proptest::collection::btree_set("[ab09/.é-]{1,7}", 0..400),
            page in 1usize..30,
            workers in 1usize..20,
            prefix in proptest::sample::select(vec!["", "a", "a/", "0", "b/0"]),
        ) {
            let store = MemoryStore::new("b").with_page_size(page);
            for name in &names {
                store.put(name, vec![1]);
            }
            let store: Arc<dyn ObjectStore> = Arc::new(store);
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let (serial, split) = runtime.block_on(async {
                let serial = keys(&list_all(store.as_ref(), prefix).await.unwrap());
                let options = SplitOptions { workers, ..SplitOptions::default() };
                let listing = list_split(Arc::clone(&store), prefix, &options).await;
                assert!(listing.error.is_none());
                (serial, keys(&listing.objects))
            });
            proptest::prop_assert_eq!(split, serial);
        }
    }
}
