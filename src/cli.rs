//! The command line: the one home of clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The version `--version` prints: the package version and the git commit of the
/// build ("unknown" for a build outside a git checkout; see build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("S3MIRRORFS_COMMIT"),
    ")"
);

/// Where the mirror lives unless `--mirror-dir` says otherwise.
pub const DEFAULT_MIRROR_DIR: &str = "/home/user/myS3backup";

#[derive(Debug, Parser)]
#[command(
    name = "s3mirrorfs",
    version = VERSION,
    about = "Mount an S3 bucket read-only and keep a durable, complete local mirror of it"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More logging (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Download every object that is missing or changed, so the mirror is complete.
    #[command(
        after_help = "Archived objects (S3 Glacier Flexible Retrieval, Glacier Deep Archive, \
        Intelligent-Tiering archive tiers) cannot be read until they are restored: those the \
        mirror does not hold are counted as archived, not failed, and make no request on later \
        runs. --restore-archived DAYS requests their restores and fetches them once done."
    )]
    Prefetch(PrefetchArgs),
    /// Mount the bucket read-only; every object read is also kept in the mirror.
    #[command(
        after_help = "Archived objects (S3 Glacier Flexible Retrieval, Glacier Deep Archive, \
        Intelligent-Tiering archive tiers) are listed like any other and read from the mirror \
        when it holds them; reading one it does not hold fails at once with ENODATA (\"No data \
        available\"), and the log names the key and the prefetch --restore-archived that \
        fetches it."
    )]
    Mount(MountArgs),
    /// Apply S3 event notifications from an SQS queue to the mirror as they arrive.
    Follow(FollowArgs),
    /// What the mirror holds, how the last prefetch ended, who holds the lock (no S3 request).
    Status(StatusArgs),
    /// Hash every local copy against its record; with --remote, compare with S3 too.
    Verify(VerifyArgs),
    /// Upload every mirrored object back under its true key into an existing bucket
    /// (with --as-of, the bucket as it was at a past time).
    Restore(RestoreArgs),
    /// Every version the mirror holds of one key, the current copy first (no S3 request).
    History(HistoryArgs),
    /// Upload a directory as a dated tar.zst archive, keeping the newest N.
    Archive(ArchiveArgs),
}

