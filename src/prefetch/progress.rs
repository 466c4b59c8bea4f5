//! Progress of a prefetch: a bar on a terminal (indicatif), plain periodic log
//! lines under cron or systemd, or nothing with `--quiet`.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::fetch::Fetcher;

/// The bar on screen, if any, so log lines can be printed above it.
static ACTIVE_BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Standard error, writing around the progress bar when one is shown.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = ACTIVE_BAR.lock().clone();
        match bar {
            Some(bar) => bar
                .suspend(|| std::io::stderr().write_all(buf))
                .map(|()| buf.len()),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// A redrawn bar on standard error.
    Bar,
    /// A log line every `interval`.
    Log {
        interval: Duration,
    },
    None,
}

/// Counters the run updates and the reporter reads.
#[derive(Default, Debug)]
pub struct Counters {
    listed: AtomicU64,
    done: AtomicU64,
    pending_bytes: AtomicU64,
}

impl Counters {
    pub fn set_listed(&self, n: u64) {
        self.listed.store(n, Ordering::Relaxed);
    }
    pub fn set_done(&self, n: u64) {
        self.done.store(n, Ordering::Relaxed);
    }
    pub fn object_done(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add_pending(&self, bytes: u64) {
        self.pending_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// A running reporter; `finish` stops it and prints a last update.
pub struct Progress {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Progress {
    pub fn start(mode: ProgressMode, counters: Arc<Counters>, fetcher: Fetcher) -> Progress {
        let (stop, mut stopped) = watch::channel(false);
        let task = match mode {
            ProgressMode::None => None,
            ProgressMode::Bar => Some(tokio::spawn(async move {
                let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} [{elapsed_precise}] [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
                    )
                    .expect("template is valid")
                    .progress_chars("=> "),
                );
                *ACTIVE_BAR.lock() = Some(bar.clone());
                loop {
                    let (listed, done, total) = snapshot(&counters);
                    bar.set_length(total);
                    bar.set_position(fetcher.bytes_received().min(total));
                    bar.set_message(format!("{done}/{listed} objects"));
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = stopped.changed() => break,
                    }
                }
                *ACTIVE_BAR.lock() = None;
                bar.finish_and_clear();
            })),
            ProgressMode::Log { interval } => Some(tokio::spawn(async move {
                let started = Instant::now();
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(interval) => {}
                        _ = stopped.changed() => break,
                    }
                    let (listed, done, total) = snapshot(&counters);
                    let bytes = fetcher.bytes_received();
                    let rate = bytes as f64 / started.elapsed().as_secs_f64().max(0.001);
                    let eta = if rate > 0.0 && total > bytes {
                        format!(", ETA {}s", ((total - bytes) as f64 / rate).ceil() as u64)
                    } else {
                        String::new()
                    };
                    tracing::info!(
                        "progress: {done}/{listed} objects, {} of {}, {}/s{eta}",
                        human_bytes(bytes),
                        human_bytes(total),
                        human_bytes(rate as u64)
                    );
                }
            })),
        };
        Progress { stop, task }
    }

    pub async fn finish(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

fn snapshot(counters: &Counters) -> (u64, u64, u64) {
    (
        counters.listed.load(Ordering::Relaxed),
        counters.done.load(Ordering::Relaxed),
        counters.pending_bytes.load(Ordering::Relaxed),
    )
}

/// Bytes in binary units, one decimal.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
