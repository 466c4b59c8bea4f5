//! `s3mirrorfs verify`: hashes every local copy against what was recorded when it
//! was downloaded (bit rot keeps size and mtime), compares the mirror with the index
//! of the last prefetch (copies deleted or replaced by hand) or, with `--remote`,
//! with the current listing. A corrupt copy is marked so that the next prefetch
//! fetches it again; its bytes stay until then.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use serde::Serialize;

use super::{AdminError, under};
use crate::layout::{Placement, place_alone};
use crate::mirror::Record;
use crate::mirror::inventory::{CORRUPT_MARK, Entry, MirrorView, mark_corrupt, read_record_of};
use crate::prefetch::progress::human_bytes;
use crate::store::{ETag, ObjectStore, list_all};

/// Copies hashed at once: enough to keep a disk busy, few enough for two cores.
const HASH_THREADS: usize = 4;

/// What is wrong with one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The bytes are not what was recorded (bit rot, truncation, edited by hand).
    Corrupt,
    /// S3 has (or the last prefetch listed) the key and the mirror has no copy.
    Missing,
    /// The copy is another version than S3 lists (or than the last prefetch listed).
    Changed,
    /// The mirror keeps a copy of a key S3 no longer has (kept on purpose).
    Extra,
    /// The copy has no recorded content hash and a multipart ETag: only its size was checked.
    Unchecked,
    /// A file or directory of the mirror could not be read.
    Unreadable,
}

impl ProblemKind {
    /// Whether the backup is still whole with this problem.
    pub fn breaks_backup(self) -> bool {
        !matches!(self, ProblemKind::Extra | ProblemKind::Unchecked)
    }

    fn label(self) -> &'static str {
        match self {
            ProblemKind::Corrupt => "corrupt",
            ProblemKind::Missing => "missing",
            ProblemKind::Changed => "changed",
            ProblemKind::Extra => "extra",
            ProblemKind::Unchecked => "unchecked",
            ProblemKind::Unreadable => "unreadable",
        }
    }
}

/// One problem, by the object's true key.
#[derive(Clone, Debug, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    pub key: String,
    /// The local copy's path relative to the mirror, when there is one.
    pub path: Option<String>,
    pub detail: String,
}

/// What `verify` found; `--json` prints it as one object.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    pub bucket: String,
    pub prefix: String,
    pub mirror: String,
    pub remote: bool,
    /// Local copies checked.
    pub checked: u64,
    /// Bytes hashed.
    pub bytes: u64,
    pub ok: u64,
    pub corrupt: u64,
    pub missing: u64,
    pub changed: u64,
    pub extra: u64,
    pub unchecked: u64,
    pub unreadable: u64,
    /// Whether every object has an intact, current copy.
    pub whole: bool,
    /// Without `--remote`: whether a prefetch left an index to compare with (if not,
    /// only the copies themselves were checked).
    pub indexed: bool,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    fn add(&mut self, kind: ProblemKind, key: &str, path: Option<&Path>, detail: String) {
        let counter = match kind {
            ProblemKind::Corrupt => &mut self.corrupt,
            ProblemKind::Missing => &mut self.missing,
            ProblemKind::Changed => &mut self.changed,
            ProblemKind::Extra => &mut self.extra,
            ProblemKind::Unchecked => &mut self.unchecked,
            ProblemKind::Unreadable => &mut self.unreadable,
        };
        *counter += 1;
        self.problems.push(Problem {
            kind,
            key: key.to_string(),
            path: path.map(|p| p.to_string_lossy().into_owned()),
            detail,
        });
    }

    /// One line per problem (keys escaped as `Key` displays them), then a summary line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for p in &self.problems {
            let key = crate::store::Key::new(p.key.clone())
                .map(|k| k.to_string())
                .unwrap_or_default();
            out.push_str(&format!("{:<10} {key}: {}\n", p.kind.label(), p.detail));
        }
        let against = if self.remote {
            "the S3 listing"
        } else {
            "the last prefetch's listing"
        };
        out.push_str(&format!(
            "checked {} copies ({}) against their records and {against}: {} ok, {} corrupt, {} missing, {} changed, {} unreadable, {} extra, {} unchecked\n",
            self.checked,
            human_bytes(self.bytes),
            self.ok,
            self.corrupt,
            self.missing,
            self.changed,
            self.unreadable,
            self.extra,
            self.unchecked
        ));
        if !self.indexed {
            out.push_str("no prefetch has saved an index of its listing yet: copies deleted by hand cannot be told; use --remote\n");
        }
        if self.whole {
            out.push_str("the backup is whole\n");
        } else {
            let target = if self.prefix.is_empty() {
                self.bucket.clone()
            } else {
                format!("{}/{}", self.bucket, self.prefix)
            };
            out.push_str(&format!(
                "the backup is NOT whole: run `s3mirrorfs prefetch {target} --mirror-dir {}` to fetch the missing, changed and corrupt objects again\n",
                self.mirror
            ));
        }
        out
    }
}

