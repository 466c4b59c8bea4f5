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

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use super::raw_bytes::bytes_of;
use super::{ETag, Key, ListPage, ObjectMeta, ObjectStore, RestoreState, StorageClass, StoreError};
use crate::spool::{Sorted, Spool, SpoolRecord};

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
pub struct Listing {
    pub objects: ListedObjects,
    pub error: Option<StoreError>,
    /// It went on with an earlier listing's journal: the parts listed then are
    /// as S3 was then, so keys created or deleted there since are not seen.
    pub resumed: bool,
}

impl std::fmt::Debug for ListedObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListedObjects")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// Listed objects, kept on disk (in a scratch file) rather than in memory, and
/// read back in S3's order (bytewise on the keys' bytes).
pub struct ListedObjects {
    spool: Spool<Listed>,
}

impl ListedObjects {
    /// An empty list in `scratch`, an empty file nobody else writes.
    pub fn new(scratch: File) -> ListedObjects {
        ListedObjects {
            spool: Spool::new(scratch),
        }
    }

    /// Objects added.
    pub fn len(&self) -> u64 {
        self.spool.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spool.is_empty()
    }

    /// Adds a run of objects in S3's order; runs may come in any order.
    pub fn add_run(&mut self, run: &[ObjectMeta]) -> io::Result<()> {
        for object in run {
            self.spool.append(&Listed::of(object))?;
        }
        self.spool.end_run()
    }

    /// Adds objects in any order, sorted in memory first.
    pub fn add_unsorted(&mut self, objects: &[ObjectMeta]) -> io::Result<()> {
        self.spool
            .append_unsorted_run(objects.iter().map(Listed::of).collect())
    }

    /// Every object in S3's order; of several with one key (a report may hold
    /// such rows), the last modified. An error reading them back ends the stream.
    pub fn iter(&mut self) -> io::Result<ListedIter<'_>> {
        Ok(ListedIter {
            sorted: self.spool.sorted()?.peekable(),
        })
    }

    /// Every object, in memory: for lists known to be small, and tests.
    pub fn to_vec(&mut self) -> io::Result<Vec<ObjectMeta>> {
        self.iter()?.collect()
    }
}

/// The objects of a `ListedObjects`, in order.
pub struct ListedIter<'a> {
    sorted: std::iter::Peekable<Sorted<'a, Listed>>,
}

impl Iterator for ListedIter<'_> {
    type Item = io::Result<ObjectMeta>;

    fn next(&mut self) -> Option<io::Result<ObjectMeta>> {
        loop {
            let mut listed = match self.sorted.next()? {
                Ok(listed) => listed,
                Err(e) => return Some(Err(e)),
            };
            while let Some(Ok(same)) = self
                .sorted
                .next_if(|n| matches!(n, Ok(n) if n.k == listed.k))
            {
                if same.t >= listed.t {
                    listed = same;
                }
            }
            if let Some(object) = listed.object() {
                return Some(Ok(object));
            }
        }
    }
}

/// One part of the key space.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Part {
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

/// A part being listed: its number in the journal, where it is, and the
/// continuation token of its next page within this run.
struct Work {
    id: u64,
    part: Part,
    token: Option<String>,
}

/// What one page of a part gave.
struct Step {
    id: u64,
    /// Its keys: runs of consecutive keys, each in order.
    runs: Vec<Vec<ObjectMeta>>,
    /// The rest of the part (`None` when it is done).
    next: Option<Work>,
    /// Parts handed out from what the part had not listed yet.
    children: Vec<Part>,
    error: Option<StoreError>,
}

/// Where a listing records its progress, so that a run stopped half way (kill,
/// reboot, a listing that gave up) goes on from there next time.
pub trait Journal: Send {
    /// What an earlier, unfinished listing recorded, oldest first; nothing when
    /// there is none or it cannot be used (too old, unreadable).
    /// The entries come one at a time, so a journal of millions of keys is
    /// never held whole.
    fn replay(&mut self) -> Box<dyn Iterator<Item = Entry> + '_>;
    /// Records one entry; a failure only costs the ability to resume.
    fn append(&mut self, entry: &Entry);
    /// The listing is complete: nothing of it needs to be kept.
    fn finish(&mut self);
    /// What the journal holds cannot be gone on with: a new listing starts.
    fn discard(&mut self);
}

/// Records nothing: every listing starts from the beginning.
pub struct NoJournal;

