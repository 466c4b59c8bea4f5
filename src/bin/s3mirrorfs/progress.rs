//! How a prefetch shows its progress: a bar on a terminal (indicatif), plain
//! periodic log lines under cron or systemd, or nothing with `--quiet`. The
//! library only reports through `prefetch::Progress`; drawing is the binary's.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use s3mirrorfs::fetch::Fetcher;
use s3mirrorfs::prefetch::Progress;
use s3mirrorfs::report::human_bytes;

/// The bar on screen, if any, shared with the log writer so that log lines are
/// printed above it rather than through it.
#[derive(Clone, Default)]
pub struct BarSlot(Arc<Mutex<Option<ProgressBar>>>);

/// Standard error, writing around the progress bar when one is shown.
pub struct LogWriter(pub BarSlot);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = self.0.0.lock().clone();
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

/// What the run reported so far; the reporter reads it.
#[derive(Default, Debug)]
pub struct Counters {
    listed: AtomicU64,
    done: AtomicU64,
    pending_bytes: AtomicU64,
}

impl Progress for Counters {
    fn listed(&self, objects: u64) {
        self.listed.store(objects, Ordering::Relaxed);
    }

    fn planned(&self, settled: u64, pending_bytes: u64) {
        self.done.store(settled, Ordering::Relaxed);
        self.pending_bytes.store(pending_bytes, Ordering::Relaxed);
    }

    fn object_done(&self) {
        self.done.fetch_add(1, Ordering::Relaxed);
    }
}

impl Counters {
    /// (listed, settled, bytes to fetch).
    fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.listed.load(Ordering::Relaxed),
            self.done.load(Ordering::Relaxed),
            self.pending_bytes.load(Ordering::Relaxed),
        )
    }
}

/// A running reporter; `finish` stops it.
pub struct Reporter {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Reporter {
    pub fn start(
        mode: ProgressMode,
        counters: Arc<Counters>,
        fetcher: Fetcher,
        slot: BarSlot,
    ) -> Reporter {
        let (stop, stopped) = watch::channel(false);
        let task = match mode {
            ProgressMode::None => None,
            ProgressMode::Bar => Some(tokio::spawn(draw_bar(counters, fetcher, slot, stopped))),
            ProgressMode::Log { interval } => Some(tokio::spawn(log_lines(
                counters, fetcher, interval, stopped,
            ))),
        };
        Reporter { stop, task }
    }

    pub async fn finish(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

async fn draw_bar(
    counters: Arc<Counters>,
    fetcher: Fetcher,
    slot: BarSlot,
    mut stopped: watch::Receiver<bool>,
) {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
        )
        .expect("template is valid")
        .progress_chars("=> "),
    );
    *slot.0.lock() = Some(bar.clone());
    loop {
        let (listed, done, total) = counters.snapshot();
        bar.set_length(total);
        bar.set_position(fetcher.bytes_received().min(total));
        bar.set_message(format!("{done}/{listed} objects"));
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stopped.changed() => break,
        }
    }
    *slot.0.lock() = None;
    bar.finish_and_clear();
}

async fn log_lines(
    counters: Arc<Counters>,
    fetcher: Fetcher,
    interval: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let started = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopped.changed() => break,
        }
        let (listed, done, total) = counters.snapshot();
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
}
