//! `s3mirrorfs follow`: applies S3's event notifications, read from a queue, to
//! the mirror within seconds. A created object is fetched through the download
//! path every writer shares (atomic commit, ETag pinning, MD5 check, per-object
//! locks, history of the replaced copy); a removed one keeps its copy and its
//! deletion is recorded. A message leaves the queue only once everything it asked
//! for is committed; one that cannot be read is logged and dropped.

pub mod event;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;

use crate::fetch::{FetchError, Fetcher, Outcome};
use crate::layout::{Placement, place_alone, possible_paths};
use crate::mirror::{EMPTY_MD5, Mirror, Record};
use crate::store::{BoxFuture, ETag, Escaped, Key, StoreError};
use crate::utc;
use event::{Change, Event, Message};

/// A message received from the queue.
#[derive(Clone, Debug)]
pub struct Received {
    /// What deletes it (or makes it visible again).
    pub receipt: String,
    pub body: String,
}

/// A queue of event notifications (SQS, or a test double).
pub trait EventQueue: Send + Sync {
    /// The queue's URL, for messages.
    fn url(&self) -> &str;
    /// Up to `max` messages, waiting up to `wait` for the first (a long poll).
    fn receive(&self, max: i32, wait: Duration)
    -> BoxFuture<'_, Result<Vec<Received>, QueueError>>;
    /// Deletes handled messages.
    fn delete(&self, receipts: Vec<String>) -> BoxFuture<'_, Result<(), QueueError>>;
    /// Makes a message visible again at once (one not handled when stopping).
    fn release(&self, receipt: String) -> BoxFuture<'_, Result<(), QueueError>>;
}

/// Failures of the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue {0} does not exist")]
    NoSuchQueue(String),
    #[error("access denied: {action} on queue {url}")]
    Denied { action: &'static str, url: String },
    #[error("cannot reach the queue {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("{action} on queue {url} failed: {detail}")]
    Failed {
        action: &'static str,
        url: String,
        detail: String,
    },
}

/// What to follow and how.
#[derive(Clone, Debug)]
pub struct FollowOptions {
    pub bucket: String,
    /// Keys outside it are not this mirror's ("" for the whole bucket; else ends in `/`).
    pub prefix: String,
    /// Events applied at once.
    pub concurrency: usize,
    /// Stop once a receive finds the queue empty.
    pub once: bool,
    /// The long poll's wait.
    pub wait: Duration,
}

/// What the follower has done; logged every minute, printed at exit with `--json`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FollowReport {
    pub bucket: String,
    pub prefix: String,
    pub queue: String,
    /// Messages handled and deleted (applied, test events and dropped ones).
    pub messages: u64,
    /// Object events applied.
    pub events: u64,
    /// Objects downloaded into the mirror.
    pub fetched: u64,
    /// Bytes received from S3.
    pub bytes: u64,
    /// Deletions recorded.
    pub deleted: u64,
    /// Events that asked for nothing new: a duplicate, or older than the copy;
    /// or for an archived object, which no GET can read until it is restored.
    pub skipped: u64,
    /// Messages that could not be read, or were about another bucket or prefix.
    pub dropped: u64,
    /// Messages left in the queue because an object failed (redelivered later).
    pub failed: u64,
    /// Now minus the oldest `eventTime` applied since the last report, in seconds.
    pub lag_seconds: Option<f64>,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The counts, shared by the tasks that apply events.
#[derive(Default)]
pub struct Stats {
    report: Mutex<FollowReport>,
    /// The oldest event time (ms) applied since the last report.
    oldest: Mutex<Option<u64>>,
}

impl Stats {
    fn add(&self, f: impl FnOnce(&mut FollowReport)) {
        f(&mut self.report.lock());
    }

    fn applied_event(&self, time: u64) {
        let mut oldest = self.oldest.lock();
        if time > 0 && oldest.is_none_or(|o| time < o) {
            *oldest = Some(time);
        }
    }

    /// The report so far; starts a new lag window.
    pub fn snapshot(&self, fetcher: &Fetcher, started: Instant) -> FollowReport {
        let mut report = self.report.lock().clone();
        let now = utc::unix_ms(SystemTime::now());
        if let Some(oldest) = self.oldest.lock().take() {
            report.lag_seconds = Some(now.saturating_sub(oldest) as f64 / 1000.0);
        }
        report.bytes = fetcher.bytes_received();
        report.seconds = started.elapsed().as_secs_f64();
        report
    }
}

