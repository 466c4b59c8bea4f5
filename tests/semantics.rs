//! Keeps doc/SEMANTICS.md true: its example table and the names, modes and limits
//! it quotes are checked against the code.

use std::path::PathBuf;

use clap::CommandFactory;
use s3mirrorfs::cli::Cli;
use s3mirrorfs::fetch::FetchConfig;
use s3mirrorfs::fs::stream::FAR_AHEAD;
use s3mirrorfs::fs::{
    DIR_PERM, FILE_PERM, FINISH_LEFT, FINISH_SMALL, HELD_INODES_MAX, IDLE_INODES_MAX,
    LIST_AHEAD_AT_ONCE, LIST_AHEAD_MAX, LISTED_BYTES_MAX, OFFLINE_BACKOFF, ONE_PAGE_ENTRIES,
    SIBLING_MAX_SIZE, SIBLINGS_AT_ONCE, SIBLINGS_DIR_BYTES, SIBLINGS_MAX, SIBLINGS_MIN_FREE,
    SIBLINGS_MIN_FREE_PERCENT, SIBLINGS_PENDING_BYTES,
};
use s3mirrorfs::fuse::{MAX_BACKGROUND, S3_WAITS_AT_ONCE};
use s3mirrorfs::layout::{
    NAME_MAX, Placement, REL_PATH_MAX, RENAMED_DIR, STATE_DIR, place_alone, renamed_path,
};
use s3mirrorfs::mirror::{DIR_MODE, FILE_MODE, RECORD_XATTR, Record};
use s3mirrorfs::s3::S3Options;
use s3mirrorfs::store::{ETag, Key};

fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/doc/SEMANTICS.md")).unwrap()
}

fn unquote(cell: &str) -> String {
    cell.trim().trim_matches('`').to_string()
}

#[test]
fn the_example_table_matches_the_layout() {
    let doc = doc();
    let start = doc.find("<!-- examples -->").expect("examples marker");
    let end = doc.find("<!-- /examples -->").expect("end marker");
    let rows: Vec<&str> = doc[start..end]
        .lines()
        .filter(|l| l.starts_with("| `"))
        .collect();
    assert!(rows.len() >= 15, "the table has its examples");
    for row in rows {
        let cells: Vec<&str> = row.trim_matches('|').split(" | ").collect();
        let key = unquote(cells[0]);
        let size: u64 = cells[1].trim().parse().unwrap();
        let expected = cells[2].trim();
        let actual = place_alone(&key, size);
        match expected.split_once(' ') {
            Some(("file", path)) => assert_eq!(
                actual,
                Placement::File(PathBuf::from(unquote(path))),
                "{key:?}"
            ),
            Some(("directory", path)) => {
                assert_eq!(
                    actual,
                    Placement::Directory(PathBuf::from(unquote(path))),
                    "{key:?}"
                )
            }
            None if expected == "renamed" => {
                assert!(
                    matches!(&actual, Placement::Renamed { path, .. } if *path == renamed_path(&key)),
                    "{key:?}"
                )
            }
            _ => panic!("unknown expectation {expected:?}"),
        }
    }
}

#[test]
fn quoted_names_modes_and_limits_match_the_code() {
    // Prose wraps; compare with runs of whitespace folded into one space.
    let doc = doc().split_whitespace().collect::<Vec<_>>().join(" ");
    let quoted = |text: &str| assert!(doc.contains(text), "SEMANTICS.md mentions {text}");
    quoted(&format!("`{:04o}`", FILE_MODE));
    quoted(&format!("`{:04o}`", DIR_MODE));
    quoted(&format!("`{RECORD_XATTR}`"));
    quoted(&format!("`{RENAMED_DIR}/"));
    quoted(&format!("`{STATE_DIR}/`"));
    quoted(&format!("at most {NAME_MAX} bytes"));
    quoted(&format!("at most {REL_PATH_MAX} bytes"));
    let record = Record {
        key: Key::new("<key>").unwrap(),
        // The placeholder stands for the ETag in S3's quoted form.
        etag: ETag::new("<etag>"),
        size: 0,
        md5: Some("0".repeat(32)),
        corrupt: false,
    };
    let encoded = String::from_utf8(record.encode())
        .unwrap()
        .replace('\n', "\\n")
        .replace("\"<etag>\"", "<etag>")
        .replace("\\n0\\n", "\\n<size>\\n")
        .replace(&"0".repeat(32), "<md5>");
    quoted(&format!("`{encoded}`"));

    let fetch = FetchConfig::default();
    quoted(&format!(
        "more than {} MiB are fetched in ranged parts in parallel, a sixteenth of the object each, at least {} MiB and at most {} MiB",
        fetch.part_size >> 20,
        fetch.part_size >> 20,
        fetch.max_part_size >> 20
    ));
    assert_eq!(fetch.parts_per_object, 16, "SEMANTICS.md says a sixteenth");
    quoted(&format!(
        "at most {} parts of one object at once",
        fetch.parts_at_once
    ));
    quoted(&format!(
        "is asked for again, up to {} more times",
        s3mirrorfs::fetch::PART_TRIES_AGAIN
    ));
    quoted(&format!("no data for {} s", fetch.stall_timeout.as_secs()));
    quoted(&format!("up to {} attempts", fetch.max_attempts));
    let s3 = S3Options::default();
    quoted(&format!(
        "{} attempts, {} s connect and {} s first-byte timeouts",
        s3.max_attempts,
        s3.connect_timeout.as_secs(),
        s3.read_timeout.as_secs()
    ));
}