/// How one local copy checked out.
enum Check {
    Ok,
    Problem(ProblemKind, String),
}

/// Verifies the mirror at `dir` for `bucket`/`prefix`; with `remote`, against its listing.
pub async fn run(
    dir: &Path,
    bucket: &str,
    prefix: &str,
    remote: Option<&dyn ObjectStore>,
) -> Result<VerifyReport, AdminError> {
    let view = MirrorView::open(dir)?;
    view.check_bucket(bucket)?;
    let mut report = VerifyReport {
        bucket: bucket.to_string(),
        prefix: prefix.to_string(),
        mirror: dir.display().to_string(),
        remote: remote.is_some(),
        ..VerifyReport::default()
    };
    // Listing first: a bucket that does not exist or a missing credential stops
    // the run before any hashing.
    let listing = match remote {
        Some(store) => Some(list_all(store, prefix).await?),
        None => None,
    };
    let index = if listing.is_none() {
        view.index()?
    } else {
        HashMap::new()
    };
    report.indexed = listing.is_some() || !index.is_empty();
    let (entries, errors) = view.entries();
    for e in errors {
        report.add(
            ProblemKind::Unreadable,
            "",
            Some(e.path.strip_prefix(dir).unwrap_or(&e.path)),
            format!("{}: {}", e.path.display(), e.err),
        );
    }
    let entries: Vec<Entry> = entries
        .into_iter()
        .filter(|e| under(&e.record.key, prefix))
        .collect();
    let root = view.root().to_path_buf();
    let checks = {
        let entries = entries.clone();
        tokio::task::spawn_blocking(move || check_all(&root, &entries))
            .await
            .expect("hashing does not panic")
    };
    let mut local: HashMap<&str, Vec<&Entry>> = HashMap::new();
    for (entry, (check, hashed)) in entries.iter().zip(checks) {
        report.checked += 1;
        report.bytes += hashed;
        local
            .entry(entry.record.key.as_str())
            .or_default()
            .push(entry);
        match check {
            Check::Ok => report.ok += 1,
            Check::Problem(kind, detail) => {
                report.add(kind, &entry.record.key, Some(&entry.path), detail)
            }
        }
    }

    let expected: Vec<(String, String, u64, Option<String>)> = match listing {
        Some(objects) => objects
            .into_iter()
            .map(|o| {
                (
                    o.key.as_str().to_string(),
                    o.etag.as_str().to_string(),
                    o.size,
                    None,
                )
            })
            .collect(),
        None => index
            .into_values()
            .filter(|e| under(&e.key, prefix))
            .map(|e| (e.key, e.etag, e.size, Some(e.path)))
            .collect(),
    };
    let source = if remote.is_some() {
        "S3 lists"
    } else {
        "the last prefetch listed"
    };
    let mut expected_keys = HashSet::new();
    let mut expected = expected;
    expected.sort();
    for (key, etag, size, path) in &expected {
        expected_keys.insert(key.as_str());
        match local.get(key.as_str()) {
            None => {
                let marker_dir = match (path, place_alone(key, *size)) {
                    (Some(p), _) => Some(dir.join(p)),
                    (None, Placement::Directory(p)) => Some(dir.join(p)),
                    (None, _) => None,
                };
                if *size == 0 && key.ends_with('/') && marker_dir.is_some_and(|p| p.is_dir()) {
                    // A marker directory made before markers carried a record.
                    continue;
                }
                report.add(
                    ProblemKind::Missing,
                    key,
                    path.as_deref().map(Path::new),
                    format!("{source} it (ETag {etag}, {size} bytes) but the mirror has no copy"),
                );
            }
            Some(copies) => {
                let current = copies.iter().any(|c| {
                    c.record.size == *size && c.record.etag.trim_start_matches(CORRUPT_MARK) == etag
                });
                if !current {
                    let copy = copies[0];
                    report.add(
                        ProblemKind::Changed,
                        key,
                        Some(&copy.path),
                        format!(
                            "{source} ETag {etag}, {size} bytes; the mirror holds ETag {}, {} bytes",
                            copy.record.etag.trim_start_matches(CORRUPT_MARK),
                            copy.record.size
                        ),
                    );
                }
            }
        }
    }
    if remote.is_some() {
        for entry in &entries {
            if !expected_keys.contains(entry.record.key.as_str()) {
                report.add(
                    ProblemKind::Extra,
                    &entry.record.key,
                    Some(&entry.path),
                    "deleted from S3; the local copy is kept (prefetch --prune removes it)".into(),
                );
            }
        }
    }
    report.whole = report.problems.iter().all(|p| !p.kind.breaks_backup());
    Ok(report)
}

