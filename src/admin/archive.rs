//! `s3mirrorfs archive`: a directory as one `tar.zst` object, streamed straight
//! into a multipart upload (no temp file of the whole archive), named
//! `PREFIX/<dirname>-<yyyymmddThhmmssZ>.tar.zst`, with server-side encryption, and
//! a retention count applied to that directory's archives only. An archive is all or
//! nothing: any file that cannot be read aborts the upload and leaves no object.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;

use super::{AdminError, SourceProblem};
use crate::report::{KeyError, human_bytes};
use crate::store::multipart::Multipart;
use crate::store::{Encryption, Key, ObjectSink, ObjectStore, PutOptions, StoreError, list_all};
use crate::utc;

/// The first parts are this large; S3 wants at least 5 MiB for all but the last.
pub const PART_SIZE: usize = 8 << 20;
/// After this many parts the part size doubles (up to 16 times), so the 10,000
/// parts S3 allows hold about 500 GB.
const PARTS_PER_STEP: u64 = 2000;
const ARCHIVE_SUFFIX: &str = ".tar.zst";
/// zstd's default level: fast, and most of what higher levels would gain.
const ZSTD_LEVEL: i32 = 3;

/// What to archive and where.
#[derive(Clone, Debug)]
pub struct ArchiveOptions {
    pub source: PathBuf,
    /// Key prefix ("" or ending in `/`).
    pub prefix: String,
    /// Archives of this directory to keep, the new one included; 0 keeps them all
    /// (and needs no permission beyond PutObject).
    pub keep: usize,
    pub encryption: Encryption,
    /// Size of the first parts (tests use the minimum).
    pub part_size: usize,
}

/// What `archive` did; `--json` prints it as one object.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ArchiveReport {
    pub bucket: String,
    pub key: String,
    pub source: String,
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    /// Bytes of file contents archived.
    pub bytes_read: u64,
    /// Size of the archive object.
    pub bytes_uploaded: u64,
    /// Parts of the multipart upload; 1 for a single PUT.
    pub parts: u64,
    pub encryption: String,
    /// Older archives of the same directory removed by the retention count.
    pub deleted: Vec<String>,
    /// Old archives that could not be deleted, and why.
    pub delete_failures: Vec<KeyError>,
    /// Why old archives could not be looked for, if they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_error: Option<String>,
    /// Special files (sockets) that cannot be archived and were left out.
    pub skipped: Vec<String>,
}

impl ArchiveReport {
    /// A line for the archive, one per deleted or undeletable old archive.
    pub fn render(&self) -> String {
        let mut out = format!(
            "archived {} ({} files, {} dirs, {} symlinks, {}) to s3://{}/{} ({}, {} parts, SSE {})\n",
            self.source,
            self.files,
            self.directories,
            self.symlinks,
            human_bytes(self.bytes_read),
            self.bucket,
            self.key,
            human_bytes(self.bytes_uploaded),
            self.parts,
            self.encryption
        );
        for path in &self.skipped {
            out.push_str(&format!("left out {path} (a socket cannot be archived)\n"));
        }
        for key in &self.deleted {
            out.push_str(&format!("deleted old archive s3://{}/{key}\n", self.bucket));
        }
        if let Some(e) = &self.retention_error {
            out.push_str(&format!("{e}\n"));
        }
        for f in &self.delete_failures {
            out.push_str(&format!(
                "cannot delete old archive s3://{}/{}: {}\n",
                self.bucket, f.key, f.error
            ));
        }
        out
    }
}

/// The directory's name as archives are named by it.
pub fn archive_name(source: &Path) -> Result<(PathBuf, String), AdminError> {
    let invalid = |problem| AdminError::Source {
        path: source.to_path_buf(),
        problem,
    };
    let canonical = fs::canonicalize(source).map_err(|e| invalid(e.into()))?;
    let meta = fs::symlink_metadata(&canonical).map_err(|e| invalid(e.into()))?;
    if !meta.is_dir() {
        return Err(invalid(SourceProblem::NotADirectory));
    }
    // The tree is read by path: only its owner archives it, so a symlink swapped
    // in meanwhile can never show the archiver more than its owner could read.
    super::refuse_owner(&canonical, std::os::unix::fs::MetadataExt::uid(&meta))?;
    let name = canonical
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| invalid(SourceProblem::NoName))?
        .to_string();
    Ok((canonical, name))
}

