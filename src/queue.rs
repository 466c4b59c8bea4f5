//! A bounded worker queue, the shape every bulk command shares (prefetch's
//! downloads, restore's uploads): at most N tasks in flight, results handled as
//! they land, and a way to stop starting new tasks when a failure would only
//! repeat (a full disk, S3 gone), leaving the items not attempted to report.

pub mod adaptive;

use std::future::Future;

use tokio::task::JoinSet;

/// What the queue does after a result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Start no further task; those running finish and are still handed over.
    Stop,
}

/// Runs `start(item)` for each item, at most `limit` at once, and hands each
/// result to `done` as it lands. Returns the items never started (in order),
/// which is none unless `done` said `Stop`.
pub async fn run_bounded<I, T, Fut>(
    items: I,
    limit: usize,
    mut start: impl FnMut(I::Item) -> Fut,
    mut done: impl FnMut(T) -> Flow,
) -> Vec<I::Item>
where
    I: IntoIterator,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut tasks = JoinSet::new();
    let mut queue = items.into_iter();
    let mut stopped = false;
    loop {
        while !stopped && tasks.len() < limit.max(1) {
            let Some(item) = queue.next() else { break };
            tasks.spawn(start(item));
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let result = match joined {
            Ok(result) => result,
            // A task that panicked passes its panic on; none is ever aborted.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        if done(result) == Flow::Stop {
            stopped = true;
        }
    }
    queue.collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn never_more_than_the_limit_in_flight() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut seen = Vec::new();
        let left = run_bounded(
            0..20u64,
            3,
            |i| {
                let (running, peak) = (Arc::clone(&running), Arc::clone(&peak));
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(i % 4)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    i
                }
            },
            |i| {
                seen.push(i);
                Flow::Continue
            },
        )
        .await;
        assert!(left.is_empty());
        seen.sort();
        assert_eq!(seen, (0..20).collect::<Vec<_>>());
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_stop_returns_the_items_never_started() {
        let mut seen = Vec::new();
        let left = run_bounded(
            0..10u32,
            2,
            |i| async move { i },
            |i| {
                seen.push(i);
                if i == 3 { Flow::Stop } else { Flow::Continue }
            },
        )
        .await;
        // Items 0..=3 started before the stop (two at a time); 3's partner may
        // have started too and is still handed over.
        assert!(seen.contains(&3));
        let started: Vec<u32> = seen.clone();
        let mut all = started.clone();
        all.extend(&left);
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>(), "nothing lost or doubled");
        assert!(left.windows(2).all(|w| w[0] < w[1]), "in order");
        assert!(!left.is_empty());
    }
}
