//! The binary's edge: parse the command line, start logging, run, turn the outcome
//! into an exit code (0 all good, 1 some objects failed, 2 the run could not go on).

mod follow;
mod progress;

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use s3mirrorfs::admin::{self, AdminError};
use s3mirrorfs::cli::{
    ArchiveArgs, Cli, Command, HistoryArgs, MountArgs, PrefetchArgs, RestoreArgs, RestoreTier,
    S3Args, Sse, StatusArgs, VerifyArgs, fstab_args,
};
use s3mirrorfs::fetch::{FetchConfig, Fetcher};
use s3mirrorfs::mirror::Mirror;
use s3mirrorfs::mirror::identity::Source;
use s3mirrorfs::mount::{self, MountOptions};
use s3mirrorfs::prefetch::source::{InventorySource, KeySource};
use s3mirrorfs::prefetch::{self, PrefetchOptions, RestoreArchived, Summary, normalize_prefix};
use s3mirrorfs::report::human_bytes;
use s3mirrorfs::s3::{S3Options, S3Store};
use s3mirrorfs::store::{Encryption, ObjectSink, ObjectStore, RetrievalTier};

use progress::{BarSlot, Counters, LogWriter, ProgressMode, Reporter};

fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(fstab_args(std::env::args_os().collect())) {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // One line for bad input: the error itself, then where to look.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("{first} (see s3mirrorfs --help)");
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    let quiet = matches!(&cli.command, Command::Prefetch(args) if args.quiet);
    let bar = BarSlot::default();
    init_logging(cli.verbose, quiet, bar.clone());
    match cli.command {
        Command::Prefetch(args) => match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(prefetch_command(args, bar)),
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                ExitCode::from(2)
            }
        },
        // The mount forks before any thread starts, so it builds its own runtime.
        Command::Mount(args) => mount_command(args),
        // Local state only: no runtime, no S3 client.
        Command::Status(args) => status_command(&args),
        Command::History(args) => history_command(&args),
        Command::Verify(args) => block_on(verify_command(args)),
        Command::Restore(args) => block_on(restore_command(args)),
        Command::Archive(args) => block_on(archive_command(args)),
        Command::Follow(args) => follow::command(args),
    }
}

fn mount_command(mut args: MountArgs) -> ExitCode {
    if let Err(e) = args.apply_fstab_options() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let options = MountOptions {
        bucket: args.target.bucket.clone(),
        prefix: normalize_prefix(&args.target.prefix),
        mountpoint: absolute(&args.mountpoint),
        mirror_dir: absolute(&args.mirror_dir),
        s3: s3_options(&args.s3),
        allow_new_source: args.source.allow_new_source,
        metadata_ttl: Duration::from_secs(args.metadata_ttl),
        allow_other: args.allow_other,
        foreground: args.foreground,
        uid: args.uid,
        gid: args.gid,
        setuid: args.setuid.clone(),
    };
    match mount::run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            // Like prefetch: a mirror of another source or another user's is a
            // run that cannot go on.
            ExitCode::from(if e.is_refusal() { 2 } else { 1 })
        }
    }
}

fn init_logging(verbose: u8, quiet: bool, bar: BarSlot) {
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "s3mirrorfs=info,aws_config=error,fuser=error,warn",
        (false, 1) => "s3mirrorfs=debug,info",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(move || LogWriter(bar.clone()))
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

pub(crate) fn s3_options(args: &S3Args) -> S3Options {
    S3Options {
        endpoint_url: args.endpoint_url.clone(),
        region: args.region.clone(),
        force_path_style: args.force_path_style,
        max_attempts: args.max_attempts,
        stall_timeout: Duration::from_secs(args.stall_timeout),
        expected_bucket_owner: args.expected_bucket_owner.clone(),
        ..S3Options::default()
    }
}

async fn prefetch_command(args: PrefetchArgs, bar: BarSlot) -> ExitCode {
    let prefix = normalize_prefix(&args.target.prefix);
    let mut summary = Summary {
        bucket: args.target.bucket.clone(),
        prefix: prefix.clone(),
        mirror: args.mirror_dir.display().to_string(),
        source: match args.inventory {
            Some(_) => KeySource::Inventory,
            None => KeySource::Listing,
        },
        ..Summary::default()
    };
    let outcome = prefetch_inner(&args, &prefix, bar, &mut summary).await;
    if let Err(e) = &outcome {
        let message = format!("{e:#}");
        eprintln!("error: {message}");
        summary.error = Some(message);
    } else if !args.quiet {
        tracing::info!(
            "listed {}, downloaded {} ({}), up to date {}, failed {}, archived {}, pruned {}, renamed {} in {:.1}s",
            summary.listed,
            summary.downloaded,
            human_bytes(summary.bytes),
            summary.up_to_date,
            summary.failed,
            summary.archived,
            summary.pruned,
            summary.renamed.len(),
            summary.seconds
        );
    }
    if outcome.is_ok()
        && let Some(note) = summary.archived_note()
    {
        // Not an error: the run succeeded for every object a GET can read.
        tracing::warn!("{note}");
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&summary).expect("summary serializes")
        );
    }
    match outcome {
        Err(_) => ExitCode::from(2),
        Ok(()) if summary.failed > 0 => {
            if !args.quiet {
                eprintln!(
                    "error: {} of {} objects failed",
                    summary.failed, summary.listed
                );
            }
            ExitCode::from(1)
        }
        Ok(()) => ExitCode::SUCCESS,
    }
}