/// A bucket and an optional key prefix: `BUCKET`, `BUCKET/PREFIX` or `s3://BUCKET/PREFIX`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub bucket: String,
    pub prefix: String,
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(value: &str) -> Result<Target, String> {
        let rest = value.strip_prefix("s3://").unwrap_or(value);
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err("the bucket name is empty".into());
        }
        if bucket.len() > 255
            || !bucket
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
        {
            return Err(format!("{bucket:?} is not a valid bucket name"));
        }
        Ok(Target {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

/// How to reach S3; unset values come from the standard AWS configuration.
#[derive(Clone, Debug, Args)]
pub struct S3Args {
    /// S3 endpoint URL (default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, the profile's, or AWS's).
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Address buckets as ENDPOINT/BUCKET instead of BUCKET.ENDPOINT.
    #[arg(long)]
    pub force_path_style: bool,
    /// AWS region (default: AWS_REGION, the profile's region, or the instance's).
    #[arg(long, value_name = "R")]
    pub region: Option<String>,
    /// Attempts per S3 request, the first included.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub max_attempts: u32,
    /// Seconds a response may go without sending a byte before it is cut and retried.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub stall_timeout: u64,
    /// The 12-digit AWS account id that must own the bucket, sent with every request
    /// (S3 refuses a bucket of another owner); prefetch and mount record it in the
    /// mirror and, without this flag, send the recorded one.
    #[arg(long, value_name = "ACCOUNT", value_parser = parse_account_id)]
    pub expected_bucket_owner: Option<String>,
}

/// Accepts an AWS account id: exactly 12 digits.
pub fn parse_account_id(value: &str) -> Result<String, String> {
    if value.len() == 12 && value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(value.to_string())
    } else {
        Err("an AWS account id is 12 digits".to_string())
    }
}

/// Whether a run may use another source than the one the mirror records.
#[derive(Clone, Debug, Args)]
pub struct SourceArgs {
    /// Accept another endpoint or bucket owner than the mirror records, and record
    /// the new one (the bucket really moved).
    #[arg(long)]
    pub allow_new_source: bool,
}

#[derive(Debug, Args)]
pub struct PrefetchArgs {
    /// The bucket, optionally with a key prefix to limit the mirror to.
    #[arg(value_name = "BUCKET[/PREFIX]")]
    pub target: Target,
    /// The mirror directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_MIRROR_DIR)]
    pub mirror_dir: PathBuf,
    #[command(flatten)]
    pub s3: S3Args,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Objects downloaded at once.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// Listing requests sent at once: a large prefix is cut into parts listed
    /// side by side (1 lists page after page).
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub list_workers: u16,
    /// How long S3 trouble is waited out before the run gives up on it: a
    /// listing page that keeps failing (S3 unreachable, throttling, server
    /// errors) is asked again, and an object S3 keeps throttling is tried
    /// again, for this long. Objects listed by a listing that gave up are
    /// still fetched, and nothing is pruned.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub retry_for: u64,
    /// Print one JSON summary line on standard output at the end.
    #[arg(long)]
    pub json: bool,
    /// Take local copies of keys that were deleted from S3 out of the mirror, into
    /// its history (by default they stay where they are).
    #[arg(long)]
    pub prune: bool,
    /// Days replaced and pruned versions are kept in DIR/.s3mirrorfs/history;
    /// 0 keeps none.
    #[arg(long, value_name = "DAYS", default_value_t = crate::prefetch::DEFAULT_KEEP_HISTORY_DAYS)]
    pub keep_history: u32,
    /// Refuse to run (exit 2, nothing changed) if more than PERCENT of the existing
    /// copies would be replaced or removed (and at least 10); 100 turns this off.
    #[arg(long, value_name = "PERCENT", default_value_t = crate::prefetch::DEFAULT_MAX_CHANGE,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub max_change: u8,
    /// Only errors on standard error; no progress.
    #[arg(long, short)]
    pub quiet: bool,
    /// Also restore the archived objects the mirror does not hold (Glacier
    /// Flexible Retrieval, Deep Archive, Intelligent-Tiering archive tiers):
    /// request a restore of each, its copy readable for DAYS days, and download
    /// those whose restore is done. Run again later for the rest.
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..=36500))]
    pub restore_archived: Option<u32>,
    /// How fast and at what price --restore-archived restores [default: Bulk,
    /// the cheapest; Deep Archive has no Expedited and gets Standard].
    #[arg(
        long,
        value_name = "TIER",
        value_enum,
        ignore_case = true,
        requires = "restore_archived"
    )]
    pub restore_tier: Option<RestoreTier>,
    /// Take the key list from an S3 Inventory report (CSV) of the bucket instead of
    /// listing it: s3://BUCKET/PATH/manifest.json, or s3://BUCKET/PATH/ for the
    /// newest report under PATH. Read with the same endpoint, region, credentials
    /// and bucket owner as the source; refused if older than 7 days.
    #[arg(long, value_name = "S3_URL")]
    pub inventory: Option<crate::inventory::ReportLocation>,
}

/// The retrieval tier of a restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RestoreTier {
    #[value(name = "Bulk")]
    Bulk,
    #[value(name = "Standard")]
    Standard,
    #[value(name = "Expedited")]
    Expedited,
}

