//! `s3mirrorfs verify`: hashes every local copy against what was recorded when it
//! was downloaded (bit rot keeps size and mtime), compares the mirror with the index
//! of the last prefetch (copies deleted or replaced by hand) or, with `--remote`,
//! with the current listing. A corrupt copy is marked so that the next prefetch
//! fetches it again; its bytes stay until then.

use std::fs::{File, Metadata};
use std::io;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use super::{AdminError, under};
use crate::layout::{Placement, place_alone};
use crate::mirror::Record;
use crate::mirror::inventory::{
    Entry, MirrorView, SpooledEntry, SpooledIndexEntry, mark_corrupt, newest_of_each,
};
use crate::mirror::read_record_of;
use crate::prefetch::ARCHIVED_FILE;
use crate::prefetch::archived::ArchivedList;
use crate::queue::{Flow, run_bounded};
use crate::report::human_bytes;
use crate::spool::{Spool, SpoolRecord};
use crate::store::raw_bytes::bytes_of;
use crate::store::split::ListedObjects;
use crate::store::{ETag, Escaped, Key, ObjectStore, StorageClass};
use crate::sys::beneath::Dir;

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
    /// A version kept in history (`--history`) is not what was recorded. The
    /// current copies are not affected, so the backup is still whole.
    CorruptVersion,
    /// S3 has the key archived (Glacier Flexible Retrieval, Deep Archive, an
    /// Intelligent-Tiering archive tier) and the mirror does not hold its version:
    /// nothing can fetch it until it is restored, so the backup is whole but for it.
    Archived,
}

impl ProblemKind {
    /// Whether the backup is still whole with this problem.
    pub fn breaks_backup(self) -> bool {
        !matches!(
            self,
            ProblemKind::Extra
                | ProblemKind::Unchecked
                | ProblemKind::CorruptVersion
                | ProblemKind::Archived
        )
    }

    fn label(self) -> &'static str {
        match self {
            ProblemKind::Corrupt => "corrupt",
            ProblemKind::Missing => "missing",
            ProblemKind::Changed => "changed",
            ProblemKind::Extra => "extra",
            ProblemKind::Unchecked => "unchecked",
            ProblemKind::Unreadable => "unreadable",
            ProblemKind::CorruptVersion => "corrupt version",
            ProblemKind::Archived => "archived",
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
    /// Objects S3 holds archived that the mirror does not hold at their version.
    pub archived: u64,
    /// With `--history`: versions kept in history that were hashed, and those
    /// found corrupt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_checked: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_corrupt: Option<u64>,
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
            ProblemKind::CorruptVersion => self.history_corrupt.get_or_insert(0),
            ProblemKind::Archived => &mut self.archived,
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
            let (label, key) = (p.kind.label(), Escaped(&p.key));
            out.push_str(&format!("{label:<10} {key}: {}\n", p.detail));
        }
        let against = if self.remote {
            "the S3 listing"
        } else {
            "the last prefetch's listing"
        };
        out.push_str(&format!(
            "checked {} copies ({}) against their records and {against}: {} ok, {} corrupt, {} missing, {} changed, {} unreadable, {} extra, {} unchecked, {} archived\n",
            self.checked,
            human_bytes(self.bytes),
            self.ok,
            self.corrupt,
            self.missing,
            self.changed,
            self.unreadable,
            self.extra,
            self.unchecked,
            self.archived
        ));
        if let (Some(checked), Some(corrupt)) = (self.history_checked, self.history_corrupt) {
            out.push_str(&format!(
                "checked {checked} versions kept in history: {corrupt} corrupt\n"
            ));
        }
        if !self.indexed {
            out.push_str("no prefetch has saved an index of its listing yet: copies deleted by hand cannot be told; use --remote\n");
        }
        let target = if self.prefix.is_empty() {
            self.bucket.clone()
        } else {
            format!("{}/{}", self.bucket, self.prefix.trim_end_matches('/'))
        };
        let mirror = &self.mirror;
        match (self.whole, self.archived) {
            (true, 0) => out.push_str("the backup is whole\n"),
            (true, n) => out.push_str(&format!(
                "the backup is whole except for {n} archived objects, which S3 serves only once \
                 they are restored: `s3mirrorfs prefetch {target} --mirror-dir {mirror} \
                 --restore-archived DAYS` restores and fetches them\n"
            )),
            (false, _) => out.push_str(&format!(
                "the backup is NOT whole: run `s3mirrorfs prefetch {target} --mirror-dir {mirror}` to fetch the missing, changed and corrupt objects again\n"
            )),
        }
        out
    }
}