/// What becomes of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Applied (or nothing to apply): delete it.
    Done,
    /// Not readable or not ours: logged, delete it.
    Drop,
    /// Something failed: leave it for redelivery.
    Retry,
}

/// The follower: a queue, a mirror to apply events to, and what it has seen.
pub struct Follower {
    queue: Arc<dyn EventQueue>,
    fetcher: Fetcher,
    options: FollowOptions,
    pub stats: Arc<Stats>,
    /// The latest sequencer applied per key (bounded), so a late event for an
    /// older version costs no request.
    sequencers: Mutex<HashMap<Key, String>>,
    /// Receipts of the messages being applied, released when stopping.
    in_flight: Mutex<HashSet<String>>,
    /// One permit per message being applied: `concurrency` at most.
    permits: Arc<tokio::sync::Semaphore>,
    /// With `once`: a receive found the queue empty, so every loop stops receiving.
    drained: std::sync::atomic::AtomicBool,
}

/// Sequencers remembered before the map starts over.
const SEQUENCERS_MAX: usize = 100_000;
/// Messages asked for per receive (SQS's limit).
const BATCH: i32 = 10;

impl Follower {
    pub fn new(queue: Arc<dyn EventQueue>, fetcher: Fetcher, options: FollowOptions) -> Follower {
        let concurrency = options.concurrency.max(1);
        let stats = Stats::default();
        stats.add(|r| {
            r.bucket = options.bucket.clone();
            r.prefix = options.prefix.clone();
            r.queue = queue.url().to_string();
        });
        Follower {
            queue,
            fetcher,
            options,
            stats: Arc::new(stats),
            sequencers: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashSet::new()),
            permits: Arc::new(tokio::sync::Semaphore::new(concurrency)),
            drained: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The fetcher events are applied with (for its byte count).
    pub fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }

    /// Messages asked for per receive: SQS's limit, or fewer when fewer may be
    /// applied at once.
    fn batch_size(&self) -> i32 {
        (self.options.concurrency as i32).clamp(1, BATCH)
    }

    /// Receives and applies messages until the queue is empty (`once`) or
    /// forever. The first receive failing stops it (a wrong URL, no permission);
    /// later failures are retried with backoff, unless `once`.
    pub async fn run(self: &Arc<Self>) -> Result<(), QueueError> {
        // One receive first, so a queue that cannot be read fails at once.
        let first = self
            .queue
            .receive(self.batch_size(), self.options.wait)
            .await?;
        if first.is_empty() && self.options.once {
            return Ok(());
        }
        let first = Mutex::new(Some(first));
        // Receiving goes on while batches apply, so the queue's round trips overlap
        // the downloads; the permits bound what is applied at once.
        let receivers = self.options.concurrency.div_ceil(BATCH as usize).max(2);
        let mut loops = tokio::task::JoinSet::new();
        for _ in 0..receivers {
            let me = Arc::clone(self);
            let batch = first.lock().take();
            loops.spawn(async move { me.receive_loop(batch).await });
        }
        while let Some(done) = loops.join_next().await {
            done.expect("a receive loop does not panic")?;
        }
        Ok(())
    }

    async fn receive_loop(
        self: Arc<Self>,
        mut batch: Option<Vec<Received>>,
    ) -> Result<(), QueueError> {
        let mut applying = tokio::task::JoinSet::new();
        let result = self.receive_into(&mut batch, &mut applying).await;
        while applying.join_next().await.is_some() {}
        result
    }

    /// Receives batches and starts applying each, while permits last.
    async fn receive_into(
        self: &Arc<Self>,
        batch: &mut Option<Vec<Received>>,
        applying: &mut tokio::task::JoinSet<()>,
    ) -> Result<(), QueueError> {
        let mut backoff = Duration::from_secs(1);
        loop {
            if self.drained.load(std::sync::atomic::Ordering::Relaxed) {
                return Ok(());
            }
            let want = self.batch_size();
            let permits = Arc::clone(&self.permits)
                .acquire_many_owned(want as u32)
                .await
                .expect("the semaphore is never closed");
            let messages = match batch.take() {
                Some(messages) => messages,
                None => match self.queue.receive(want, self.options.wait).await {
                    Ok(messages) => {
                        backoff = Duration::from_secs(1);
                        messages
                    }
                    Err(e) if self.options.once => return Err(e),
                    Err(e) => {
                        tracing::warn!("{e}; trying again in {}s", backoff.as_secs());
                        drop(permits);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        continue;
                    }
                },
            };
            if messages.is_empty() {
                if self.options.once {
                    self.drained
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    return Ok(());
                }
                continue;
            }
            let me = Arc::clone(self);
            applying.spawn(async move { me.apply_batch(messages, permits).await });
            // Finished batches are collected as the loop goes, not kept.
            while applying.try_join_next().is_some() {}
        }
    }