#[test]
fn the_filesystem_section_matches_the_code() {
    let doc = doc().split_whitespace().collect::<Vec<_>>().join(" ");
    let quoted = |text: &str| assert!(doc.contains(text), "SEMANTICS.md mentions {text}");
    quoted(&format!(
        "Files show mode `{FILE_PERM:04o}` and directories `{DIR_PERM:04o}`"
    ));
    quoted(&format!("more than {} MiB ahead", FAR_AHEAD >> 20));
    quoted(&format!(
        "at most {SIBLINGS_MAX} files, each at most {} MiB, {SIBLINGS_AT_ONCE} at a time",
        SIBLING_MAX_SIZE >> 20
    ));
    quoted(&format!(
        "at most {} MiB in one window of the directory",
        SIBLINGS_DIR_BYTES >> 20
    ));
    quoted(&format!(
        "together hold at most {} GiB claimed and not yet fetched",
        SIBLINGS_PENDING_BYTES >> 30
    ));
    quoted(&format!(
        "less than {} GiB or less than {SIBLINGS_MIN_FREE_PERCENT} % of its size free",
        SIBLINGS_MIN_FREE >> 30
    ));
    quoted(&format!(
        "when the object is at most {} MiB, or at most {} MiB of it is left",
        FINISH_SMALL >> 20,
        FINISH_LEFT >> 20
    ));
    quoted(&format!(
        "background threads, at most {S3_WAITS_AT_ONCE} at a time"
    ));
    quoted(&format!(
        "may have {MAX_BACKGROUND} readahead requests pending"
    ));
    quoted(&format!(
        "directory's listings again for {} s",
        OFFLINE_BACKOFF.as_secs()
    ));
    quoted(&format!(
        "at most {LIST_AHEAD_MAX} of them, {LIST_AHEAD_AT_ONCE} at a time"
    ));
    quoted(&format!("kept for at most {IDLE_INODES_MAX} inodes"));
    quoted(&format!(
        "once it holds more than {HELD_INODES_MAX}, the daemon"
    ));
    quoted(&format!(
        "a saved listing not written for {} days",
        s3mirrorfs::fs::listing::SAVED_LISTING_KEEP.as_secs() / 86_400
    ));
    quoted(&format!(
        "one ListObjectsV2 of at most {} keys under `DIR/NAME`",
        s3mirrorfs::fs::listing::NAME_LIST_KEYS
    ));
    quoted(&format!(
        "kept in memory for at most {} MiB in all",
        LISTED_BYTES_MAX >> 20
    ));
    quoted(&format!(
        "had at most {ONE_PAGE_ENTRIES} entries (one page of a listing)"
    ));
    let cli = Cli::command();
    let mount = cli.find_subcommand("mount").expect("mount subcommand");
    let ttl = mount
        .get_arguments()
        .find(|a| a.get_id() == "metadata_ttl")
        .expect("--metadata-ttl");
    let default = ttl.get_default_values()[0].to_str().unwrap();
    quoted(&format!("`--metadata-ttl` seconds (default {default})"));
}

#[test]
fn the_admin_section_matches_the_code() {
    use s3mirrorfs::admin::{archive, restore};
    use s3mirrorfs::mirror::CORRUPT_MARK;
    use s3mirrorfs::prefetch::LAST_PREFETCH_FILE;
    let doc = doc().split_whitespace().collect::<Vec<_>>().join(" ");
    let quoted = |text: &str| assert!(doc.contains(text), "SEMANTICS.md mentions {text}");
    quoted(&format!("`{STATE_DIR}/{LAST_PREFETCH_FILE}`"));
    quoted(&format!("`{CORRUPT_MARK}`"));
    quoted(&format!(
        "more than {} MiB go up in multipart uploads of {} MiB parts",
        restore::MULTIPART_THRESHOLD >> 20,
        restore::PART_SIZE >> 20
    ));
    quoted(&format!(
        "cut into parts of {} MiB",
        archive::PART_SIZE >> 20
    ));
}

