//! `s3mirrorfs restore`: puts every mirrored object back under its true key
//! (renamed keys, empty objects and `dir/` markers included), skipping those the
//! destination already holds identically, multipart for large files. The bytes
//! sent are hashed on the way and must match the copy's recorded hash, or the
//! upload is aborted: a restore never spreads bit rot.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use md5::Digest;
use serde::Serialize;

use super::{AdminError, under};
use crate::mirror::inventory::{Entry, MirrorView};
use crate::mirror::read_record_of;
use crate::mirror::{MirrorError, Record};
use crate::queue::{Flow, run_bounded};
use crate::report::{KeyError, human_bytes};
use crate::store::multipart::Multipart;
use crate::store::{ETag, Escaped, Key, ObjectSink, ObjectStore, PutOptions, StoreError, list_all};
use crate::sys::beneath::Dir;

/// Size of the parts a restore uploads.
pub const PART_SIZE: u64 = 8 << 20;
/// Objects above this size go up in parts.
pub const MULTIPART_THRESHOLD: u64 = 8 << 20;
/// S3 accepts at most this many parts per upload.
const MAX_PARTS: u64 = 10_000;
const MIB: u64 = 1 << 20;

/// How to restore.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// Restore only keys under this prefix ("" for all).
    pub prefix: String,
    pub dry_run: bool,
    /// Objects uploaded at once.
    pub concurrency: usize,
    /// Restore the bucket as it was at this time (ms since the epoch) instead of
    /// as the mirror holds it now.
    pub as_of: Option<u64>,
}

/// What happened (or, in a dry run, would happen) to one object.
#[derive(Clone, Debug, Serialize)]
pub struct Action {
    pub key: String,
    pub size: u64,
    /// Parts of a multipart upload; 1 for a single PUT.
    pub parts: u64,
}

/// What `restore` did; `--json` prints it as one object.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RestoreReport {
    pub bucket: String,
    pub prefix: String,
    pub dry_run: bool,
    /// Uploaded (in a dry run: to be uploaded).
    pub uploaded: Vec<Action>,
    /// Bytes uploaded (in a dry run: to be uploaded).
    pub bytes: u64,
    /// Already identical in the destination.
    pub skipped: Vec<String>,
    pub failed: Vec<KeyError>,
    /// Set when the restore stopped early (endpoint gone, credentials lost); the
    /// objects not attempted are in `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl RestoreReport {
    /// One line per object, then a summary line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let verb = if self.dry_run {
            "would upload"
        } else {
            "uploaded"
        };
        // A real run logs each upload as it goes; the list is for a dry run.
        for a in self.uploaded.iter().filter(|_| self.dry_run) {
            let how = if a.parts > 1 {
                format!(", {} parts", a.parts)
            } else {
                String::new()
            };
            out.push_str(&format!(
                "{verb} {} ({}{how})\n",
                Escaped(&a.key),
                human_bytes(a.size)
            ));
        }
        for f in &self.failed {
            out.push_str(&format!("failed {}: {}\n", Escaped(&f.key), f.error));
        }
        out.push_str(&format!(
            "{}: {} {} ({}), {} already identical, {} failed, into s3://{}/{}\n",
            if self.dry_run { "dry run" } else { "restore" },
            verb,
            self.uploaded.len(),
            human_bytes(self.bytes),
            self.skipped.len(),
            self.failed.len(),
            self.bucket,
            self.prefix
        ));
        out
    }
}

/// An object to restore: its copy, and what the destination holds under its key.
struct Job {
    entry: Entry,
    /// In full, for messages; the copy is opened beneath `dir`.
    path: PathBuf,
    dir: Arc<Dir>,
    dest: Option<(ETag, u64)>,
}