    /// Applies a batch of messages concurrently, then deletes those done with.
    /// Each message gives its permit back as soon as it is applied, so one slow
    /// download does not hold up the next receive.
    async fn apply_batch(
        self: &Arc<Self>,
        messages: Vec<Received>,
        mut permits: tokio::sync::OwnedSemaphorePermit,
    ) {
        let mut tasks = tokio::task::JoinSet::new();
        for message in messages {
            self.in_flight.lock().insert(message.receipt.clone());
            let me = Arc::clone(self);
            let permit = permits.split(1);
            tasks.spawn(async move {
                let verdict = me.handle(&message.body).await;
                drop(permit);
                (message.receipt, verdict)
            });
        }
        // Permits of messages this batch did not get.
        drop(permits);
        let mut delete = Vec::new();
        while let Some(done) = tasks.join_next().await {
            let (receipt, verdict) = done.expect("applying an event does not panic");
            match verdict {
                Verdict::Done => self.stats.add(|r| r.messages += 1),
                Verdict::Drop => self.stats.add(|r| {
                    r.messages += 1;
                    r.dropped += 1;
                }),
                Verdict::Retry => {
                    self.stats.add(|r| r.failed += 1);
                    self.in_flight.lock().remove(&receipt);
                    continue;
                }
            }
            delete.push(receipt);
        }
        let deleted = self.queue.delete(delete.clone()).await;
        for receipt in &delete {
            self.in_flight.lock().remove(receipt);
        }
        if let Err(e) = deleted {
            // The events are applied; redelivered, they are found current.
            tracing::warn!("cannot delete handled messages: {e}");
        }
    }

    /// Makes the messages still being applied visible again at once, so that
    /// nothing waits out a visibility timeout after a stop. Best effort.
    pub async fn release_in_flight(&self) {
        let receipts: Vec<String> = self.in_flight.lock().drain().collect();
        for receipt in receipts {
            if let Err(e) = self.queue.release(receipt).await {
                tracing::debug!("cannot release a message: {e}");
            }
        }
    }

    /// Reads one message and applies what it asks for.
    async fn handle(&self, body: &str) -> Verdict {
        let events = match event::parse(body) {
            Ok(Message::Test) => return Verdict::Done,
            Ok(Message::Events(events)) => events,
            Err(e) => {
                let shown: String = body.chars().take(200).collect();
                tracing::warn!(
                    "dropping a message that is not an S3 event ({e}): {}",
                    Escaped(&shown)
                );
                return Verdict::Drop;
            }
        };
        let (ours, others): (Vec<Event>, Vec<Event>) = events.into_iter().partition(|e| {
            e.bucket == self.options.bucket && e.key.as_str().starts_with(&self.options.prefix)
        });
        if let Some(other) = others.first() {
            tracing::warn!(
                bucket = %Escaped(&other.bucket),
                key = %other.key,
                "dropping events about another bucket or outside the prefix ({} in this message)",
                others.len()
            );
            if ours.is_empty() {
                return Verdict::Drop;
            }
        }
        let mut verdict = Verdict::Done;
        for event in ours {
            match self.apply(&event).await {
                Ok(()) => {
                    self.stats.add(|r| r.events += 1);
                    self.stats.applied_event(event.time);
                }
                Err(e) => {
                    tracing::error!(key = %event.key, "cannot apply the event: {e}");
                    verdict = Verdict::Retry;
                }
            }
        }
        verdict
    }

