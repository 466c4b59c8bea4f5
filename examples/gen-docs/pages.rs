//! The manual pages and shell completions, rendered from the clap definitions in
//! `s3mirrorfs::cli` (the one home of clap_mangen and clap_complete). Shared by
//! the generator (main.rs, run by scripts/release) and tests/docs.rs, which checks
//! the pages against the binary's `--help`.

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, italic, roman};

use s3mirrorfs::cli::{Cli, DEFAULT_MIRROR_DIR};

/// The shells a completion script is made for, with the file it is written to.
pub const SHELLS: [(Shell, &str); 2] = [
    (Shell::Bash, "s3mirrorfs.bash"),
    (Shell::Zsh, "_s3mirrorfs"),
];

/// The clap command as the binary parses it, built (global options propagated,
/// subcommands named `s3mirrorfs-SUB`); no `help` subcommand, which has no page.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// Every page as (file name, roff source): `s3mirrorfs.1`, then
/// `s3mirrorfs-SUB.1` for each subcommand in the order of `--help`.
pub fn man_pages() -> Vec<(String, Vec<u8>)> {
    let cmd = command();
    let subs: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let mut pages = vec![page(&cmd, None)];
    pages.extend(subs.iter().map(|sub| page(sub, Some(sub.get_name()))));
    pages
}

/// One shell's completion script.
pub fn completion(shell: Shell) -> Vec<u8> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "s3mirrorfs", &mut out);
    out
}

fn page(cmd: &clap::Command, sub: Option<&str>) -> (String, Vec<u8>) {
    let man = Man::new(cmd.clone())
        .source(format!("s3mirrorfs {}", env!("CARGO_PKG_VERSION")))
        .manual("s3mirrorfs manual");
    let mut out = Vec::new();
    man.render_title(&mut out).expect("rendering into memory");
    man.render_name_section(&mut out)
        .expect("rendering into memory");
    man.render_synopsis_section(&mut out)
        .expect("rendering into memory");
    man.render_description_section(&mut out)
        .expect("rendering into memory");
    man.render_options_section(&mut out)
        .expect("rendering into memory");
    if sub.is_none() {
        man.render_subcommands_section(&mut out)
            .expect("rendering into memory");
    }
    let mut roff = Roff::new();
    if let Some(notes) = cmd.get_after_long_help().or(cmd.get_after_help()) {
        roff.control("SH", ["NOTES"])
            .text([roman(notes.to_string())]);
    }
    exit_status(&mut roff, sub);
    environment(&mut roff, sub);
    files(&mut roff);
    see_also(&mut roff, sub);
    roff.control("SH", ["VERSION"])
        .text([roman(s3mirrorfs::cli::VERSION)]);
    roff.to_writer(&mut out).expect("rendering into memory");
    (man.get_filename(), out)
}

/// What each exit status means; the binary's edge (src/bin/s3mirrorfs) decides them.
fn exit_status(roff: &mut Roff, sub: Option<&str>) {
    let statuses: &[(&str, &str)] = match sub {
        Some("prefetch") => &[
            (
                "0",
                "Every listed object is in the mirror, or archived (see NOTES).",
            ),
            (
                "1",
                "Some objects failed; each is named on standard error and in the JSON summary. The others were mirrored.",
            ),
            (
                "2",
                "The run could not go on: bad arguments, an unreachable endpoint, a missing bucket or credentials, \
                 a denied listing, an unusable or locked mirror, a mirror of another bucket, endpoint or bucket owner, \
                 or a run refused by the mass change guard (--max-change).",
            ),
        ],
        Some("mount") => &[
            (
                "0",
                "Mounted (without --foreground), or unmounted cleanly (with it).",
            ),
            ("1", "The mount failed; the reason is on standard error."),
            (
                "2",
                "Bad arguments or mount options, or a mirror of another bucket, endpoint or bucket owner.",
            ),
        ],
        Some("follow") => &[
            (
                "0",
                "Stopped by SIGTERM or SIGINT; with --once, every message was applied.",
            ),
            (
                "1",
                "With --once: some messages were left in the queue for redelivery.",
            ),
            (
                "2",
                "Bad arguments, or the queue or S3 cannot be used (a wrong queue URL, no permission).",
            ),
        ],
        Some("history") => &[
            ("0", "The versions were listed."),
            ("1", "The mirror never held the key."),
            ("2", "Bad arguments, or no usable mirror."),
        ],
        Some(_) => &[
            ("0", "All is well."),
            (
                "1",
                "Problems were found, or some objects failed; each is listed.",
            ),
            (
                "2",
                "Bad arguments, or something stopped the command: no mirror, a missing bucket or credentials, \
                 an unreachable endpoint.",
            ),
        ],
        None => &[
            ("0", "Success."),
            (
                "1",
                "Some objects failed or problems were found; the command went on with the rest.",
            ),
            (
                "2",
                "Bad arguments, or the command could not go on. Each command's page says exactly when.",
            ),
        ],
    };
    roff.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in statuses {
        roff.control("TP", [])
            .text([bold(*code)])
            .text([roman(*meaning)]);
    }
}