/// Restores the mirror at `dir` into the destination (`store` lists it, `sink` writes it).
pub async fn run(
    dir: &Path,
    store: &dyn ObjectStore,
    sink: Arc<dyn ObjectSink>,
    options: &RestoreOptions,
) -> Result<RestoreReport, AdminError> {
    let view = MirrorView::open(dir)?;
    super::refuse_other_owner(&view)?;
    let mut report = RestoreReport {
        bucket: sink.bucket().to_string(),
        prefix: options.prefix.clone(),
        dry_run: options.dry_run,
        ..RestoreReport::default()
    };
    // Also proves the destination bucket exists and is reachable before anything is read.
    let existing: HashMap<Key, (ETag, u64)> = list_all(store, &options.prefix)
        .await?
        .into_iter()
        .map(|o| (o.key, (o.etag, o.size)))
        .collect();
    let jobs = plan(&view, options, &existing, &mut report)?;
    restore_all(jobs, sink, options, &mut report).await;
    report.uploaded.sort_by(|a, b| a.key.cmp(&b.key));
    report.skipped.sort();
    report.failed.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(report)
}

/// The copies to restore (one per key), with what the destination holds; copies
/// that cannot be restored are reported as failed right away.
fn plan(
    view: &MirrorView,
    options: &RestoreOptions,
    existing: &HashMap<Key, (ETag, u64)>,
    report: &mut RestoreReport,
) -> Result<Vec<Job>, AdminError> {
    let prefix = options.prefix.as_str();
    let (mut entries, errors) = view.entries();
    for e in errors {
        let error = format!("cannot read {}: {}", e.path.display(), e.err);
        report.failed.push(KeyError::new("", error));
    }
    entries.extend(vouched_by_index(view, &entries, prefix)?);
    if let Some(at) = options.as_of {
        entries = super::history::as_of(view, entries, prefix, at)?;
    }
    let dir = Arc::new(view.dir().try_clone().map_err(|err| MirrorError::Io {
        path: view.root().to_path_buf(),
        err,
    })?);
    let mut seen = HashSet::new();
    let mut jobs = Vec::new();
    for entry in entries {
        if !under(&entry.record.key, prefix) || !seen.insert(entry.record.key.clone()) {
            continue;
        }
        if entry.is_marked_corrupt() {
            report.failed.push(KeyError::new(
                entry.record.key,
                "the local copy is corrupt (found by verify); run prefetch to fetch it again",
            ));
            continue;
        }
        jobs.push(Job {
            path: view.root().join(&entry.path),
            dir: Arc::clone(&dir),
            dest: existing.get(&entry.record.key).cloned(),
            entry,
        });
    }
    Ok(jobs)
}

/// Copies that lost their extended attributes (a copy of the mirror made without
/// them) but that the index of the last prefetch vouches for: the file at the
/// indexed path, of the indexed size, holds the indexed key and version. Its bytes
/// are checked against the indexed MD5 as they are uploaded.
fn vouched_by_index(
    view: &MirrorView,
    recorded: &[Entry],
    prefix: &str,
) -> Result<Vec<Entry>, AdminError> {
    let known: HashSet<&Key> = recorded.iter().map(|e| &e.record.key).collect();
    let mut vouched = Vec::new();
    for entry in view.index()?.into_values() {
        if known.contains(&entry.key) || !under(&entry.key, prefix) {
            continue;
        }
        let rel = PathBuf::from(&entry.path);
        let Ok(meta) = view.dir().symlink_metadata(&rel) else {
            continue;
        };
        if crate::mirror::read_record_in(view.dir(), &rel).is_none()
            && let Some(record) = entry.vouches_for(&rel, &meta)
        {
            vouched.push(Entry {
                path: rel,
                record,
                directory: meta.is_dir(),
            });
        }
    }
    Ok(vouched)
}