/// How one local copy checked out, and the bytes hashed to tell.
enum Check {
    Ok(u64),
    Problem(ProblemKind, String, u64),
}

impl Check {
    fn problem(kind: ProblemKind, detail: impl Into<String>) -> Check {
        Check::Problem(kind, detail.into(), 0)
    }
}

/// An object the mirror should hold: from the S3 listing (`--remote`) or from
/// the index of the last prefetch (which also says where its copy goes).
#[derive(Debug, PartialEq, Eq)]
struct Expected {
    key: Key,
    etag: ETag,
    size: u64,
    path: Option<String>,
    /// The class of an archived object (as the listing shows it, or as the last
    /// prefetch found it), which a GET cannot read until it is restored.
    archived: Option<StorageClass>,
}

/// Verifies the mirror at `dir` for `bucket`/`prefix`; with `remote`, against its listing.
pub async fn run(
    dir: &Path,
    bucket: &str,
    prefix: &str,
    remote: Option<&dyn ObjectStore>,
    history: bool,
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
    // the run before any hashing. What the mirror should hold and what it
    // holds go to scratch files, read back sorted by key and merged: a mirror
    // of millions costs no more memory than one of a thousand.
    let mut expected = expected_objects(&view, prefix, remote).await?;
    report.indexed = remote.is_some() || !expected.is_empty();
    let mut entries = check_copies(&view, prefix, &mut report).await?;
    compare(
        &view,
        &mut expected,
        &mut entries,
        remote.is_some(),
        &mut report,
    )?;
    // Copies are hashed a few at once: their problems are put back in key order.
    report.problems.sort_by(|a, b| a.key.cmp(&b.key));
    if history {
        check_history(&view, prefix, &mut report).await?;
    }
    report.whole = report.problems.iter().all(|p| !p.kind.breaks_backup());
    Ok(report)
}

/// Hashes every version kept in history under `prefix` against its journal's
/// record. Nothing is marked: a kept version is never fetched again.
async fn check_history(
    view: &MirrorView,
    prefix: &str,
    report: &mut VerifyReport,
) -> Result<(), AdminError> {
    let root = view.root().to_path_buf();
    let dir = Arc::new(
        view.dir()
            .try_clone()
            .map_err(|err| crate::mirror::MirrorError::Io {
                path: root.clone(),
                err,
            })?,
    );
    let histories = crate::mirror::history::read_all_histories(&dir).map_err(|err| {
        crate::mirror::MirrorError::Io {
            path: root.join(crate::layout::HISTORY_DIR),
            err,
        }
    })?;
    let mut versions = Vec::new();
    for history in &histories {
        for v in history
            .versions
            .iter()
            .filter(|v| v.key.starts_with(prefix))
        {
            versions.push((history.path_of(v), v.clone()));
        }
    }
    report.history_checked = Some(versions.len() as u64);
    report.history_corrupt = Some(0);
    let checks = tokio::task::spawn_blocking(move || {
        versions
            .into_iter()
            .map(|(rel, v)| {
                let check = check_version(&dir, &root, &rel, &v);
                (rel, v.key, check)
            })
            .collect::<Vec<_>>()
    })
    .await
    .expect("hashing does not panic");
    for (rel, key, check) in checks {
        match check {
            Ok(hashed) => report.bytes += hashed,
            Err(detail) => report.add(ProblemKind::CorruptVersion, &key, Some(&rel), detail),
        }
    }
    Ok(())
}