/// Whether `key` is an archive of `name` under `prefix`, as `archive` names them.
pub fn is_archive_of(key: &str, prefix: &str, name: &str) -> bool {
    key.strip_prefix(prefix)
        .and_then(|k| k.strip_prefix(name))
        .and_then(|k| k.strip_prefix('-'))
        .and_then(|k| k.strip_suffix(ARCHIVE_SUFFIX))
        .is_some_and(utc::is_compact)
}

/// Archives `options.source` into the bucket of `sink` (`store` lists the same bucket).
pub async fn run(
    store: &dyn ObjectStore,
    sink: Arc<dyn ObjectSink>,
    options: &ArchiveOptions,
) -> Result<ArchiveReport, AdminError> {
    let (source, name) = archive_name(&options.source)?;
    let key = free_key(store, &options.prefix, &name).await?;
    let mut report = ArchiveReport {
        bucket: sink.bucket().to_string(),
        key: key.as_str().to_string(),
        source: source.display().to_string(),
        encryption: match &options.encryption {
            Encryption::S3Managed => "AES256".into(),
            Encryption::Kms { .. } => "aws:kms".into(),
        },
        ..ArchiveReport::default()
    };
    let put = PutOptions {
        encryption: Some(options.encryption.clone()),
    };
    let (tx, rx) = mpsc::channel(1);
    let part_size = options.part_size.max(1);
    let producer = {
        let (source, name) = (source.clone(), name.clone());
        tokio::task::spawn_blocking(move || write_archive(&source, &name, tx, part_size))
    };
    let uploaded = upload(sink.as_ref(), &key, put, rx).await;
    let produced = producer.await.expect("the archiver does not panic");
    settle(uploaded, produced, &source, &mut report)?;
    if options.keep > 0 {
        apply_retention(store, sink.as_ref(), options, &name, &mut report).await;
    }
    Ok(report)
}

/// Puts what the upload and the archiver did into the report, or says why the
/// archive failed (nothing was uploaded then).
fn settle(
    uploaded: Result<(u64, u64), Ended>,
    produced: io::Result<Stats>,
    source: &Path,
    report: &mut ArchiveReport,
) -> Result<(), AdminError> {
    match (uploaded, produced) {
        (Ok((bytes, parts)), Ok(stats)) => {
            report.bytes_uploaded = bytes;
            report.parts = parts;
            report.files = stats.files;
            report.directories = stats.directories;
            report.symlinks = stats.symlinks;
            report.bytes_read = stats.bytes;
            report.skipped = stats.skipped;
            Ok(())
        }
        // The stream ended early: the archiver's error says why (an unreadable file).
        (Err(Ended::Early), Err(e)) | (Ok(_), Err(e)) => Err(AdminError::Archive {
            path: source.to_path_buf(),
            source: e,
        }),
        // S3 failed: the archiver only saw the upload stop.
        (Err(Ended::Store(e)), _) => Err(e.into()),
        // Cannot happen (a successful archiver always ends the stream); said rather than panicked.
        (Err(Ended::Early), Ok(_)) => Err(AdminError::StreamEnded),
    }
}

/// Deletes this directory's archives beyond the newest `keep` (the new one
/// included). The new archive is safe in S3 whatever happens here: failures
/// are reported, not raised.
async fn apply_retention(
    store: &dyn ObjectStore,
    sink: &dyn ObjectSink,
    options: &ArchiveOptions,
    name: &str,
    report: &mut ArchiveReport,
) {
    let listed = match list_all(store, &format!("{}{name}-", options.prefix)).await {
        Ok(listed) => listed,
        Err(e) => {
            report.retention_error = Some(format!("cannot list old archives for --keep: {e}"));
            return;
        }
    };
    let mut archives: Vec<Key> = listed
        .into_iter()
        .map(|o| o.key)
        .filter(|k| is_archive_of(k.as_str(), &options.prefix, name))
        .collect();
    // The timestamp sorts as it reads: newest first.
    archives.sort_by(|a, b| b.cmp(a));
    for old in archives
        .into_iter()
        .filter(|k| k.as_str() != report.key)
        .skip(options.keep - 1)
    {
        match sink.delete(old.clone()).await {
            Ok(()) => report.deleted.push(old.as_str().to_string()),
            Err(e) => report.delete_failures.push(KeyError::new(old.as_str(), e)),
        }
    }
}