#[derive(Debug, Args)]
pub struct FollowArgs {
    /// The bucket, optionally with the key prefix the mirror is limited to.
    #[arg(value_name = "BUCKET[/PREFIX]")]
    pub target: Target,
    /// The SQS queue the bucket's event notifications go to.
    #[arg(long, value_name = "URL")]
    pub queue_url: String,
    /// The mirror directory, shared with `prefetch` and `mount`.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_MIRROR_DIR)]
    pub mirror_dir: PathBuf,
    #[command(flatten)]
    pub s3: S3Args,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Messages applied at once (and S3 requests in flight).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// Drain the queue, then exit (0 all applied, 1 some failed).
    #[arg(long)]
    pub once: bool,
    /// Print one JSON summary line on standard output at exit.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MountArgs {
    /// The bucket, optionally with a key prefix to show as the root.
    #[arg(value_name = "BUCKET[/PREFIX]")]
    pub target: Target,
    /// Where to mount (an existing, empty directory).
    #[arg(value_name = "MOUNTPOINT")]
    pub mountpoint: PathBuf,
    /// The mirror directory, shared with `prefetch`.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_MIRROR_DIR)]
    pub mirror_dir: PathBuf,
    #[command(flatten)]
    pub s3: S3Args,
    #[command(flatten)]
    pub source: SourceArgs,
    /// How long listings and attributes are trusted before S3 is asked again.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub metadata_ttl: u64,
    /// Let users other than the one mounting see the files.
    #[arg(long)]
    pub allow_other: bool,
    /// Stay in the foreground instead of daemonizing (for systemd and debugging).
    #[arg(long, short)]
    pub foreground: bool,
    /// The user the daemon runs as once mounted, by name or uid, when started as
    /// root (default: the owner of the mirror directory).
    #[arg(long, value_name = "USER")]
    pub setuid: Option<String>,
    /// Owner shown for files and directories (default: the user the daemon runs as).
    #[arg(long, value_name = "U")]
    pub uid: Option<u32>,
    /// Group shown for files and directories (default: the user's group).
    #[arg(long, value_name = "G")]
    pub gid: Option<u32>,
    /// Mount options as /etc/fstab passes them (`-o allow_other,uid=1000,...`).
    #[arg(short = 'o', value_name = "OPTIONS", value_delimiter = ',')]
    pub options: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The mirror directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_MIRROR_DIR)]
    pub mirror_dir: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The bucket the mirror belongs to, optionally with the key prefix to check.
    #[arg(value_name = "BUCKET[/PREFIX]")]
    pub target: Target,
    /// The mirror directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_MIRROR_DIR)]
    pub mirror_dir: PathBuf,
    /// Also compare with the current S3 listing (missing, changed, extra keys).
    #[arg(long)]
    pub remote: bool,
    /// Also hash the versions kept in the mirror's history.
    #[arg(long)]
    pub history: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The existing bucket to restore into, optionally with a prefix: only keys under it are restored.
    #[arg(value_name = "DEST_BUCKET[/PREFIX]")]
    pub target: Target,
    /// The mirror directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_MIRROR_DIR)]
    pub mirror_dir: PathBuf,
    /// Upload nothing; list what would be uploaded.
    #[arg(long)]
    pub dry_run: bool,
    /// Put back the bucket as it was at TIME (RFC 3339, e.g. 2026-12-01T03:00:00Z),
    /// as far as the mirror knows it: for each key, the version current then.
    #[arg(long, value_name = "TIME", value_parser = crate::utc::parse_rfc3339)]
    pub as_of: Option<u64>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Objects uploaded at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The object key, exactly as in S3.
    #[arg(value_name = "KEY")]
    pub key: String,
    /// The mirror directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_MIRROR_DIR)]
    pub mirror_dir: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Server-side encryption for archives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Sse {
    /// SSE-S3.
    #[value(name = "AES256")]
    Aes256,
    /// SSE-KMS (the account's default key unless --sse-kms-key-id names one).
    #[value(name = "aws:kms")]
    Kms,
}

#[derive(Debug, Args)]
pub struct ArchiveArgs {
    /// The directory to archive.
    #[arg(value_name = "SRC_DIR")]
    pub source: PathBuf,
    /// Where archives go: `PREFIX/<dirname>-<yyyymmddThhmmssZ>.tar.zst`.
    #[arg(value_name = "BUCKET/PREFIX")]
    pub target: Target,
    /// Server-side encryption to request.
    #[arg(long, value_enum, default_value = "AES256")]
    pub sse: Sse,
    /// KMS key for --sse aws:kms (default: the account's S3 key).
    #[arg(long, value_name = "KEY_ID")]
    pub sse_kms_key_id: Option<String>,
    /// Archives of this directory to keep under the prefix, the new one included; 0 keeps all.
    #[arg(long, value_name = "N", default_value_t = 7, value_parser = clap::value_parser!(u32).range(0..=10000))]
    pub keep: u32,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub s3: S3Args,
}

impl MountArgs {
    /// Applies `-o` options from /etc/fstab onto the flags; generic mount options
    /// (rw/ro, auto, nofail, _netdev, x-systemd.*, ...) are accepted and ignored.
    pub fn apply_fstab_options(&mut self) -> Result<(), String> {
        for option in std::mem::take(&mut self.options) {
            let (name, value) = match option.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (option.as_str(), None),
            };
            let need = |v: Option<&str>| {
                v.map(str::to_string)
                    .ok_or(format!("mount option {name} needs a value"))
            };
            let number = |v: Option<&str>| {
                need(v)?
                    .parse::<u64>()
                    .map_err(|_| format!("mount option {option}: not a number"))
            };
            match name {
                "allow_other" => self.allow_other = true,
                "foreground" => self.foreground = true,
                "force_path_style" => self.s3.force_path_style = true,
                "allow_new_source" => self.source.allow_new_source = true,
                "expected_bucket_owner" => {
                    let owner = parse_account_id(&need(value)?)
                        .map_err(|e| format!("mount option {option}: {e}"))?;
                    self.s3.expected_bucket_owner = Some(owner);
                }
                "setuid" => self.setuid = Some(need(value)?),
                "uid" => self.uid = Some(number(value)? as u32),
                "gid" => self.gid = Some(number(value)? as u32),
                "metadata_ttl" => self.metadata_ttl = number(value)?,
                "mirror_dir" => self.mirror_dir = PathBuf::from(need(value)?),
                "endpoint_url" => self.s3.endpoint_url = Some(need(value)?),
                "region" => self.s3.region = Some(need(value)?),
                "max_attempts" => self.s3.max_attempts = number(value)?.clamp(1, 20) as u32,
                "stall_timeout" => self.s3.stall_timeout = number(value)?.clamp(1, 3600),
                "rw" => return Err("s3mirrorfs mounts are read-only; use ro".into()),
                "" | "ro" | "defaults" | "auto" | "noauto" | "nofail" | "_netdev" | "user"
                | "users" | "nouser" | "dev" | "nodev" | "suid" | "nosuid" | "exec" | "noexec"
                | "atime" | "noatime" | "relatime" => {}
                other if other.starts_with("x-") || other.starts_with("comment=") => {}
                other => return Err(format!("unknown mount option {other:?}")),
            }
        }
        Ok(())
    }
}

