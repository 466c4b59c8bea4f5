//! The worker queue for work S3 may throttle: how many tasks run at once
//! adapts (cut in half when S3 says slow down, grown back by one per round of
//! successes), and a throttled item is tried again after a backoff, for as long
//! as `patience` allows, instead of failing.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::Flow;

/// What one try of an item gave.
pub enum Attempt<I, T> {
    /// A result to hand over (a success or a failure that trying again will not fix).
    Done(T),
    /// S3 asked to slow down: the item is tried again later. `T` is the result
    /// handed over instead if patience runs out first.
    Throttled(I, T),
}

/// How the queue backs off.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// The pause before an item's second try; it doubles up to `max`.
    pub first: Duration,
    pub max: Duration,
    /// How long an item may keep being throttled before its failure stands.
    pub patience: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(30),
            patience: Duration::from_secs(10 * 60),
        }
    }
}

/// At most this many cuts of the window per second, so that one burst of
/// throttled answers (all the tasks in flight) counts as one signal.
const CUT_EVERY: Duration = Duration::from_secs(1);

/// An item waiting for its next try.
struct Waiting<I> {
    item: I,
    due: Instant,
    pause: Duration,
    since: Instant,
}

/// Runs `start(item)` for each item, at most `limit` at once but fewer while
/// S3 throttles, hands each result to `done`, and returns the items never
/// started (none unless `done` said `Stop`).
pub async fn run_adaptive<I, T, Fut>(
    items: impl IntoIterator<Item = I>,
    limit: usize,
    backoff: Backoff,
    mut start: impl FnMut(I) -> Fut,
    mut done: impl FnMut(T) -> Flow,
) -> Vec<I>
where
    I: Send + 'static,
    T: Send + 'static,
    Fut: Future<Output = Attempt<I, T>> + Send + 'static,
{
    let limit = limit.max(1);
    let mut window = limit as f64;
    let mut last_cut: Option<Instant> = None;
    let mut queue = items.into_iter();
    // Items throttled before, with when they were first throttled and their pause.
    let mut waiting: Vec<Waiting<I>> = Vec::new();
    let mut tasks = JoinSet::new();
    let mut stopped = false;
    loop {
        let now = Instant::now();
        while !stopped && tasks.len() < window as usize {
            let due = waiting
                .iter()
                .enumerate()
                .filter(|(_, w)| w.due <= now)
                .min_by_key(|(_, w)| w.due)
                .map(|(i, _)| i);
            let next = match due {
                Some(i) => {
                    let w = waiting.swap_remove(i);
                    Some((w.item, Some((w.since, w.pause))))
                }
                None => queue.next().map(|item| (item, None)),
            };
            let Some((item, history)) = next else { break };
            let attempt = start(item);
            tasks.spawn(async move { (attempt.await, history) });
        }
        let next_due = waiting.iter().map(|w| w.due).min();
        let joined = match (tasks.is_empty(), next_due) {
            (true, None) => break,
            (true, Some(due)) if stopped => {
                // Nothing runs and nothing new may start: the waiting items end here.
                let _ = due;
                break;
            }
            (true, Some(due)) => {
                tokio::time::sleep_until(due).await;
                continue;
            }
            (false, Some(due)) if tasks.len() < window as usize && !stopped => {
                tokio::select! {
                    joined = tasks.join_next() => joined,
                    _ = tokio::time::sleep_until(due) => continue,
                }
            }
            (false, _) => tasks.join_next().await,
        };
        let Some(joined) = joined else { continue };
        let (attempt, history) = match joined {
            Ok(result) => result,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        match attempt {
            Attempt::Done(result) => {
                window = (window + 1.0 / window).min(limit as f64);
                if done(result) == Flow::Stop {
                    stopped = true;
                }
            }
            Attempt::Throttled(item, failure) => {
                let now = Instant::now();
                if last_cut.is_none_or(|at| now - at >= CUT_EVERY) {
                    window = (window / 2.0).max(1.0);
                    last_cut = Some(now);
                    tracing::info!(
                        "S3 asks to slow down: at most {} requests at once for now",
                        window as usize
                    );
                }
                let (since, pause) = match history {
                    Some((since, pause)) => (since, (pause * 2).min(backoff.max)),
                    None => (now, backoff.first),
                };
                if now + pause - since > backoff.patience || stopped {
                    if done(failure) == Flow::Stop {
                        stopped = true;
                    }
                } else {
                    waiting.push(Waiting {
                        item,
                        due: now + pause,
                        pause,
                        since,
                    });
                }
            }
        }
    }
    let mut left: Vec<I> = waiting.into_iter().map(|w| w.item).collect();
    left.extend(queue);
    left
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use parking_lot::Mutex;

    use super::*;

    fn quick(patience_ms: u64) -> Backoff {
        Backoff {
            first: Duration::from_millis(5),
            max: Duration::from_millis(20),
            patience: Duration::from_millis(patience_ms),
        }
    }

    /// A server that throttles while more than `capacity` requests run at once,
    /// and records the most it saw.
    #[tokio::test]
    async fn throttling_cuts_the_window_and_every_item_gets_done() {
        let running = Arc::new(AtomicUsize::new(0));
        let throttled = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let capacity = 4;
        let left = run_adaptive(
            0..200u32,
            32,
            quick(60_000),
            |i| {
                let (running, throttled) = (Arc::clone(&running), Arc::clone(&throttled));
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    if now > capacity {
                        throttled.fetch_add(1, Ordering::SeqCst);
                        Attempt::Throttled(i, Err(i))
                    } else {
                        Attempt::Done(Ok::<u32, u32>(i))
                    }
                }
            },
            |result| {
                seen.lock().push(result);
                Flow::Continue
            },
        )
        .await;
        assert!(left.is_empty());
        let mut seen = seen.lock().clone();
        seen.sort();
        let all: Vec<Result<u32, u32>> = (0..200).map(Ok).collect();
        assert_eq!(seen, all, "every item done once, none failed");
        assert!(throttled.load(Ordering::SeqCst) > 0);
    }

    #[tokio::test]
    async fn an_item_throttled_past_patience_fails() {
        let mut seen = Vec::new();
        let left = run_adaptive(
            0..3u32,
            2,
            quick(50),
            |i| async move {
                if i == 1 {
                    Attempt::Throttled(i, Err(i))
                } else {
                    Attempt::Done(Ok(i))
                }
            },
            |r: Result<u32, u32>| {
                seen.push(r);
                Flow::Continue
            },
        )
        .await;
        assert!(left.is_empty());
        seen.sort();
        assert_eq!(seen, vec![Ok(0), Ok(2), Err(1)]);
    }

    #[tokio::test]
    async fn a_stop_leaves_the_rest_unstarted() {
        let started = Arc::new(AtomicUsize::new(0));
        let left = run_adaptive(
            0..10u32,
            1,
            quick(1000),
            |i| {
                let started = Arc::clone(&started);
                async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    Attempt::Done(i)
                }
            },
            |i| if i == 2 { Flow::Stop } else { Flow::Continue },
        )
        .await;
        assert_eq!(started.load(Ordering::SeqCst), 3);
        assert_eq!(left, (3..10).collect::<Vec<_>>());
    }
}