/// The archive's key for now; if an archive of the same second exists, waits for
/// the next second rather than overwrite it.
async fn free_key(store: &dyn ObjectStore, prefix: &str, name: &str) -> Result<Key, AdminError> {
    loop {
        let now = SystemTime::now();
        let key = format!("{prefix}{name}-{}{ARCHIVE_SUFFIX}", utc::compact(now));
        let key = Key::new(key).expect("an archive key ends in its suffix");
        // Listing also proves the bucket exists and the credentials work before any
        // file is read. A role allowed only PutObject cannot list: then the check is
        // skipped, as the second in the key makes a clash unlikely.
        let page = match store.list_page(key.as_str(), false, None).await {
            Ok(page) => page,
            Err(StoreError::AccessDenied { .. }) => {
                tracing::debug!("listing denied; not checking whether {key} exists");
                return Ok(key);
            }
            Err(e) => return Err(e.into()),
        };
        if !page.objects.iter().any(|o| o.key == key) {
            return Ok(key);
        }
        let into_second = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_nanos(1_000_000_000 - u64::from(into_second))).await;
    }
}

/// A chunk of the compressed stream.
enum Chunk {
    /// A full part; more follow.
    Part(Bytes),
    /// The end of the stream (possibly empty); only sent when the archive is complete.
    Last(Bytes),
}

/// Why an upload did not complete.
enum Ended {
    /// The stream stopped before its end: the archiver failed and says why.
    Early,
    Store(StoreError),
}

impl From<StoreError> for Ended {
    fn from(e: StoreError) -> Ended {
        Ended::Store(e)
    }
}

/// Uploads the stream: one PUT if it fits in one part, else a multipart upload that
/// is aborted if the stream or an upload fails. Returns (bytes, parts).
async fn upload(
    sink: &dyn ObjectSink,
    key: &Key,
    put: PutOptions,
    mut rx: mpsc::Receiver<Chunk>,
) -> Result<(u64, u64), Ended> {
    let first = match rx.recv().await {
        None => return Err(Ended::Early),
        Some(Chunk::Last(data)) => {
            let len = data.len() as u64;
            sink.put(key.clone(), data, put).await?;
            return Ok((len, 1));
        }
        Some(Chunk::Part(data)) => data,
    };
    let mut upload = Multipart::start(sink, key, put).await?;
    let sent = send_stream(&mut upload, first, &mut rx).await;
    if sent.is_err() {
        // Stops the archiver at its next part; the upload is then aborted.
        rx.close();
    }
    let ((), done) = upload.finish(sent).await?;
    Ok((done.bytes, done.parts))
}

/// Uploads `first` and every further part of the stream, up to its end.
async fn send_stream(
    upload: &mut Multipart<'_>,
    first: Bytes,
    rx: &mut mpsc::Receiver<Chunk>,
) -> Result<(), Ended> {
    upload.push(first).await?;
    loop {
        match rx.recv().await {
            None => return Err(Ended::Early),
            Some(Chunk::Part(data)) => upload.push(data).await?,
            Some(Chunk::Last(data)) => {
                if !data.is_empty() {
                    upload.push(data).await?;
                }
                return Ok(());
            }
        }
    }
}

/// Cuts the compressed stream into parts and hands them to the uploader.
struct PartWriter {
    buf: Vec<u8>,
    first_part: usize,
    sent: u64,
    tx: mpsc::Sender<Chunk>,
}

impl PartWriter {
    fn part_len(&self) -> usize {
        self.first_part << (self.sent / PARTS_PER_STEP).min(4)
    }

    fn send(&self, chunk: Chunk) -> io::Result<()> {
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::other("the upload stopped"))
    }

    /// Sends what is left as the end of a complete archive.
    fn finish(mut self) -> io::Result<()> {
        let rest = std::mem::take(&mut self.buf);
        self.send(Chunk::Last(Bytes::from(rest)))
    }
}

