//! The command line: the one home of clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Where the mirror lives unless `--mirror-dir` says otherwise.
pub const DEFAULT_MIRROR_DIR: &str = "/home/user/myS3backup";

#[derive(Debug, Parser)]
#[command(
    name = "s3mirrorfs",
    version,
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
    Prefetch(PrefetchArgs),
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
    /// S3 endpoint URL (default: AWS_ENDPOINT_URL or the AWS endpoint of the region).
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
    /// Objects downloaded at once.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// Print one JSON summary line on standard output at the end.
    #[arg(long)]
    pub json: bool,
    /// Remove local copies of keys that were deleted from S3 (kept by default).
    #[arg(long)]
    pub prune: bool,
    /// Only errors on standard error; no progress.
    #[arg(long, short)]
    pub quiet: bool,
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