async fn prefetch_inner(
    args: &PrefetchArgs,
    prefix: &str,
    bar: BarSlot,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let bucket = &args.target.bucket;
    let mirror = open_mirror(&args.mirror_dir, bucket)?;
    let store = connect_to_source(&mirror, bucket, &args.s3, args.source.allow_new_source).await?;
    let _lock = mirror.lock(&format!(
        "pid {} (s3mirrorfs prefetch s3://{bucket}/{prefix})",
        std::process::id()
    ))?;
    let store: Arc<dyn ObjectStore> = Arc::new(store);
    let inventory = match &args.inventory {
        Some(location) => Some(InventorySource {
            store: Arc::new(connect_to_report(&mirror, &location.bucket, &args.s3).await),
            location: location.clone(),
        }),
        None => None,
    };
    let concurrency = usize::from(args.concurrency);
    let fetcher = Fetcher::new(
        Arc::clone(&store),
        Arc::new(mirror),
        fetch_config(&args.s3, concurrency),
    );
    let mode = if args.quiet {
        ProgressMode::None
    } else if std::io::stderr().is_terminal() {
        ProgressMode::Bar
    } else {
        ProgressMode::Log {
            interval: Duration::from_secs(10),
        }
    };
    let options = PrefetchOptions {
        prefix: prefix.to_string(),
        concurrency,
        prune: args.prune,
        keep_history_days: args.keep_history,
        max_change: args.max_change,
        restore_archived: restore_archived(args),
        list_workers: usize::from(args.list_workers),
        retry_for: std::time::Duration::from_secs(args.retry_for),
        inventory,
    };
    let counters = Arc::new(Counters::default());
    let reporter = Reporter::start(mode, Arc::clone(&counters), fetcher.clone(), bar);
    let result = prefetch::run(store, &fetcher, &options, counters.as_ref(), summary).await;
    reporter.finish().await;
    result.with_context(|| format!("prefetch of s3://{bucket}/{prefix}"))
}

/// What `--restore-archived` and `--restore-tier` ask for (Bulk unless told).
fn restore_archived(args: &PrefetchArgs) -> Option<RestoreArchived> {
    let tier = match args.restore_tier {
        None | Some(RestoreTier::Bulk) => RetrievalTier::Bulk,
        Some(RestoreTier::Standard) => RetrievalTier::Standard,
        Some(RestoreTier::Expedited) => RetrievalTier::Expedited,
    };
    args.restore_archived
        .map(|days| RestoreArchived { days, tier })
}

/// How a bulk command's downloads go: `concurrency` requests at once, and the
/// retries and stall timeout the S3 flags say.
pub(crate) fn fetch_config(args: &S3Args, concurrency: usize) -> FetchConfig {
    FetchConfig {
        max_requests: concurrency,
        max_attempts: args.max_attempts,
        stall_timeout: Duration::from_secs(args.stall_timeout),
        ..FetchConfig::default()
    }
}

pub(crate) fn open_mirror(dir: &Path, bucket: &str) -> anyhow::Result<Mirror> {
    Ok(Mirror::open(dir, bucket)?)
}

/// The client of a run that writes the mirror: it expects the bucket owner the run
/// names or the mirror records, and must reach the source the mirror records (the
/// mount does the same in `mount::connect`). No request is made before the check.
pub(crate) async fn connect_to_source(
    mirror: &Mirror,
    bucket: &str,
    args: &S3Args,
    allow_new: bool,
) -> anyhow::Result<S3Store> {
    let requested = args.expected_bucket_owner.clone();
    let options = S3Options {
        expected_bucket_owner: mirror.expected_owner(requested.as_deref()),
        ..s3_options(args)
    };
    let store = S3Store::connect(bucket, &options).await;
    let source = Source {
        endpoint: store.source_endpoint().to_string(),
        owner: requested,
    };
    mirror.check_source(&source, allow_new)?;
    Ok(store)
}