    async fn apply(&self, event: &Event) -> Result<(), FetchError> {
        if self.is_stale_by_sequencer(event) {
            self.stats.add(|r| r.skipped += 1);
            return Ok(());
        }
        let result = match &event.change {
            Change::Created { etag, size } => self.created(event, etag.as_ref(), *size).await,
            Change::Removed => self.removed(event).await,
        };
        if result.is_ok()
            && let Some(sequencer) = &event.sequencer
        {
            let mut seen = self.sequencers.lock();
            if seen.len() >= SEQUENCERS_MAX {
                seen.clear();
            }
            seen.insert(event.key.clone(), sequencer.clone());
        }
        result
    }

    fn is_stale_by_sequencer(&self, event: &Event) -> bool {
        let Some(sequencer) = &event.sequencer else {
            return false;
        };
        self.sequencers
            .lock()
            .get(&event.key)
            .is_some_and(|latest| !event::later(sequencer, latest))
    }

    /// Fetches what S3 holds now for a created key, unless the mirror already
    /// holds that version or a newer one.
    async fn created(
        &self,
        event: &Event,
        etag: Option<&ETag>,
        size: Option<u64>,
    ) -> Result<(), FetchError> {
        let mirror = Arc::clone(self.fetcher.mirror());
        let key = &event.key;
        if let Placement::Directory(rel) = place_alone(key.as_str(), size.unwrap_or(1)) {
            return self.marker(&mirror, key, etag, rel);
        }
        let rel = mirror.path_for(key, size.unwrap_or(1));
        if let Some((record, modified)) = mirror.copy_at(&rel).filter(|(r, _)| r.key == *key) {
            let same = etag.is_some_and(|e| *e == record.etag) && !record.corrupt;
            let newer = event.time > 0 && utc::unix_ms(modified) > event.time;
            if same || newer {
                self.stats.add(|r| r.skipped += 1);
                return Ok(());
            }
        }
        let wanted = etag.cloned().unwrap_or_else(|| ETag::new(""));
        match self
            .fetcher
            .ensure(key, &wanted, size.unwrap_or(0), &rel)
            .await
        {
            Ok(Outcome::Downloaded { .. }) => self.stats.add(|r| r.fetched += 1),
            Ok(Outcome::Current) => self.stats.add(|r| r.skipped += 1),
            // Deleted since: its removal event follows.
            Err(FetchError::Store(StoreError::NoSuchKey { .. })) => {
                self.stats.add(|r| r.skipped += 1)
            }
            // Uploaded straight into Glacier or Deep Archive: no GET reads it until
            // it is restored, so redelivering the event would only fail again. The
            // daily prefetch counts it, and its --restore-archived fetches it.
            Err(FetchError::Store(StoreError::Archived(e))) => {
                tracing::info!(%key, "archived, left to prefetch --restore-archived: {e}");
                self.stats.add(|r| r.skipped += 1)
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// A `dir/` marker: its directory, recorded.
    fn marker(
        &self,
        mirror: &Mirror,
        key: &Key,
        etag: Option<&ETag>,
        rel: std::path::PathBuf,
    ) -> Result<(), FetchError> {
        let record = Record {
            key: key.clone(),
            etag: etag.cloned().unwrap_or_else(|| ETag::new("")),
            size: 0,
            md5: Some(EMPTY_MD5.to_string()),
            corrupt: false,
        };
        mirror.ensure_dir(&rel)?;
        mirror.record_marker(&rel, &record)?;
        Ok(())
    }

    /// Records a removal, keeping the copy, unless the copy is newer than the
    /// removal (the key was created again since).
    async fn removed(&self, event: &Event) -> Result<(), FetchError> {
        let mirror = Arc::clone(self.fetcher.mirror());
        let copy = possible_paths(event.key.as_str())
            .into_iter()
            .find_map(|rel| mirror.copy_at(&rel).filter(|(r, _)| r.key == event.key));
        let Some((record, modified)) = copy else {
            self.stats.add(|r| r.skipped += 1);
            return Ok(());
        };
        let since = utc::unix_ms(modified);
        if since > event.time && event.time > 0 {
            self.stats.add(|r| r.skipped += 1);
            return Ok(());
        }
        let key = event.key.clone();
        let recorded = tokio::task::spawn_blocking(move || {
            mirror.record_deletion(&key, Some(&record.etag), since)
        })
        .await
        .expect("recording a deletion does not panic")?;
        if recorded {
            self.stats.add(|r| r.deleted += 1);
        }
        Ok(())
    }
}