/// Hashes one kept version; returns the bytes hashed, or what is wrong.
fn check_version(
    dir: &Dir,
    root: &Path,
    rel: &Path,
    v: &crate::mirror::history::KeptVersion,
) -> Result<u64, String> {
    let path = &root.join(rel);
    let file = dir
        .open_read(rel)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let len = file
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if len != v.size {
        return Err(format!("{len} bytes on disk, {} recorded", v.size));
    }
    let Some(expected) = v.expected_md5() else {
        return Ok(0);
    };
    match crate::mirror::md5_file(&file) {
        Err(e) => Err(format!("{}: {e}", path.display())),
        Ok(actual) if actual != expected => Err(format!(
            "contents hash to MD5 {actual}, {expected} recorded"
        )),
        Ok(_) => Ok(len),
    }
}

/// A failure to write or read a scratch file.
fn scratch_error(view: &MirrorView) -> impl Fn(io::Error) -> AdminError + use<> {
    let path = view.root().join(crate::layout::STATE_DIR).join("tmp");
    move |err| {
        AdminError::Mirror(crate::mirror::MirrorError::Io {
            path: path.clone(),
            err,
        })
    }
}

/// What the mirror should hold: the S3 listing, or the index of the last prefetch.
enum ExpectedList {
    Listing(ListedObjects),
    Index(Spool<SpooledIndexEntry>),
}

impl ExpectedList {
    fn is_empty(&self) -> bool {
        match self {
            ExpectedList::Listing(objects) => objects.is_empty(),
            ExpectedList::Index(index) => index.is_empty(),
        }
    }
}

/// What the mirror should hold under `prefix`, on disk, to be read back sorted
/// by key: the S3 listing, or without `remote` the index the last prefetch
/// saved (empty if none did).
async fn expected_objects(
    view: &MirrorView,
    prefix: &str,
    remote: Option<&dyn ObjectStore>,
) -> Result<ExpectedList, AdminError> {
    let error = scratch_error(view);
    let scratch = view.scratch_file().map_err(&error)?;
    match remote {
        Some(store) => {
            let mut objects = ListedObjects::new(scratch);
            let mut token = None;
            loop {
                let page = store.list_page(prefix, false, token).await?;
                objects.add_run(&page.objects).map_err(&error)?;
                token = match page.next {
                    Some(next) => Some(next),
                    None => break,
                };
            }
            Ok(ExpectedList::Listing(objects))
        }
        None => Ok(ExpectedList::Index(
            view.sorted_index(prefix, scratch).map_err(&error)?,
        )),
    }
}

/// Checks every recorded copy under `prefix` against its record; returns them,
/// on disk, to be read back sorted by key.
async fn check_copies(
    view: &MirrorView,
    prefix: &str,
    report: &mut VerifyReport,
) -> Result<Spool<SpooledEntry>, AdminError> {
    let error = scratch_error(view);
    let scratch = view.scratch_file().map_err(&error)?;
    let (mut entries, errors) = view
        .sorted_entries(scratch, |e| under(&e.record.key, prefix))
        .map_err(&error)?;
    for e in errors {
        let rel = e.path.strip_prefix(view.root()).unwrap_or(&e.path);
        let detail = format!("{}: {}", e.path.display(), e.err);
        report.add(ProblemKind::Unreadable, "", Some(rel), detail);
    }
    // Marking a corrupt copy writes to it: only its owner does (root reading
    // another user's mirror reports, and leaves the copy as it is).
    let may_mark = view.owner().is_ok_and(|owner| owner == crate::sys::euid());
    let dir = view.dir().try_clone().map(Arc::new);
    let root = view.root().to_path_buf();
    let mut unreadable_scratch = None;
    let queue = entries.sorted().map_err(&error)?.map_while(|e| match e {
        Ok(spooled) => spooled.entry(),
        Err(e) => {
            unreadable_scratch = Some(e);
            None
        }
    });
    let start = |entry: Entry| {
        let path = root.join(&entry.path);
        let dir = dir
            .as_ref()
            .map(Arc::clone)
            .map_err(|e| io::Error::new(e.kind(), e.to_string()));
        async move {
            match dir {
                Ok(dir) => tokio::task::spawn_blocking(move || {
                    let check = check_one(&dir, &path, &entry, may_mark);
                    (entry, check)
                })
                .await
                .expect("hashing does not panic"),
                Err(e) => {
                    let check = unreadable(&path, e);
                    (entry, check)
                }
            }
        }
    };
    run_bounded(queue, HASH_AT_ONCE, start, |(entry, check)| {
        report.checked += 1;
        match check {
            Check::Ok(hashed) => {
                report.ok += 1;
                report.bytes += hashed;
            }
            Check::Problem(kind, detail, hashed) => {
                report.bytes += hashed;
                report.add(kind, entry.record.key.as_str(), Some(&entry.path), detail);
            }
        }
        Flow::Continue
    })
    .await;
    if let Some(e) = unreadable_scratch {
        return Err(error(e));
    }
    Ok(entries)
}