/// Rewrites the form a mount helper uses (`s3mirrorfs BUCKET MOUNTPOINT -o OPTS`,
/// from `mount.fuse3` and /etc/fstab) into `s3mirrorfs mount ...`.
pub fn fstab_args(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let first = args.get(1).and_then(|a| a.to_str()).unwrap_or("");
    let is_command = [
        "prefetch", "mount", "follow", "status", "verify", "restore", "history", "archive", "help",
    ]
    .contains(&first)
        || first.starts_with('-')
        || first.is_empty();
    if is_command || args.len() < 3 {
        return args;
    }
    let mut rewritten = vec![args[0].clone(), "mount".into()];
    rewritten.extend(args.into_iter().skip(1));
    rewritten
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn fstab_form_becomes_mount() {
        let args: Vec<std::ffi::OsString> = [
            "s3mirrorfs",
            "bucket",
            "/mnt",
            "-o",
            "ro,allow_other,uid=7,_netdev,setuid=user",
        ]
        .iter()
        .map(Into::into)
        .collect();
        let cli = Cli::try_parse_from(fstab_args(args)).unwrap();
        let Command::Mount(mut mount) = cli.command else {
            panic!("mount expected")
        };
        mount.apply_fstab_options().unwrap();
        assert!(mount.allow_other);
        assert_eq!(mount.uid, Some(7));
        assert_eq!(mount.setuid.as_deref(), Some("user"));
        assert_eq!(mount.mountpoint, PathBuf::from("/mnt"));
        let unknown: Vec<std::ffi::OsString> = ["s3mirrorfs", "b", "/mnt", "-o", "bogus"]
            .iter()
            .map(Into::into)
            .collect();
        let Command::Mount(mut mount) = Cli::try_parse_from(fstab_args(unknown)).unwrap().command
        else {
            panic!()
        };
        assert!(mount.apply_fstab_options().is_err());
        let normal: Vec<std::ffi::OsString> = ["s3mirrorfs", "prefetch", "b"]
            .iter()
            .map(Into::into)
            .collect();
        assert_eq!(fstab_args(normal.clone()), normal);
        for command in ["status", "verify", "restore", "archive"] {
            let args: Vec<std::ffi::OsString> = ["s3mirrorfs", command, "b", "x"]
                .iter()
                .map(Into::into)
                .collect();
            assert_eq!(fstab_args(args.clone()), args, "{command} is not a mount");
        }
    }

    #[test]
    fn fstab_options_set_retries_and_the_stall_timeout() {
        let args: Vec<std::ffi::OsString> = [
            "s3mirrorfs",
            "b",
            "/mnt",
            "-o",
            "max_attempts=5,stall_timeout=7",
        ]
        .iter()
        .map(Into::into)
        .collect();
        let Command::Mount(mut mount) = Cli::try_parse_from(fstab_args(args)).unwrap().command
        else {
            panic!("mount expected")
        };
        assert_eq!((mount.s3.max_attempts, mount.s3.stall_timeout), (3, 30));
        mount.apply_fstab_options().unwrap();
        assert_eq!((mount.s3.max_attempts, mount.s3.stall_timeout), (5, 7));
        let zero = Cli::try_parse_from(["s3mirrorfs", "prefetch", "b", "--stall-timeout", "0"]);
        assert!(
            zero.is_err(),
            "a stall timeout of 0 would cut every response"
        );
    }

    #[test]
    fn the_source_flags_and_options_parse() {
        let args =
            |args: &[&str]| -> Vec<std::ffi::OsString> { args.iter().map(Into::into).collect() };
        let Command::Prefetch(prefetch) = Cli::try_parse_from(args(&[
            "s3mirrorfs",
            "prefetch",
            "b",
            "--expected-bucket-owner",
            "123456789012",
            "--allow-new-source",
        ]))
        .unwrap()
        .command
        else {
            panic!("prefetch expected")
        };
        assert_eq!(
            prefetch.s3.expected_bucket_owner.as_deref(),
            Some("123456789012")
        );
        assert!(prefetch.source.allow_new_source);
        for bad in ["abc", "12345678901", "1234567890123", "12345678901x"] {
            let parsed = Cli::try_parse_from(args(&[
                "s3mirrorfs",
                "prefetch",
                "b",
                "--expected-bucket-owner",
                bad,
            ]));
            assert!(parsed.is_err(), "{bad} is not an account id");
        }
        let fstab = args(&[
            "s3mirrorfs",
            "b",
            "/mnt",
            "-o",
            "allow_new_source,expected_bucket_owner=123456789012",
        ]);
        let Command::Mount(mut mount) = Cli::try_parse_from(fstab_args(fstab)).unwrap().command
        else {
            panic!("mount expected")
        };
        assert!(!mount.source.allow_new_source);
        mount.apply_fstab_options().unwrap();
        assert!(mount.source.allow_new_source);
        assert_eq!(
            mount.s3.expected_bucket_owner.as_deref(),
            Some("123456789012")
        );
        let bad = args(&["s3mirrorfs", "b", "/mnt", "-o", "expected_bucket_owner=abc"]);
        let Command::Mount(mut mount) = Cli::try_parse_from(fstab_args(bad)).unwrap().command
        else {
            panic!("mount expected")
        };
        let err = mount.apply_fstab_options().unwrap_err();
        assert!(err.contains("12 digits"), "{err}");
    }

    #[test]
    fn restore_flags_parse() {
        let parse = |args: &[&str]| {
            let mut all = vec!["s3mirrorfs", "prefetch", "b"];
            all.extend(args);
            match Cli::try_parse_from(all).map(|c| c.command) {
                Ok(Command::Prefetch(p)) => Ok((p.restore_archived, p.restore_tier)),
                Ok(_) => panic!("prefetch expected"),
                Err(e) => Err(e.kind()),
            }
        };
        assert_eq!(parse(&[]), Ok((None, None)));
        assert_eq!(parse(&["--restore-archived", "7"]), Ok((Some(7), None)));
        assert_eq!(
            parse(&["--restore-archived", "7", "--restore-tier", "expedited"]),
            Ok((Some(7), Some(RestoreTier::Expedited)))
        );
        assert!(parse(&["--restore-archived", "0"]).is_err(), "0 days");
        assert!(
            parse(&["--restore-tier", "Bulk"]).is_err(),
            "a tier without --restore-archived"
        );
        assert!(parse(&["--restore-archived", "1", "--restore-tier", "Fast"]).is_err());
    }

    #[test]
    fn the_inventory_flag_takes_a_manifest_or_a_prefix() {
        let parse = |value: &str| match Cli::try_parse_from([
            "s3mirrorfs",
            "prefetch",
            "b",
            "--inventory",
            value,
        ]) {
            Ok(Cli {
                command: Command::Prefetch(p),
                ..
            }) => p.inventory.map(|l| (l.bucket, l.key)),
            Ok(_) => panic!("prefetch expected"),
            Err(_) => None,
        };
        assert_eq!(
            parse("s3://inv/r/b/cfg/2026-12-03T00-00Z/manifest.json"),
            Some((
                "inv".into(),
                "r/b/cfg/2026-12-03T00-00Z/manifest.json".into()
            ))
        );
        assert_eq!(
            parse("s3://inv/r/b/cfg/"),
            Some(("inv".into(), "r/b/cfg/".into()))
        );
        assert_eq!(parse("inv/r/manifest.json"), None, "not an s3:// URL");
        assert_eq!(
            parse("s3://inv/r/b/cfg"),
            None,
            "neither a manifest nor a prefix"
        );
    }

    #[test]
    fn targets_parse() {
        let t: Target = "bucket/photos/2024".parse().unwrap();
        assert_eq!(
            (t.bucket.as_str(), t.prefix.as_str()),
            ("bucket", "photos/2024")
        );
        let t: Target = "s3://bucket".parse().unwrap();
        assert_eq!((t.bucket.as_str(), t.prefix.as_str()), ("bucket", ""));
        assert!("".parse::<Target>().is_err());
        assert!("/x".parse::<Target>().is_err());
        assert!("bad bucket".parse::<Target>().is_err());
    }
}