/// Restores the jobs, `concurrency` at a time, until S3 fails in a way every
/// further upload would (then the rest are reported as not attempted).
async fn restore_all(
    jobs: Vec<Job>,
    sink: Arc<dyn ObjectSink>,
    options: &RestoreOptions,
    report: &mut RestoreReport,
) {
    let dry_run = options.dry_run;
    let start = |job: Job| {
        let sink = Arc::clone(&sink);
        async move {
            let result = restore_one(sink.as_ref(), &job, dry_run).await;
            (job, result)
        }
    };
    let not_attempted = run_bounded(jobs, options.concurrency, start, |(job, result)| {
        let entry = job.entry;
        let key = entry.record.key;
        match result {
            Ok(Done::Skipped) => report.skipped.push(key.into()),
            Ok(Done::Uploaded { parts }) => {
                if !dry_run {
                    tracing::info!(key = %key, "restored");
                }
                report.bytes += entry.record.size;
                let size = entry.record.size;
                report.uploaded.push(Action {
                    key: key.into(),
                    size,
                    parts,
                });
            }
            Err(failed) => {
                tracing::error!(key = %key, "cannot restore: {}", failed.message);
                let stop = failed.stops_run && report.error.is_none();
                if stop {
                    tracing::error!("not starting further uploads");
                    report.error = Some(failed.message.clone());
                }
                report.failed.push(KeyError::new(key, failed.message));
                if stop {
                    return Flow::Stop;
                }
            }
        }
        Flow::Continue
    })
    .await;
    if let Some(reason) = &report.error {
        for job in not_attempted {
            let error = format!("not attempted: {reason}");
            report
                .failed
                .push(KeyError::new(job.entry.record.key, error));
        }
    }
}

enum Done {
    Skipped,
    Uploaded { parts: u64 },
}

/// Why one object was not restored, and whether the others can still be.
struct Failed {
    message: String,
    /// Every further object would fail the same way (`StoreError::stops_run`).
    stops_run: bool,
}

impl From<StoreError> for Failed {
    fn from(e: StoreError) -> Failed {
        Failed {
            stops_run: e.stops_run(),
            message: e.to_string(),
        }
    }
}

impl From<String> for Failed {
    fn from(message: String) -> Failed {
        Failed {
            message,
            stops_run: false,
        }
    }
}

/// The part size a restore uses for an object of `size` bytes (at most 10,000 parts).
pub fn part_size_for(size: u64) -> u64 {
    PART_SIZE.max(size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB)
}

async fn restore_one(sink: &dyn ObjectSink, job: &Job, dry_run: bool) -> Result<Done, Failed> {
    let path = &job.path;
    let at_path = |e: io::Error| format!("{}: {e}", path.display());
    let key = job.entry.record.key.clone();
    let (file, record) = open_copy(&job.dir, &job.entry).map_err(at_path)?;
    let size = record.size;
    if let Some((etag, dest_size)) = &job.dest
        && *dest_size == size
        && identical(file.clone(), &record, etag)
            .await
            .map_err(at_path)?
    {
        return Ok(Done::Skipped);
    }
    let part_size = part_size_for(size);
    let parts = if size > MULTIPART_THRESHOLD {
        size.div_ceil(part_size)
    } else {
        1
    };
    if dry_run {
        return Ok(Done::Uploaded { parts });
    }
    let expected = record.expected_md5();
    if parts == 1 {
        let data = read_part(file, 0, size).await.map_err(at_path)?;
        check_hash(
            &format!("{:x}", md5::Md5::digest(&data)),
            expected.as_deref(),
        )?;
        sink.put(key, data, PutOptions::default()).await?;
        return Ok(Done::Uploaded { parts });
    }
    let mut upload = Multipart::start(sink, &key, PutOptions::default()).await?;
    let sent = send_parts(&mut upload, &file, size, part_size, path).await;
    let filled = sent.and_then(|md5| Ok(check_hash(&md5, expected.as_deref())?));
    upload.finish(filled).await?;
    Ok(Done::Uploaded { parts })
}