/// Reports each expected object the mirror has no copy of, or only another
/// version of, and with `remote`, each copy of a key S3 no longer lists: the
/// two lists merged in key order.
fn compare(
    view: &MirrorView,
    expected: &mut ExpectedList,
    entries: &mut Spool<SpooledEntry>,
    remote: bool,
    report: &mut VerifyReport,
) -> Result<(), AdminError> {
    let error = scratch_error(view);
    let saved = view.read_state_file(ARCHIVED_FILE)?;
    let known = ArchivedList::decode(saved.as_deref().unwrap_or_default());
    let archived = |key: &Key, etag: &ETag| known.get(key, etag).map(|e| e.storage_class.clone());
    let source = if remote {
        "S3 lists"
    } else {
        "the last prefetch listed"
    };
    let wanted: Box<dyn Iterator<Item = io::Result<Expected>>> = match expected {
        ExpectedList::Listing(objects) => Box::new(objects.iter().map_err(&error)?.map(|o| {
            o.map(|o| Expected {
                archived: match o.archived() {
                    true => Some(o.storage_class.clone()),
                    false => archived(&o.key, &o.etag),
                },
                key: o.key,
                etag: o.etag,
                size: o.size,
                path: None,
            })
        })),
        ExpectedList::Index(index) => Box::new(
            newest_of_each(index.sorted().map_err(&error)?)
                .filter_map(|e| e.map(SpooledIndexEntry::entry).transpose())
                .map(|e| {
                    e.map(|e| Expected {
                        archived: archived(&e.key, &e.etag),
                        key: e.key,
                        etag: e.etag,
                        size: e.size,
                        path: Some(e.path),
                    })
                }),
        ),
    };
    let mut local = entries.sorted().map_err(&error)?.peekable();
    let extra = |entry: Entry, report: &mut VerifyReport| {
        if remote {
            report.add(
                ProblemKind::Extra,
                entry.record.key.as_str(),
                Some(&entry.path),
                "deleted from S3; the local copy is kept (prefetch --prune removes it)".into(),
            );
        }
    };
    for want in wanted {
        let want = want.map_err(&error)?;
        let key = bytes_of(want.key.as_str()).into_owned();
        let mut copies = Vec::new();
        while let Some(next) = local.next_if(|e| !matches!(e, Ok(e) if *e.sort_key() > *key)) {
            let next = next.map_err(&error)?;
            let same = *next.sort_key() == *key;
            let Some(entry) = next.entry() else { continue };
            match same {
                true => copies.push(entry),
                false => extra(entry, report),
            }
        }
        compare_one(view.dir(), &want, &copies, source, report);
    }
    for rest in local {
        if let Some(entry) = rest.map_err(&error)?.entry() {
            extra(entry, report);
        }
    }
    Ok(())
}

