//! `s3mirrorfs follow`: the queue, the mirror and the store put together, the
//! minute's report, readiness for systemd, and a stop on SIGTERM or SIGINT.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use s3mirrorfs::cli::FollowArgs;
use s3mirrorfs::fetch::Fetcher;
use s3mirrorfs::follow::{EventQueue, FollowOptions, FollowReport, Follower};
use s3mirrorfs::prefetch::normalize_prefix;
use s3mirrorfs::report::human_bytes;
use s3mirrorfs::sqs::{SqsOptions, SqsQueue};
use s3mirrorfs::store::ObjectStore;
use s3mirrorfs::sys;

/// How often the follower says what it has done.
const REPORT_EVERY: Duration = Duration::from_secs(60);
/// The long poll's wait (SQS's longest).
const LONG_POLL: Duration = Duration::from_secs(20);
/// How long `--once` waits on a queue that looks empty before it believes it.
const DRAIN_POLL: Duration = Duration::from_secs(1);

pub fn command(args: FollowArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let code = runtime.block_on(run(args));
    // Downloads cut short by a stop leave only temp files, which the next start removes.
    runtime.shutdown_timeout(Duration::from_secs(2));
    code
}

async fn run(args: FollowArgs) -> ExitCode {
    let started = Instant::now();
    // Handlers first: a stop asked for while starting is a clean stop too.
    let mut stop = std::pin::pin!(stop_signal());
    let starting = tokio::select! {
        started = start(&args) => started,
        () = &mut stop => return ExitCode::SUCCESS,
    };
    let follower = match starting {
        Ok(follower) => Arc::new(follower),
        Err(e) => {
            eprintln!("error: {e:#}");
            if args.json {
                let report = FollowReport {
                    error: Some(format!("{e:#}")),
                    ..FollowReport::default()
                };
                println!(
                    "{}",
                    serde_json::to_string(&report).expect("report serializes")
                );
            }
            return ExitCode::from(2);
        }
    };
    tracing::info!(
        "following s3://{}/{} from {}",
        args.target.bucket,
        normalize_prefix(&args.target.prefix),
        args.queue_url
    );
    sys::notify_systemd("READY=1\nSTATUS=following the queue");
    let reporter = tokio::spawn(report_every_minute(Arc::clone(&follower), started));
    let result = tokio::select! {
        result = follower.run() => result,
        () = &mut stop => {
            tracing::info!("stopping");
            let _ = tokio::time::timeout(Duration::from_secs(3), follower.release_in_flight()).await;
            Ok(())
        }
    };
    reporter.abort();
    let mut report = follower.stats.snapshot(follower.fetcher(), started);
    log_report(&report);
    let code = match &result {
        Err(e) => {
            eprintln!("error: {e}");
            report.error = Some(e.to_string());
            2
        }
        Ok(()) if args.once && report.failed > 0 => 1,
        Ok(()) => 0,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("report serializes")
        );
    }
    ExitCode::from(code)
}

/// Opens the mirror, checks the source and the bucket, connects to the queue.
async fn start(args: &FollowArgs) -> anyhow::Result<Follower> {
    let bucket = &args.target.bucket;
    let prefix = normalize_prefix(&args.target.prefix);
    let mirror = crate::open_mirror(&args.mirror_dir, bucket)?;
    let store =
        crate::connect_to_source(&mirror, bucket, &args.s3, args.source.allow_new_source).await?;
    // One small listing proves the bucket and the credentials before anything waits.
    store.list_page(&prefix, true, None).await?;
    mirror.claim()?;
    let store: Arc<dyn ObjectStore> = Arc::new(store);
    let concurrency = usize::from(args.concurrency);
    let fetcher = Fetcher::new(
        store,
        Arc::new(mirror),
        crate::fetch_config(&args.s3, concurrency),
    );
    let queue_options = SqsOptions {
        region: args.s3.region.clone(),
        max_attempts: args.s3.max_attempts,
    };
    let queue: Arc<dyn EventQueue> =
        Arc::new(SqsQueue::connect(&args.queue_url, &queue_options).await);
    let options = FollowOptions {
        bucket: bucket.clone(),
        prefix,
        concurrency,
        once: args.once,
        wait: if args.once { DRAIN_POLL } else { LONG_POLL },
    };
    Ok(Follower::new(queue, fetcher, options))
}

async fn report_every_minute(follower: Arc<Follower>, started: Instant) {
    let mut ticks = tokio::time::interval(REPORT_EVERY);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let report = follower.stats.snapshot(follower.fetcher(), started);
        log_report(&report);
        sys::notify_systemd(&format!("STATUS={}", status_line(&report)));
    }
}

fn status_line(r: &FollowReport) -> String {
    let lag = r
        .lag_seconds
        .map_or("no events".to_string(), |l| format!("lag {l:.1}s"));
    format!(
        "{} events applied, {} objects fetched ({}), {} deletions, {} failed, {lag}",
        r.events,
        r.fetched,
        human_bytes(r.bytes),
        r.deleted,
        r.failed
    )
}

fn log_report(report: &FollowReport) {
    tracing::info!("{}", status_line(report));
}

/// SIGTERM (systemd's stop) or SIGINT; the handlers are installed at once, not
/// when the future is first polled.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
}