/// Uploads the file in parts of `part_size`; returns the MD5 of the bytes sent,
/// to be checked before the upload completes.
async fn send_parts(
    upload: &mut Multipart<'_>,
    file: &Arc<File>,
    size: u64,
    part_size: u64,
    path: &Path,
) -> Result<String, Failed> {
    let mut hasher = md5::Md5::new();
    for start in (0..size).step_by(part_size as usize) {
        let len = part_size.min(size - start);
        let data = read_part(Arc::clone(file), start, len)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        hasher.update(&data);
        upload.push(data).await?;
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Opens the copy and reads its record from the open file, so the bytes and the
/// record belong together even if a prefetch replaces the copy meanwhile. A file
/// without a record is one the mirror's state vouched for (its bytes are checked
/// against the vouched MD5 on the way).
fn open_copy(dir: &Dir, entry: &Entry) -> io::Result<(Arc<File>, Record)> {
    let file = dir.open_read(&entry.path)?;
    let record = read_record_of(&file).unwrap_or_else(|| entry.record.clone());
    if record.key != entry.record.key || record.etag != entry.record.etag {
        return Err(io::Error::other(
            "the copy now holds another key or version (replaced meanwhile); run restore again",
        ));
    }
    let len = if entry.directory {
        0
    } else {
        file.metadata()?.len()
    };
    if len != record.size {
        return Err(io::Error::other(format!(
            "{len} bytes on disk, {} recorded: the copy is corrupt, run verify and prefetch",
            record.size
        )));
    }
    Ok((Arc::new(file), record))
}

fn check_hash(actual: &str, expected: Option<&str>) -> Result<(), String> {
    match expected {
        Some(expected) if expected != actual => Err(format!(
            "the local copy hashes to MD5 {actual}, not the recorded {expected}: it is corrupt, nothing was restored (run verify, then prefetch)"
        )),
        _ => Ok(()),
    }
}

async fn read_part(file: Arc<File>, offset: u64, len: u64) -> io::Result<Bytes> {
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, offset)?;
        Ok(Bytes::from(buf))
    })
    .await
    .expect("read does not panic")
}

/// Whether the destination's object (same size) holds the copy's bytes: its ETag is
/// the one recorded, the copy's MD5, or the multipart ETag the copy's bytes get with
/// one of the part sizes uploaders commonly use.
async fn identical(file: Arc<File>, record: &Record, dest: &ETag) -> io::Result<bool> {
    if *dest == record.etag {
        return Ok(true);
    }
    let inner = dest.as_str().trim_matches('"');
    if dest.looks_like_md5() {
        return Ok(record
            .expected_md5()
            .is_some_and(|m| m.eq_ignore_ascii_case(inner)));
    }
    let Some(parts) = inner
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse::<u64>().ok())
        .filter(|n| *n > 0)
    else {
        return Ok(false);
    };
    let size = record.size;
    let candidates = candidate_part_sizes(size, parts);
    if candidates.is_empty() {
        return Ok(false);
    }
    let want = inner.to_ascii_lowercase();
    tokio::task::spawn_blocking(move || {
        Ok(multipart_etags(&file, size, &candidates)?.contains(&want))
    })
    .await
    .expect("hashing does not panic")
}

/// Part sizes that split `size` bytes into exactly `parts` parts: this tool's, the
/// common 5, 8 and 16 MiB, and size/parts rounded up to a MiB.
pub fn candidate_part_sizes(size: u64, parts: u64) -> Vec<u64> {
    let mut sizes = vec![
        part_size_for(size),
        5 * MIB,
        8 * MIB,
        16 * MIB,
        size.div_ceil(parts).div_ceil(MIB) * MIB,
    ];
    sizes.sort();
    sizes.dedup();
    sizes.retain(|p| *p > 0 && size.div_ceil(*p) == parts);
    sizes
}