fn environment(roff: &mut Roff, sub: Option<&str>) {
    roff.control("SH", ["ENVIRONMENT"]);
    let mut vars = vec![
        (
            "RUST_LOG",
            "Overrides the log filter that -v and -vv choose (tracing-subscriber syntax).",
        ),
        (
            "AWS_REGION, AWS_PROFILE, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL",
            "The standard AWS configuration, used for whatever the command line leaves unset; \
             on EC2 the credentials come from the instance role.",
        ),
    ];
    if matches!(sub, None | Some("follow")) {
        vars.push((
            "AWS_ENDPOINT_URL_SQS",
            "Where follow sends its SQS requests (default: the queue URL's host).",
        ));
    }
    for (name, meaning) in vars {
        roff.control("TP", [])
            .text([bold(name)])
            .text([roman(meaning)]);
    }
}

fn files(roff: &mut Roff) {
    roff.control("SH", ["FILES"]);
    let entries = [
        (
            DEFAULT_MIRROR_DIR.to_string(),
            "The mirror (default of --mirror-dir): every object a plain file at DIR/KEY, with its key, ETag, \
             size and MD5 in the extended attribute user.s3mirrorfs and the object's LastModified as its mtime.",
        ),
        (
            "DIR/.s3mirrorfs/".to_string(),
            "The mirror's own state, the only thing of the tool's in the mirror: renamed/ (objects whose key is \
             not a usable path), tmp/ (downloads in progress), listings/ (listings saved by the mount), index/ \
             (what the last prefetch listed), history/ (versions replaced or pruned), last-prefetch.json, \
             archived.jsonl, mount.log, the locks, and mirror.json (which bucket, endpoint and bucket owner \
             the mirror belongs to).",
        ),
        (
            "/etc/s3mirrorfs.env".to_string(),
            "Settings of the systemd units and the cron job: S3MIRRORFS_BUCKET, S3MIRRORFS_MOUNTPOINT, \
             S3MIRRORFS_MIRROR_DIR, AWS_REGION, S3MIRRORFS_PREFETCH_OPTIONS, S3MIRRORFS_QUEUE_URL.",
        ),
        (
            "/etc/s3mirrorfs-archive.env".to_string(),
            "Settings of s3mirrorfs-archive.service; without it there is no archive.",
        ),
        (
            "/usr/lib/systemd/system/s3mirrorfs-*.service, s3mirrorfs-*.timer".to_string(),
            "The units: mount, prefetch (and its daily timer), follow, archive (and its daily timer). \
             Installing the package enables none of them.",
        ),
        (
            "/usr/share/s3mirrorfs/cron/".to_string(),
            "Daily jobs for hosts that schedule with cron instead of the timers; copy one into /etc/cron.d \
             to use it, never together with its timer.",
        ),
    ];
    for (path, meaning) in entries {
        roff.control("TP", [])
            .text([italic(path)])
            .text([roman(meaning)]);
    }
}

fn see_also(roff: &mut Roff, sub: Option<&str>) {
    roff.control("SH", ["SEE ALSO"]);
    let mut refs: Vec<String> = Vec::new();
    if sub.is_some() {
        refs.push("s3mirrorfs(1)".into());
    }
    refs.extend(
        command()
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && Some(s.get_name()) != sub)
            .map(|s| format!("s3mirrorfs-{}(1)", s.get_name())),
    );
    refs.extend(["fusermount3(1)".into(), "systemctl(1)".into()]);
    roff.text([roman(refs.join(", "))]);
    roff.control("PP", []).text([roman(
        "The README (/usr/share/doc/s3mirrorfs/README.md) describes the deployment, the mirror layout and \
         every command in full.",
    )]);
}