/// Reports the expected object `want` if `copies` (the mirror's copies of its
/// key) hold none of its version.
fn compare_one(
    dir: &Dir,
    want: &Expected,
    copies: &[Entry],
    source: &str,
    report: &mut VerifyReport,
) {
    let (key, etag, size) = (want.key.as_str(), &want.etag, want.size);
    if copies.is_empty() {
        if is_old_marker_dir(dir, want) {
            return;
        }
        if want.archived.is_some() {
            report.add(
                ProblemKind::Archived,
                key,
                want.path.as_deref().map(Path::new),
                archived_detail(want, source, "the mirror has no copy"),
            );
        } else {
            report.add(
                ProblemKind::Missing,
                key,
                want.path.as_deref().map(Path::new),
                format!("{source} it (ETag {etag}, {size} bytes) but the mirror has no copy"),
            );
        }
        return;
    }
    let holds = |c: &Entry| c.record.size == size && c.record.etag == *etag;
    if copies.iter().any(holds) {
        return;
    }
    let copy = &copies[0];
    if want.archived.is_some() {
        let held = format!(
            "the mirror keeps an older version (ETag {})",
            copy.record.etag
        );
        let detail = archived_detail(want, source, &held);
        report.add(ProblemKind::Archived, key, Some(&copy.path), detail);
    } else {
        let detail = format!(
            "{source} ETag {etag}, {size} bytes; the mirror holds ETag {}, {} bytes",
            copy.record.etag, copy.record.size
        );
        report.add(ProblemKind::Changed, key, Some(&copy.path), detail);
    }
}

/// What an archived problem says: what S3 holds, what the mirror has instead.
fn archived_detail(want: &Expected, source: &str, held: &str) -> String {
    let class = want.archived.as_ref().map_or("", StorageClass::as_str);
    format!(
        "{source} it (ETag {}, {} bytes) archived in {}; {held}, and S3 serves it only once it is restored",
        want.etag,
        want.size,
        Escaped(class)
    )
}

/// A `dir/` marker kept as a directory made before markers carried a record.
fn is_old_marker_dir(dir: &Dir, want: &Expected) -> bool {
    let marker_dir = match (&want.path, place_alone(want.key.as_str(), want.size)) {
        (Some(p), _) => Some(std::path::PathBuf::from(p)),
        (None, Placement::Directory(p)) => Some(p),
        (None, _) => None,
    };
    want.size == 0
        && want.key.as_str().ends_with('/')
        && marker_dir.is_some_and(|p| dir.symlink_metadata(&p).is_ok_and(|m| m.is_dir()))
}

/// Copies hashed at once: enough to keep a disk busy, few enough for two cores.
const HASH_AT_ONCE: usize = 4;

/// Checks one copy: the record is read from the open file, so a copy a prefetch
/// replaces meanwhile is judged by its own record.
fn check_one(dir: &Dir, path: &Path, entry: &Entry, may_mark: bool) -> Check {
    let (file, meta) = match open_copy(dir, &entry.path, path) {
        Ok(opened) => opened,
        Err(check) => return check,
    };
    let record = read_record_of(&file).unwrap_or_else(|| entry.record.clone());
    if entry.directory {
        return Check::Ok(0);
    }
    if record.corrupt {
        return Check::problem(
            ProblemKind::Corrupt,
            "an earlier verify found this copy corrupt; the next prefetch fetches it again",
        );
    }
    if meta.len() != record.size {
        let note = mark(&file, &record, path, may_mark);
        let detail = format!(
            "{} bytes on disk, {} recorded{note}",
            meta.len(),
            record.size
        );
        return Check::problem(ProblemKind::Corrupt, detail);
    }
    let Some(expected) = record.expected_md5() else {
        return Check::problem(
            ProblemKind::Unchecked,
            format!(
                "no recorded hash (the copy predates content hashes and ETag {} is not an MD5); size checked only",
                record.etag
            ),
        );
    };
    match crate::mirror::md5_file(&file) {
        Err(e) => unreadable(path, e),
        Ok(actual) if actual != expected => {
            let note = mark(&file, &record, path, may_mark);
            let detail = format!("contents hash to MD5 {actual}, {expected} recorded{note}");
            Check::Problem(ProblemKind::Corrupt, detail, meta.len())
        }
        Ok(_) => Check::Ok(meta.len()),
    }
}