/// The multipart ETags (`md5(md5(part 1) .. md5(part N))-N`, unquoted) of the file
/// for each part size, in one read of the file.
pub fn multipart_etags(file: &File, size: u64, part_sizes: &[u64]) -> io::Result<Vec<String>> {
    struct State {
        part: u64,
        current: md5::Md5,
        digests: Vec<u8>,
        count: u64,
    }
    let mut states: Vec<State> = part_sizes
        .iter()
        .map(|p| State {
            part: *p,
            current: md5::Md5::new(),
            digests: Vec::new(),
            count: 0,
        })
        .collect();
    let mut buf = vec![0u8; MIB as usize];
    let mut offset = 0u64;
    while offset < size {
        let want = (size - offset).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..want], offset)?;
        let mut chunk = &buf[..want];
        let mut at = offset;
        while !chunk.is_empty() {
            // Feed each state up to its next part boundary; parts are whole MiBs or larger,
            // but the last read may end anywhere.
            let step = states
                .iter()
                .map(|s| s.part - at % s.part)
                .min()
                .unwrap_or(chunk.len() as u64)
                .min(chunk.len() as u64) as usize;
            for s in &mut states {
                s.current.update(&chunk[..step]);
                if (at + step as u64).is_multiple_of(s.part) {
                    let done = std::mem::replace(&mut s.current, md5::Md5::new());
                    s.digests.extend_from_slice(&done.finalize());
                    s.count += 1;
                }
            }
            chunk = &chunk[step..];
            at += step as u64;
        }
        offset += want as u64;
    }
    Ok(states
        .into_iter()
        .map(|mut s| {
            if !size.is_multiple_of(s.part) {
                let done = std::mem::replace(&mut s.current, md5::Md5::new());
                s.digests.extend_from_slice(&done.finalize());
                s.count += 1;
            }
            format!("{:x}-{}", md5::Md5::digest(&s.digests), s.count)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Placement, place_alone};
    use crate::mirror::Mirror;
    use crate::store::memory::MemoryStore;
    use crate::store::memory::sink::MemorySink;
    use std::io::Write;
    use std::sync::atomic::Ordering;

    /// A mirror holding `objects` as prefetch would have stored them; `md5` overrides
    /// the recorded hash (to make a copy look rotten).
    fn mirror_with(objects: &[(&str, Vec<u8>, Option<&str>)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::open(dir.path(), "source").unwrap();
        for (key, data, md5) in objects {
            let actual = format!("{:x}", md5::Md5::digest(data));
            let record = Record {
                key: Key::new(*key).unwrap(),
                etag: ETag::new(&format!("\"{actual}\"")),
                size: data.len() as u64,
                md5: Some(md5.map_or(actual, str::to_string)),
                corrupt: false,
            };
            match place_alone(key, data.len() as u64) {
                Placement::Directory(rel) => {
                    mirror.ensure_dir(&rel).unwrap();
                    mirror.record_marker(&rel, &record).unwrap();
                }
                placement => {
                    let tmp = mirror.create_temp().unwrap();
                    tmp.write_at(data, 0).unwrap();
                    mirror
                        .commit(tmp, placement.path(), &record, std::time::UNIX_EPOCH)
                        .unwrap();
                }
            }
        }
        dir
    }

    fn options(dry_run: bool) -> RestoreOptions {
        RestoreOptions {
            prefix: String::new(),
            dry_run,
            concurrency: 2,
            as_of: None,
        }
    }

    #[tokio::test]
    async fn restores_every_kind_of_key_then_finds_them_identical() {
        let big: Vec<u8> = (0..(9 * MIB + 5)).map(|i| (i % 253) as u8).collect();
        let dir = mirror_with(&[
            ("a/b.txt", b"hello".to_vec(), None),
            ("../escape", b"outside".to_vec(), None),
            ("empty", Vec::new(), None),
            ("marker/", Vec::new(), None),
            ("big", big.clone(), None),
        ]);
        let dest = Arc::new(MemoryStore::new("dest"));
        let sink = Arc::new(MemorySink::new(Arc::clone(&dest)));
        let dry = run(dir.path(), dest.as_ref(), sink.clone(), &options(true))
            .await
            .unwrap();
        assert_eq!(dry.uploaded.len(), 5);
        assert_eq!(
            sink.puts.load(Ordering::Relaxed) + sink.parts.load(Ordering::Relaxed),
            0
        );

        let report = run(dir.path(), dest.as_ref(), sink.clone(), &options(false))
            .await
            .unwrap();
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        assert_eq!(report.uploaded.len(), 5);
        assert_eq!(dest.bytes("a/b.txt").unwrap(), &b"hello"[..]);
        assert_eq!(dest.bytes("../escape").unwrap(), &b"outside"[..]);
        assert!(dest.bytes("empty").unwrap().is_empty());
        assert!(dest.bytes("marker/").unwrap().is_empty());
        assert!(dest.bytes("big").unwrap() == big);
        assert_eq!(sink.parts.load(Ordering::Relaxed), 2);

        let again = run(dir.path(), dest.as_ref(), sink.clone(), &options(false))
            .await
            .unwrap();
        assert!(again.uploaded.is_empty(), "{:?}", again.uploaded);
        assert_eq!(again.skipped.len(), 5);
    }

    #[tokio::test]
    async fn a_rotten_copy_is_never_completed() {
        let big: Vec<u8> = (0..(10 * MIB)).map(|i| (i % 251) as u8).collect();
        let wrong = "0123456789abcdef0123456789abcdef";
        let dir = mirror_with(&[
            ("big", big, Some(wrong)),
            ("small", b"small".to_vec(), Some(wrong)),
            ("fine", b"fine".to_vec(), None),
        ]);
        let dest = Arc::new(MemoryStore::new("dest"));
        let sink = Arc::new(MemorySink::new(Arc::clone(&dest)));
        let report = run(dir.path(), dest.as_ref(), sink.clone(), &options(false))
            .await
            .unwrap();
        let failed: Vec<&str> = report.failed.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(failed, vec!["big", "small"]);
        assert!(dest.bytes("big").is_none() && dest.bytes("small").is_none());
        assert!(dest.bytes("fine").is_some());
        assert_eq!(sink.aborts.load(Ordering::Relaxed), 1);
        assert_eq!(sink.open_uploads(), 0);
    }

    #[tokio::test]
    async fn a_failed_part_aborts_the_upload() {
        let big: Vec<u8> = (0..(17 * MIB)).map(|i| (i % 241) as u8).collect();
        let dir = mirror_with(&[("big", big, None)]);
        let dest = Arc::new(MemoryStore::new("dest"));
        let sink = Arc::new(MemorySink::new(Arc::clone(&dest)));
        sink.fail_part(2);
        let report = run(dir.path(), dest.as_ref(), sink.clone(), &options(false))
            .await
            .unwrap();
        assert_eq!(report.failed.len(), 1);
        assert!(report.failed[0].error.contains("access denied"));
        assert!(
            report.error.is_none(),
            "one denied key does not stop the run"
        );
        assert_eq!(sink.open_uploads(), 0);
        assert!(dest.bytes("big").is_none());
    }

    fn reference_etag(data: &[u8], part: usize) -> String {
        let mut digests = Vec::new();
        for chunk in data.chunks(part) {
            digests.extend_from_slice(&md5::Md5::digest(chunk));
        }
        format!(
            "{:x}-{}",
            md5::Md5::digest(&digests),
            data.len().div_ceil(part)
        )
    }

    #[test]
    fn multipart_etags_match_a_straightforward_computation() {
        let data: Vec<u8> = (0..(21 * MIB + 12345))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&data).unwrap();
        let sizes = [5 * MIB, 8 * MIB, 16 * MIB, 7 * MIB];
        let etags = multipart_etags(&file, data.len() as u64, &sizes).unwrap();
        for (etag, part) in etags.iter().zip(sizes) {
            assert_eq!(*etag, reference_etag(&data, part as usize), "part {part}");
        }
        // Exactly on a part boundary.
        let exact = &data[..(16 * MIB) as usize];
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(exact).unwrap();
        let etags = multipart_etags(&file, exact.len() as u64, &[8 * MIB]).unwrap();
        assert_eq!(etags[0], reference_etag(exact, (8 * MIB) as usize));
    }

    #[test]
    fn candidate_part_sizes_give_the_part_count() {
        let size = 40 * MIB + 1;
        assert_eq!(candidate_part_sizes(size, 9), vec![5 * MIB]);
        assert_eq!(candidate_part_sizes(size, 6), vec![7 * MIB, 8 * MIB]);
        assert_eq!(candidate_part_sizes(size, 3), vec![14 * MIB, 16 * MIB]);
        assert!(candidate_part_sizes(size, 1000).is_empty());
    }

    #[test]
    fn part_sizes_keep_within_the_part_limit() {
        assert_eq!(part_size_for(1), PART_SIZE);
        let huge: u64 = 5 << 40;
        assert!(huge.div_ceil(part_size_for(huge)) <= MAX_PARTS);
    }
}