/// Checks every entry on a few threads; returns each one's outcome and bytes hashed, in order.
fn check_all(root: &Path, entries: &[Entry]) -> Vec<(Check, u64)> {
    let results: Vec<Mutex<Option<(Check, u64)>>> =
        entries.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..HASH_THREADS.min(entries.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(entry) = entries.get(i) else { break };
                    *results[i].lock() = Some(check_one(&root.join(&entry.path), entry));
                }
            });
        }
    });
    results
        .into_iter()
        .map(|r| r.into_inner().expect("every entry is checked"))
        .collect()
}

/// Checks one copy: the record is read from the open file, so a copy a prefetch
/// replaces meanwhile is judged by its own record.
fn check_one(path: &Path, entry: &Entry) -> (Check, u64) {
    let unreadable = |e: io::Error| {
        (
            Check::Problem(ProblemKind::Unreadable, format!("{}: {e}", path.display())),
            0,
        )
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return (
                Check::Problem(
                    ProblemKind::Missing,
                    "the copy disappeared while verifying".into(),
                ),
                0,
            );
        }
        Err(e) => return unreadable(e),
    };
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(e) => return unreadable(e),
    };
    let record = read_record_of(&file).unwrap_or_else(|| entry.record.clone());
    if entry.directory {
        return (Check::Ok, 0);
    }
    if record.etag.starts_with(CORRUPT_MARK) {
        return (
            Check::Problem(
                ProblemKind::Corrupt,
                "an earlier verify found this copy corrupt; the next prefetch fetches it again"
                    .into(),
            ),
            0,
        );
    }
    if meta.len() != record.size {
        let note = mark(&file, &record, path);
        return (
            Check::Problem(
                ProblemKind::Corrupt,
                format!(
                    "{} bytes on disk, {} recorded{note}",
                    meta.len(),
                    record.size
                ),
            ),
            0,
        );
    }
    let expected = match (&record.md5, ETag::new(&record.etag).looks_like_md5()) {
        (Some(md5), _) => md5.clone(),
        (None, true) => record.etag.trim_matches('"').to_ascii_lowercase(),
        (None, false) => {
            return (
                Check::Problem(
                    ProblemKind::Unchecked,
                    format!(
                        "no recorded hash (the copy predates content hashes and ETag {} is not an MD5); size checked only",
                        record.etag
                    ),
                ),
                0,
            );
        }
    };
    let actual = match crate::mirror::md5_file(&file) {
        Ok(md5) => md5,
        Err(e) => return unreadable(e),
    };
    if actual != expected {
        let note = mark(&file, &record, path);
        return (
            Check::Problem(
                ProblemKind::Corrupt,
                format!("contents hash to MD5 {actual}, {expected} recorded{note}"),
            ),
            meta.len(),
        );
    }
    (Check::Ok, meta.len())
}

/// Marks the copy for the next prefetch; returns what to add to the report if that failed.
fn mark(file: &File, record: &Record, path: &Path) -> String {
    match mark_corrupt(file, record) {
        Ok(()) => String::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot mark the copy as corrupt: {e}");
            format!(
                " (it could not be marked for the next prefetch: {e}; run verify as the mirror's owner, or delete the copy)"
            )
        }
    }
}