/// Opens a copy for checking; a copy gone meanwhile is missing, any other failure unreadable.
fn open_copy(dir: &Dir, rel: &Path, path: &Path) -> Result<(File, Metadata), Check> {
    let file = match dir.open_read(rel) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Check::problem(
                ProblemKind::Missing,
                "the copy disappeared while verifying",
            ));
        }
        Err(e) => return Err(unreadable(path, e)),
    };
    let meta = file.metadata().map_err(|e| unreadable(path, e))?;
    Ok((file, meta))
}

fn unreadable(path: &Path, e: io::Error) -> Check {
    Check::problem(ProblemKind::Unreadable, format!("{}: {e}", path.display()))
}

/// Marks the copy for the next prefetch; returns what to add to the report if that failed.
fn mark(file: &File, record: &Record, path: &Path, may_mark: bool) -> String {
    if !may_mark {
        return " (not marked for the next prefetch: this verify does not run as the mirror's owner)"
            .to_string();
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::FetchConfig;
    use crate::prefetch::{NoProgress, PrefetchOptions, Summary};
    use crate::testing::Scratch;

    async fn prefetch(scratch: &Scratch) -> Summary {
        let options = PrefetchOptions {
            prefix: String::new(),
            concurrency: 2,
            prune: false,
            keep_history_days: 30,
            max_change: 100,
            restore_archived: None,
            list_workers: 4,
            retry_for: std::time::Duration::ZERO,
            inventory: None,
        };
        let fetcher = scratch.fetcher(FetchConfig::default());
        let mut summary = Summary::default();
        crate::prefetch::run(
            scratch.store(),
            &fetcher,
            &options,
            &NoProgress,
            &mut summary,
        )
        .await
        .unwrap();
        summary
    }

    fn kinds(report: &VerifyReport) -> Vec<(ProblemKind, &str)> {
        let mut kinds: Vec<_> = report
            .problems
            .iter()
            .map(|p| (p.kind, p.key.as_str()))
            .collect();
        kinds.sort_by_key(|(_, key)| key.to_string());
        kinds
    }

    #[tokio::test]
    async fn archived_objects_are_reported_apart_and_leave_the_backup_whole() {
        let scratch = Scratch::new(&[("plain", b"p"), ("warm", b"old")]);
        let store = &scratch.store;
        store.put_with_class("cold", "c", StorageClass::Glacier);
        store.put_with_class("tier", "t", StorageClass::IntelligentTiering);
        store.archive_tier("tier");
        assert_eq!(prefetch(&scratch).await.archived, 2);
        // Mirrored, then replaced in S3 by a version that went straight to Deep Archive.
        store.put_with_class("warm", "new", StorageClass::DeepArchive);
        let root = scratch.mirror.root().to_path_buf();
        let remote = run(
            &root,
            "b",
            "",
            Some(store.as_ref() as &dyn ObjectStore),
            false,
        )
        .await
        .unwrap();
        let archived = ProblemKind::Archived;
        assert_eq!(
            kinds(&remote),
            [(archived, "cold"), (archived, "tier"), (archived, "warm")]
        );
        assert!(remote.whole, "{}", remote.render());
        assert_eq!((remote.archived, remote.missing, remote.changed), (3, 0, 0));
        let warm = remote.problems.iter().find(|p| p.key == "warm").unwrap();
        assert!(warm.detail.contains("older version"), "{}", warm.detail);
        assert!(warm.detail.contains("DEEP_ARCHIVE"), "{}", warm.detail);
        let text = remote.render();
        assert!(
            text.contains("the backup is whole except for 3 archived objects"),
            "{text}"
        );
        assert!(text.contains("--restore-archived DAYS"), "{text}");
        let local = run(&root, "b", "", None, false).await.unwrap();
        assert_eq!(kinds(&local), [(archived, "cold"), (archived, "tier")]);
        assert!(local.whole);
        std::fs::remove_file(root.join("plain")).unwrap();
        let broken = run(&root, "b", "", None, false).await.unwrap();
        assert!(!broken.whole, "a missing object still breaks the backup");
        assert_eq!(broken.missing, 1);
    }
}