impl Write for PartWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        while self.buf.len() >= self.part_len() {
            let rest = self.buf.split_off(self.part_len());
            let part = std::mem::replace(&mut self.buf, rest);
            self.send(Chunk::Part(Bytes::from(part)))?;
            self.sent += 1;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Default)]
struct Stats {
    files: u64,
    directories: u64,
    symlinks: u64,
    bytes: u64,
    skipped: Vec<String>,
}

/// Writes the tar.zst of `source` (entries under `name/`) into parts.
fn write_archive(
    source: &Path,
    name: &str,
    tx: mpsc::Sender<Chunk>,
    part: usize,
) -> io::Result<Stats> {
    let writer = PartWriter {
        buf: Vec::with_capacity(part),
        first_part: part,
        sent: 0,
        tx,
    };
    let encoder = zstd::Encoder::new(writer, ZSTD_LEVEL)?;
    let mut builder = tar::Builder::new(encoder);
    builder.follow_symlinks(false);
    let mut stats = Stats::default();
    append_tree(&mut builder, source, Path::new(name), &mut stats)?;
    let encoder = builder.into_inner()?;
    encoder.finish()?.finish()?;
    Ok(stats)
}

/// Adds `path` as `name` and, for a directory, everything under it in name order.
/// Symlinks are stored as symlinks, never followed.
fn append_tree<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &Path,
    name: &Path,
    stats: &mut Stats,
) -> io::Result<()> {
    let with_path = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let meta = fs::symlink_metadata(path).map_err(with_path)?;
    let kind = meta.file_type();
    if kind.is_socket() {
        tracing::warn!(path = %path.display(), "a socket cannot be archived; left out");
        stats.skipped.push(path.display().to_string());
        return Ok(());
    }
    if kind.is_file() {
        // Opened here first so an unreadable file fails with its own name.
        fs::File::open(path).map_err(with_path)?;
    }
    builder
        .append_path_with_name(path, name)
        .map_err(with_path)?;
    if kind.is_file() {
        stats.files += 1;
        stats.bytes += meta.len();
    } else if kind.is_symlink() {
        stats.symlinks += 1;
    } else if kind.is_dir() {
        stats.directories += 1;
        let mut children = fs::read_dir(path)
            .and_then(|entries| entries.collect::<io::Result<Vec<_>>>())
            .map_err(with_path)?;
        children.sort_by_key(|c| c.file_name());
        for child in children {
            append_tree(builder, &child.path(), &name.join(child.file_name()), stats)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::memory::sink::MemorySink;
    use std::sync::atomic::Ordering;

    fn source() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app");
        fs::create_dir_all(app.join("sub/empty")).unwrap();
        // Incompressible, so the archive takes several small parts.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..3_000_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        fs::write(app.join("sub/noise"), &noise).unwrap();
        fs::write(app.join("top"), b"top").unwrap();
        std::os::unix::fs::symlink("top", app.join("link")).unwrap();
        dir
    }

    fn options(dir: &Path, keep: usize) -> ArchiveOptions {
        ArchiveOptions {
            source: dir.join("app"),
            prefix: "p/".into(),
            keep,
            encryption: Encryption::Kms {
                key_id: Some("k1".into()),
            },
            part_size: 1 << 20,
        }
    }

    #[tokio::test]
    async fn an_archive_unpacks_to_the_tree_and_old_ones_are_pruned() {
        let dir = source();
        let store = Arc::new(MemoryStore::new("b"));
        for key in [
            "p/app-20200101T000000Z.tar.zst",
            "p/app-20210101T000000Z.tar.zst",
            "p/app-notes.txt",
            "p/apple-20200101T000000Z.tar.zst",
        ] {
            store.put(key, "x");
        }
        let sink = Arc::new(MemorySink::new(Arc::clone(&store)));
        let report = run(store.as_ref(), sink.clone(), &options(dir.path(), 2))
            .await
            .unwrap();
        assert!(report.parts >= 3, "{report:?}");
        assert_eq!(report.files, 2);
        assert_eq!(report.symlinks, 1);
        assert_eq!(
            report.deleted,
            vec!["p/app-20200101T000000Z.tar.zst".to_string()]
        );
        assert!(store.bytes("p/app-20210101T000000Z.tar.zst").is_some());
        assert!(store.bytes("p/app-notes.txt").is_some());
        assert!(store.bytes("p/apple-20200101T000000Z.tar.zst").is_some());
        assert_eq!(
            sink.options.lock()[0].encryption,
            Some(Encryption::Kms {
                key_id: Some("k1".into())
            })
        );

        let bytes = store.bytes(&report.key).unwrap();
        let out = tempfile::tempdir().unwrap();
        tar::Archive::new(zstd::Decoder::new(&bytes[..]).unwrap())
            .unpack(out.path())
            .unwrap();
        let unpacked = out.path().join("app");
        assert_eq!(
            fs::read(unpacked.join("sub/noise")).unwrap(),
            fs::read(dir.path().join("app/sub/noise")).unwrap()
        );
        assert!(unpacked.join("sub/empty").is_dir());
        assert_eq!(
            fs::read_link(unpacked.join("link")).unwrap(),
            Path::new("top")
        );
    }

    #[tokio::test]
    async fn a_failed_part_leaves_no_archive() {
        let dir = source();
        let store = Arc::new(MemoryStore::new("b"));
        let sink = Arc::new(MemorySink::new(Arc::clone(&store)));
        sink.fail_part(2);
        let err = run(store.as_ref(), sink.clone(), &options(dir.path(), 0))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("access denied"), "{err}");
        assert_eq!(sink.aborts.load(Ordering::Relaxed), 1);
        assert_eq!(sink.open_uploads(), 0);
        assert!(list_all(store.as_ref(), "").await.unwrap().is_empty());
    }

    #[test]
    fn retention_only_counts_archives_of_the_same_directory() {
        assert!(is_archive_of("b/app-20261203T141000Z.tar.zst", "b/", "app"));
        assert!(is_archive_of("app-20261203T141000Z.tar.zst", "", "app"));
        assert!(!is_archive_of(
            "b/app-extra-20261203T141000Z.tar.zst",
            "b/",
            "app"
        ));
        assert!(!is_archive_of(
            "b/app-20261203T141000Z.tar.zst.bak",
            "b/",
            "app"
        ));
        assert!(!is_archive_of(
            "b/sub/app-20261203T141000Z.tar.zst",
            "b/",
            "app"
        ));
        assert!(!is_archive_of("b/app-2026120T141000Z.tar.zst", "b/", "app"));
        assert!(!is_archive_of(
            "b/application-20261203T141000Z.tar.zst",
            "b/",
            "app"
        ));
        assert!(!is_archive_of(
            "c/app-20261203T141000Z.tar.zst",
            "b/",
            "app"
        ));
    }

    #[test]
    fn the_stream_is_cut_into_growing_parts() {
        let (tx, mut rx) = mpsc::channel(100_000);
        let mut writer = PartWriter {
            buf: Vec::new(),
            first_part: 10,
            sent: 0,
            tx,
        };
        let data = vec![1u8; 10 * 2000 + 20 * 3 + 5];
        writer.write_all(&data).unwrap();
        writer.finish().unwrap();
        let mut sizes = Vec::new();
        let mut last = None;
        while let Ok(chunk) = rx.try_recv() {
            match chunk {
                Chunk::Part(b) => sizes.push(b.len()),
                Chunk::Last(b) => last = Some(b.len()),
            }
        }
        assert_eq!(sizes.len(), 2003);
        assert!(sizes[..2000].iter().all(|s| *s == 10));
        assert!(sizes[2000..].iter().all(|s| *s == 20));
        assert_eq!(last, Some(5));
    }

    #[test]
    fn a_file_is_not_a_source() {
        let file = tempfile::NamedTempFile::new().unwrap();
        assert!(archive_name(file.path()).is_err());
        assert!(archive_name(Path::new("/nonexistent/x")).is_err());
        assert!(archive_name(Path::new("/")).is_err());
        let dir = tempfile::tempdir().unwrap();
        let (_, name) = archive_name(dir.path()).unwrap();
        assert_eq!(
            Some(name.as_str()),
            dir.path().file_name().unwrap().to_str()
        );
    }
}