impl Journal for NoJournal {
    fn replay(&mut self) -> Box<dyn Iterator<Item = Entry> + '_> {
        Box::new(std::iter::empty())
    }
    fn append(&mut self, _entry: &Entry) {}
    fn finish(&mut self) {}
    fn discard(&mut self) {}
}

/// One record of a listing's journal.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "entry", rename_all = "snake_case")]
pub enum Entry {
    /// A listing of `prefix` started; part 0 covers it all.
    Start { prefix: String, first: Part },
    /// A page of part `id`: its objects, the part's state after it (`None`:
    /// done), and the parts it handed out, numbered from `first_child`.
    Page {
        id: u64,
        part: Option<Part>,
        first_child: u64,
        children: Vec<Part>,
        runs: Vec<Vec<Listed>>,
    },
}

/// A listed object as a journal keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Listed {
    k: String,
    s: u64,
    e: String,
    /// Last-Modified, ms since the epoch.
    t: u64,
    #[serde(default, skip_serializing_if = "is_standard")]
    c: StorageClass,
    #[serde(default, skip_serializing_if = "is_zero")]
    r: u8,
}

impl SpoolRecord for Listed {
    fn sort_key(&self) -> Cow<'_, [u8]> {
        bytes_of(&self.k)
    }
}

fn is_standard(class: &StorageClass) -> bool {
    *class == StorageClass::Standard
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

impl Listed {
    pub(crate) fn of(object: &ObjectMeta) -> Listed {
        Listed {
            k: object.key.as_str().to_string(),
            s: object.size,
            e: object.etag.as_str().to_string(),
            t: crate::utc::unix_ms(object.last_modified),
            c: object.storage_class.clone(),
            r: match object.restore {
                RestoreState::NotRestored => 0,
                RestoreState::InProgress => 1,
                RestoreState::Restored => 2,
            },
        }
    }

    pub(crate) fn object(self) -> Option<ObjectMeta> {
        Some(ObjectMeta {
            key: Key::new(self.k).ok()?,
            size: self.s,
            etag: ETag::new(&self.e),
            last_modified: crate::utc::from_unix_ms(self.t),
            storage_class: self.c,
            restore: match self.r {
                1 => RestoreState::InProgress,
                2 => RestoreState::Restored,
                _ => RestoreState::NotRestored,
            },
        })
    }
}

/// The parts left and the keys listed, as a journal's entries tell them.
struct Progress {
    parts: BTreeMap<u64, Part>,
    next_id: u64,
}

impl Progress {
    /// The progress `entries` tell, their objects added to `objects`; `None`
    /// when they are not a journal of a listing of `prefix`.
    fn replay(
        prefix: &str,
        mut entries: impl Iterator<Item = Entry>,
        objects: &mut ListedObjects,
    ) -> io::Result<Option<Progress>> {
        let Some(Entry::Start {
            prefix: started,
            first,
        }) = entries.next()
        else {
            return Ok(None);
        };
        if started != prefix {
            return Ok(None);
        }
        let mut progress = Progress {
            parts: BTreeMap::from([(0, first)]),
            next_id: 1,
        };
        for entry in entries {
            let Entry::Page {
                id,
                part,
                first_child,
                children,
                runs,
            } = entry
            else {
                return Ok(None);
            };
            match part {
                Some(part) => progress.parts.insert(id, part),
                None => progress.parts.remove(&id),
            };
            let handed_out = children.len() as u64;
            for (n, child) in children.into_iter().enumerate() {
                progress.parts.insert(first_child + n as u64, child);
            }
            progress.next_id = progress.next_id.max(id + 1).max(first_child + handed_out);
            for run in runs {
                for listed in &run {
                    objects.spool.append(listed)?;
                }
                objects.spool.end_run()?;
            }
        }
        Ok(Some(progress))
    }
}

/// Lists every object under `prefix`, `options.workers` requests at once,
/// going on from where `journal` says an earlier listing stopped. The objects
/// go to `scratch` (an empty file nobody else writes), not to memory; an error
/// is a failure to write or read it. `listed` sees each run of objects as S3
/// answers it (in no particular order), while the listing goes on.
pub async fn list_split(
    store: Arc<dyn ObjectStore>,
    prefix: &str,
    options: &SplitOptions,
    journal: &mut dyn Journal,
    scratch: File,
    listed: &mut dyn FnMut(&[ObjectMeta]),
) -> io::Result<Listing> {
    let workers = options.workers.max(1);
    let mut objects = ListedObjects::new(scratch.try_clone()?);
    // A journal whose parts are all done is a listing that ended without being
    // told so (a crash right at its end): its keys are stale, so list anew.
    let replayed =
        Progress::replay(prefix, journal.replay(), &mut objects)?.filter(|p| !p.parts.is_empty());
    if replayed.is_none() {
        // Whatever an unusable journal held goes, before the new listing's records.
        journal.discard();
        if !objects.is_empty() {
            scratch.set_len(0)?;
            objects = ListedObjects::new(scratch);
        }
    }
    let resumed = replayed.is_some();
    let progress = match replayed {
        Some(progress) => {
            let listed = objects.len();
            tracing::info!(
                "going on with an earlier listing: {listed} objects listed, {} parts left",
                progress.parts.len()
            );
            progress
        }
        None => {
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
            journal.append(&Entry::Start {
                prefix: prefix.to_string(),
                first: first.clone(),
            });
            Progress {
                parts: BTreeMap::from([(0, first)]),
                next_id: 1,
            }
        }
    };
    let Progress { parts, mut next_id } = progress;
    let mut waiting: Vec<Work> = parts
        .into_iter()
        .rev()
        .map(|(id, part)| Work {
            id,
            part,
            token: None,
        })
        .collect();
    // Parts waiting or being listed: a range splits only while this is below the target.
    let open = Arc::new(AtomicUsize::new(waiting.len()));
    // Whether S3 answered a page yet: until it has, a page that cannot reach it
    // is a wrong endpoint or no network, reported at once rather than retried.
    let answered = Arc::new(AtomicBool::new(false));
    let mut running = JoinSet::new();
    let mut error = None;
    loop {
        while error.is_none() && running.len() < workers {
            let Some(work) = waiting.pop() else { break };
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
                list_page(store.as_ref(), work, &retry, || {
                    open.load(Ordering::Relaxed) < want
                })
                .await
            });
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let step = match joined {
            Ok(step) => step,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        let first_child = next_id;
        next_id += step.children.len() as u64;
        if step.error.is_none() {
            journal.append(&Entry::Page {
                id: step.id,
                part: step.next.as_ref().map(|w| w.part.clone()),
                first_child,
                children: step.children.clone(),
                runs: step
                    .runs
                    .iter()
                    .map(|run| run.iter().map(Listed::of).collect())
                    .collect(),
            });
        }
        for run in step.runs.iter().filter(|run| !run.is_empty()) {
            objects.add_run(run)?;
            listed(run);
        }
        open.fetch_add(step.children.len(), Ordering::Relaxed);
        for (n, part) in step.children.into_iter().enumerate() {
            waiting.push(Work {
                id: first_child + n as u64,
                part,
                token: None,
            });
        }
        match step.next {
            Some(work) if step.error.is_none() => waiting.push(work),
            _ => {
                open.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if error.is_none() {
            error = step.error;
        }
    }
    if error.is_none() {
        journal.finish();
    }
    Ok(Listing {
        objects,
        error,
        resumed,
    })
}

/// Lists the next page of a part; `split_wanted` tells whether more parts
/// would keep the workers busy.
async fn list_page(
    store: &dyn ObjectStore,
    work: Work,
    retry: &Retry<'_>,
    split_wanted: impl Fn() -> bool,
) -> Step {
    let id = work.id;
    let failed = |error| Step {
        id,
        runs: Vec::new(),
        next: None,
        children: Vec::new(),
        error: Some(error),
    };
    match work.part {
        // One grouped page: when it is the whole directory, its objects and its
        // subdirectories as parts; otherwise the directory as one flat range.
        Part::Dir { prefix } => match retry.run(|| store.list_first(&prefix, PAGE_KEYS)).await {
            Err(error) => failed(error),
            Ok(page) if page.next.is_some() => Step {
                id,
                runs: Vec::new(),
                next: Some(Work {
                    id,
                    part: Part::Range {
                        scope: prefix,
                        after: None,
                        upto: None,
                    },
                    token: None,
                }),
                children: Vec::new(),
                error: None,
            },
            Ok(page) => Step {
                id,
                runs: runs_between(page.objects, &page.prefixes),
                next: None,
                children: page
                    .prefixes
                    .into_iter()
                    .map(|prefix| Part::Dir { prefix })
                    .collect(),
                error: None,
            },
        },
        Part::Range { scope, after, upto } => {
            let token = work.token;
            let page = retry
                .run(|| match (&token, &after) {
                    (Some(token), _) => store.list_page(&scope, false, Some(token.clone())),
                    (None, Some(after)) => store.list_after(&scope, after, PAGE_KEYS),
                    (None, None) => store.list_page(&scope, false, None),
                })
                .await;
            let page = match page {
                Ok(page) => page,
                Err(error) => return failed(error),
            };
            let first = page.objects.first().map(|o| o.key.as_str().to_string());
            let mut objects = Vec::with_capacity(page.objects.len());
            let mut past_end = false;
            for object in page.objects {
                if beyond(object.key.as_str(), upto.as_deref()) {
                    past_end = true;
                    break;
                }
                objects.push(object);
            }
            let last = objects.last().map(|o| o.key.as_str().to_string());
            let (Some(token), Some(last), false) = (page.next, last, past_end) else {
                return Step {
                    id,
                    runs: vec![objects],
                    next: None,
                    children: Vec::new(),
                    error: None,
                };
            };
            let mut upto = upto;
            let mut children = Vec::new();
            if split_wanted() {
                let first = first.as_deref().unwrap_or(&last);
                let points = split_points(first, &last, upto.as_deref(), scope.len());
                // This part keeps (last, first point]; each point starts a part up to the next.
                for (i, point) in points.iter().enumerate() {
                    let end = points.get(i + 1).cloned().or_else(|| upto.clone());
                    children.push(Part::Range {
                        scope: scope.clone(),
                        after: Some(point.clone()),
                        upto: end,
                    });
                }
                if let Some(point) = points.first() {
                    upto = Some(point.clone());
                }
            }
            Step {
                id,
                runs: vec![objects],
                next: Some(Work {
                    id,
                    part: Part::Range {
                        scope,
                        after: Some(last),
                        upto,
                    },
                    token: Some(token),
                }),
                children,
                error: None,
            }
        }
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
/// lowercase, uppercase): `img-00048`, `img-00049`, `img-0005`, ... Digits go
/// on with hex letters only when the varying part of the keys shows some
/// (hashes), so decimal numbers do not cost a request per letter. Every point
/// sorts after `last` and before `upto`; a point with no key after it only
/// costs one request.
pub fn split_points(first: &str, last: &str, upto: Option<&str>, scope_len: usize) -> Vec<String> {
    let (first_b, last_b) = (first.as_bytes(), last.as_bytes());
    let varying = common_len(first_b, last_b).min(last_b.len().saturating_sub(1));
    let floor = match upto {
        Some(upto) => scope_len.max(common_len(last_b, upto.as_bytes())),
        None => scope_len,
    };
    // The run of hex digits where the page's keys start to differ.
    let hex_run = |key: &[u8]| {
        key.get(varying..)
            .unwrap_or_default()
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .any(|b| b.is_ascii_alphabetic())
    };
    let hex = hex_run(first_b) || hex_run(last_b);
    let mut points = Vec::new();
    let mut at = varying + 1;
    while at > floor && points.len() < MAX_SPLIT {
        at -= 1;
        let c = last_b[at];
        if !c.is_ascii() {
            continue;
        }
        for next in class_after(c, hex) {
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

/// The characters after `c` in its class, in order; with `hex`, digits go on
/// with `a` to `f`.
fn class_after(c: u8, hex: bool) -> Vec<u8> {
    let range = |from: u8, to: u8| (from..=to).filter(|x| *x > c).collect::<Vec<u8>>();
    match c {
        b'0'..=b'9' if hex => [range(b'0', b'9'), range(b'a', b'f')].concat(),
        b'0'..=b'9' => range(b'0', b'9'),
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

    /// `list_split` into a scratch file of its own.
    async fn split(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        options: &SplitOptions,
        journal: &mut dyn Journal,
    ) -> Listing {
        let scratch = tempfile::tempfile().unwrap();
        list_split(store, prefix, options, journal, scratch, &mut |_| {})
            .await
            .unwrap()
    }

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
    fn decimal_keys_get_no_points_at_hex_letters_and_hashes_do() {
        let decimal = split_points("k0000000", "k0000999", None, 0);
        assert!(!decimal.is_empty());
        assert!(
            decimal
                .iter()
                .all(|p| !p[1..].contains(|c: char| c.is_ascii_alphabetic())),
            "{decimal:?}"
        );
        let hashes = split_points("h/00a3f1", "h/07c2e9", None, 2);
        assert!(hashes.iter().any(|p| p.ends_with('a')), "{hashes:?}");
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
                let mut listing = split(Arc::clone(&store), prefix, &options, &mut NoJournal).await;
                assert!(listing.error.is_none());
                let split = keys(&listing.objects.to_vec().unwrap());
                assert_eq!(split.len(), serial.len(), "{prefix:?} with {workers}");
                assert!(
                    split == serial,
                    "{prefix:?} with {workers}: not the serial order"
                );
            }
        }
    }

    /// A journal kept in memory, as the mirror's keeps it on disk.
    #[derive(Default)]
    struct VecJournal {
        entries: Vec<Entry>,
        finished: bool,
    }

    impl Journal for VecJournal {
        fn replay(&mut self) -> Box<dyn Iterator<Item = Entry> + '_> {
            // Through JSON, as the mirror's journal stores it.
            let json = serde_json::to_string(&self.entries).unwrap();
            let entries: Vec<Entry> = serde_json::from_str(&json).unwrap();
            Box::new(entries.into_iter())
        }
        fn append(&mut self, entry: &Entry) {
            self.entries.push(entry.clone());
        }
        fn finish(&mut self) {
            self.entries.clear();
            self.finished = true;
        }
        fn discard(&mut self) {
            self.entries.clear();
        }
    }

    #[tokio::test]
    async fn a_stopped_listing_goes_on_where_it_stopped() {
        use crate::store::failing::FailingStore;
        for workers in [1, 4] {
            let inner = MemoryStore::new("b").with_page_size(20);
            for i in 0..300 {
                inner.put(&format!("p/k{i:04}"), vec![1]);
            }
            let store = Arc::new(FailingStore::new(inner));
            let serial = keys(&list_all(store.as_ref(), "p/").await.unwrap());
            let options = SplitOptions {
                workers,
                ..SplitOptions::default()
            };
            // What a whole listing costs, to compare a listing that goes on with.
            let dyn_store: Arc<dyn ObjectStore> = Arc::clone(&store) as Arc<dyn ObjectStore>;
            let start = store.lists();
            split(Arc::clone(&dyn_store), "p/", &options, &mut NoJournal).await;
            let whole = store.lists() - start;
            let before = store.lists();
            // The fourth request fails for good: the listing stops there.
            store.fail_list(before + 4, StoreError::NoSuchBucket("b".into()));
            let mut journal = VecJournal::default();
            let first = split(Arc::clone(&dyn_store), "p/", &options, &mut journal).await;
            assert!(first.error.is_some());
            assert!(!first.objects.is_empty() && first.objects.len() < 300);
            assert!(!journal.finished);
            let stopped_at = store.lists();
            let mut second = split(dyn_store, "p/", &options, &mut journal).await;
            assert!(second.error.is_none());
            assert_eq!(
                second.objects.len(),
                serial.len() as u64,
                "{workers} workers"
            );
            assert_eq!(
                keys(&second.objects.to_vec().unwrap()),
                serial,
                "{workers} workers"
            );
            assert!(journal.finished, "a complete listing drops its journal");
            let again = store.lists() - stopped_at;
            assert!(
                again + 3 <= whole,
                "{workers} workers: {again} requests to go on, {whole} for a whole listing"
            );
        }
    }

    /// A journal that never hears its listing finished (a crash right at the end).
    #[derive(Default)]
    struct Unfinished(Vec<Entry>);

    impl Journal for Unfinished {
        fn replay(&mut self) -> Box<dyn Iterator<Item = Entry> + '_> {
            Box::new(self.0.clone().into_iter())
        }
        fn append(&mut self, entry: &Entry) {
            self.0.push(entry.clone());
        }
        fn finish(&mut self) {}
        fn discard(&mut self) {
            self.0.clear();
        }
    }

    #[tokio::test]
    async fn a_journal_of_a_finished_listing_is_not_gone_on_with() {
        let memory = Arc::new(MemoryStore::new("b").with_page_size(3));
        for i in 0..10 {
            memory.put(&format!("p/k{i}"), vec![1]);
        }
        let store: Arc<dyn ObjectStore> = Arc::clone(&memory) as Arc<dyn ObjectStore>;
        let options = SplitOptions::default();
        let mut journal = Unfinished::default();
        split(Arc::clone(&store), "p/", &options, &mut journal).await;
        memory.put("p/k99", vec![1]);
        let before = memory.lists.load(std::sync::atomic::Ordering::Relaxed);
        let listing = split(Arc::clone(&store), "p/", &options, &mut journal).await;
        assert_eq!(listing.objects.len(), 11, "listed anew, with the new key");
        assert!(memory.lists.load(std::sync::atomic::Ordering::Relaxed) > before);
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
                let mut listing = split(Arc::clone(&store), prefix, &options, &mut NoJournal).await;
                assert!(listing.error.is_none());
                (serial, keys(&listing.objects.to_vec().unwrap()))
            });
            proptest::prop_assert_eq!(split, serial);
        }
    }
}