/// The client of the bucket an inventory report is in: the source's endpoint,
/// region and credentials, and the bucket owner the source's requests expect
/// (S3 delivers reports to a bucket of the account that owns the source, as the
/// stack sets it up).
async fn connect_to_report(mirror: &Mirror, bucket: &str, args: &S3Args) -> S3Store {
    let requested = args.expected_bucket_owner.clone();
    let options = S3Options {
        expected_bucket_owner: mirror.expected_owner(requested.as_deref()),
        ..s3_options(args)
    };
    S3Store::connect(bucket, &options).await
}

fn block_on(command: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(command),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::from(2)
        }
    }
}

/// Prints a report as one JSON object or as text; `exit` gives the status from it
/// (0 all well, 1 problems found, 2 the command could not go on).
fn report<T: serde::Serialize>(
    result: Result<T, AdminError>,
    json: bool,
    render: impl Fn(&T) -> String,
    exit: impl Fn(&T) -> u8,
) -> ExitCode {
    match result {
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Ok(report) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&report).expect("report serializes")
                );
            } else {
                print!("{}", render(&report));
            }
            ExitCode::from(exit(&report))
        }
    }
}

fn status_command(args: &StatusArgs) -> ExitCode {
    report(
        admin::status::run(&args.mirror_dir),
        args.json,
        |r| r.render(),
        |_| 0,
    )
}

fn history_command(args: &HistoryArgs) -> ExitCode {
    match admin::history::run(&args.mirror_dir, &args.key) {
        // Asked about a key the mirror never held: an answer, not a failed run.
        Err(e @ AdminError::UnknownKey(_)) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
        result => report(result, args.json, |r| r.render(), |_| 0),
    }
}

async fn verify_command(args: VerifyArgs) -> ExitCode {
    let prefix = normalize_prefix(&args.target.prefix);
    let bucket = &args.target.bucket;
    // Without --remote no client is built, so nothing can reach S3.
    let store = match args.remote {
        true => Some(S3Store::connect(bucket, &s3_options(&args.s3)).await),
        false => None,
    };
    let result = admin::verify::run(
        &args.mirror_dir,
        bucket,
        &prefix,
        store.as_ref().map(|s| s as &dyn ObjectStore),
        args.history,
    )
    .await;
    report(result, args.json, |r| r.render(), |r| u8::from(!r.whole))
}

async fn restore_command(args: RestoreArgs) -> ExitCode {
    let s3 = Arc::new(S3Store::connect(&args.target.bucket, &s3_options(&args.s3)).await);
    let sink: Arc<dyn ObjectSink> = Arc::clone(&s3) as Arc<dyn ObjectSink>;
    let options = admin::restore::RestoreOptions {
        prefix: normalize_prefix(&args.target.prefix),
        dry_run: args.dry_run,
        concurrency: usize::from(args.concurrency),
        as_of: args.as_of,
    };
    let result = admin::restore::run(&args.mirror_dir, s3.as_ref(), sink, &options).await;
    if let Ok(restored) = &result
        && let Some(e) = &restored.error
    {
        eprintln!("error: restore stopped: {e}");
    }
    let exit = |r: &admin::restore::RestoreReport| match (&r.error, r.failed.is_empty()) {
        (Some(_), _) => 2,
        (None, false) => 1,
        (None, true) => 0,
    };
    report(result, args.json, |r| r.render(), exit)
}

async fn archive_command(args: ArchiveArgs) -> ExitCode {
    let encryption = match (args.sse, args.sse_kms_key_id.clone()) {
        (Sse::Aes256, Some(_)) => {
            eprintln!("error: --sse-kms-key-id needs --sse aws:kms (see s3mirrorfs --help)");
            return ExitCode::from(2);
        }
        (Sse::Aes256, None) => Encryption::S3Managed,
        (Sse::Kms, key_id) => Encryption::Kms { key_id },
    };
    // A bad source fails before anything is asked of S3.
    if let Err(e) = admin::archive::archive_name(&args.source) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let s3 = Arc::new(S3Store::connect(&args.target.bucket, &s3_options(&args.s3)).await);
    let sink: Arc<dyn ObjectSink> = Arc::clone(&s3) as Arc<dyn ObjectSink>;
    let options = admin::archive::ArchiveOptions {
        source: args.source.clone(),
        prefix: normalize_prefix(&args.target.prefix),
        keep: args.keep as usize,
        encryption,
        part_size: admin::archive::PART_SIZE,
    };
    let result = admin::archive::run(s3.as_ref(), sink, &options).await;
    report(
        result,
        args.json,
        |r| r.render(),
        |r| u8::from(!r.delete_failures.is_empty() || r.retention_error.is_some()),
    )
}