#[test]
fn the_history_sections_match_the_code() {
    use s3mirrorfs::layout::HISTORY_DIR;
    use s3mirrorfs::mirror::history::{CHANGE_WARNING, JOURNAL};
    use s3mirrorfs::prefetch::{DEFAULT_KEEP_HISTORY_DAYS, DEFAULT_MAX_CHANGE, GUARD_MIN_CHANGES};
    let doc = doc().split_whitespace().collect::<Vec<_>>().join(" ");
    let quoted = |text: &str| assert!(doc.contains(text), "SEMANTICS.md mentions {text}");
    quoted(&format!(
        "`{HISTORY_DIR}/<first 32 hex digits of SHA-256(key)>/`"
    ));
    quoted(&format!("`{JOURNAL}`"));
    quoted(&format!(
        "`--keep-history DAYS` (default {DEFAULT_KEEP_HISTORY_DAYS})"
    ));
    quoted(&format!(
        "at least {GUARD_MIN_CHANGES} and more than `--max-change PERCENT` (default {DEFAULT_MAX_CHANGE})"
    ));
    quoted(&format!("past {CHANGE_WARNING} in one minute"));
    // The flags' defaults are the ones the code uses.
    let cli = Cli::command();
    let prefetch = cli
        .find_subcommand("prefetch")
        .expect("prefetch subcommand");
    let default = |id: &str| {
        let arg = prefetch.get_arguments().find(|a| a.get_id() == id).unwrap();
        arg.get_default_values()[0].to_str().unwrap().to_string()
    };
    assert_eq!(
        default("keep_history"),
        DEFAULT_KEEP_HISTORY_DAYS.to_string()
    );
    assert_eq!(default("max_change"), DEFAULT_MAX_CHANGE.to_string());
}

/// The indented block between `<!-- name -->` and `<!-- /name -->`, unindented.
fn block(doc: &str, name: &str) -> String {
    let start = doc.find(&format!("<!-- {name} -->")).expect("start marker");
    let end = doc.find(&format!("<!-- /{name} -->")).expect("end marker");
    doc[start..end]
        .lines()
        .skip(1)
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_identity_section_matches_the_code() {
    use s3mirrorfs::mirror::MirrorError;
    use s3mirrorfs::mirror::identity::{IDENTITY_FILE, Identity, SourceField};
    let doc = doc();
    let folded = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(folded.contains(&format!("`{STATE_DIR}/{IDENTITY_FILE}`")));
    // The example is what the code writes, field for field.
    let example = block(&doc, "identity");
    let identity: Identity = serde_json::from_str(&example).unwrap();
    assert_eq!(serde_json::to_string(&identity).unwrap(), example);
    let refusal = MirrorError::OtherSource {
        path: PathBuf::from("/m"),
        field: SourceField::Endpoint,
        recorded: "http://127.0.0.1:5000".into(),
        requested: String::new(),
    };
    assert_eq!(block(&doc, "refusal"), refusal.to_string());
    let cli = Cli::command();
    for command in ["prefetch", "mount"] {
        let command = cli.find_subcommand(command).unwrap();
        for flag in ["allow_new_source", "expected_bucket_owner"] {
            assert!(
                command.get_arguments().any(|a| a.get_id() == flag),
                "{} has --{flag}",
                command.get_name()
            );
        }
    }
}

#[test]
fn the_archived_section_matches_the_code() {
    use s3mirrorfs::fs::FsError;
    use s3mirrorfs::prefetch::ARCHIVED_FILE;
    use s3mirrorfs::prefetch::archived::ArchivedEntry;
    let doc = doc();
    let folded = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    let quoted = |text: &str| assert!(folded.contains(text), "SEMANTICS.md mentions {text}");
    quoted(&format!("`{STATE_DIR}/{ARCHIVED_FILE}`"));
    // The example line is what the code writes, field for field.
    let example = block(&doc, "archived");
    let entry: ArchivedEntry = serde_json::from_str(&example).unwrap();
    assert_eq!(serde_json::to_string(&entry).unwrap(), example);
    assert_eq!(FsError::archived("x").errno(), libc::ENODATA);
    quoted("fails at once with `ENODATA`");
    let cli = Cli::command();
    let prefetch = cli.find_subcommand("prefetch").unwrap();
    let tier = prefetch
        .get_arguments()
        .find(|a| a.get_id() == "restore_tier")
        .expect("--restore-tier");
    let values: Vec<String> = tier
        .get_possible_values()
        .iter()
        .map(|v| v.get_name().to_string())
        .collect();
    quoted(&format!("`--restore-tier {}`", values.join("|")));
    assert!(
        prefetch
            .get_arguments()
            .any(|a| a.get_id() == "restore_archived")
    );
}
