//! The downloads readers share: at most one live `Stream` per version of an
//! object, started on the first cold open and stopped with its last reader
//! (unless it is small or nearly done: then it is finished for the mirror, and a
//! reader that opens the file meanwhile joins it again).

use std::collections::HashMap;
use std::ops::Deref;
use std::path::Path;
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::task::AbortHandle;

use super::stream::{Finished, Stream};
use super::{CommitHook, Ino};
use crate::fetch::{FetchError, Fetcher, Observer, Outcome};
use crate::store::{ETag, Key};

/// A download its last reader let go is finished anyway when the object is at
/// most this large: what is left costs less than the next open starting over.
pub const FINISH_SMALL: u64 = 8 << 20;
/// A download its last reader let go is finished anyway when at most this many
/// bytes are left to fetch.
pub const FINISH_LEFT: u64 = 8 << 20;

/// Downloads readers are waiting on, by version.
pub struct Streams {
    live: Mutex<HashMap<(Key, ETag), Live>>,
    fetcher: Fetcher,
    rt: Handle,
    /// Told the inode of every file a reader's download committed to the mirror.
    committed: Arc<OnceLock<CommitHook>>,
}

impl Streams {
    /// No downloads yet; each will run on `rt` through `fetcher`.
    pub fn new(fetcher: Fetcher, rt: Handle) -> Streams {
        Streams {
            live: Mutex::default(),
            fetcher,
            rt,
            committed: Arc::default(),
        }
    }

    /// Sets what to do when a reader's download is committed (once; later calls
    /// are ignored).
    pub fn on_commit(&self, hook: CommitHook) {
        let _ = self.committed.set(hook);
    }

    /// The download readers of `key` at `etag` share, started (into `rel` in the
    /// mirror) if none is running, or if the last one failed: a new open tries again.
    /// Dropping the last `Arc` of it stops it (see `Download`).
    pub fn open(&self, ino: Ino, key: &Key, etag: &ETag, size: u64, rel: &Path) -> Arc<Download> {
        let mut live = self.live.lock();
        live.retain(|_, l| l.stream.strong_count() > 0);
        let id = (key.clone(), etag.clone());
        if let Some(running) = live.get_mut(&id) {
            if let Some(download) = running.download.upgrade()
                && !download.failed()
            {
                return download;
            }
            // Its last reader left and it goes on for the mirror: a new reader joins it
            // rather than wait behind the path's lock for its commit.
            if let Some(stream) = running.stream.upgrade()
                && !stream.failed()
            {
                let download = Arc::new(Download {
                    stream,
                    task: running.task.clone(),
                    key: key.clone(),
                    size,
                });
                running.download = Arc::downgrade(&download);
                return download;
            }
        }
        let stream = Arc::new(Stream::default());
        let (fetcher, committed) = (self.fetcher.clone(), Arc::clone(&self.committed));
        let (task_key, etag, rel, observer) = (
            key.clone(),
            etag.clone(),
            rel.to_path_buf(),
            Arc::clone(&stream),
        );
        let task = self.rt.spawn(async move {
            let key = task_key;
            let watcher = Some(Arc::clone(&observer) as Arc<dyn Observer>);
            let result = fetcher
                .ensure_observed(&key, &etag, size, &rel, watcher)
                .await;
            let downloaded = matches!(result, Ok(Outcome::Downloaded { .. }));
            observer.finish(finished(&key, result));
            if downloaded && let Some(hook) = committed.get() {
                hook(ino);
            }
        });
        let download = Arc::new(Download {
            stream: Arc::clone(&stream),
            task: task.abort_handle(),
            key: key.clone(),
            size,
        });
        let running = Live {
            download: Arc::downgrade(&download),
            stream: Arc::downgrade(&stream),
            task: task.abort_handle(),
        };
        live.insert(id, running);
        download
    }

    /// How many versions have a download some reader still holds.
    #[cfg(test)]
    fn live(&self) -> usize {
        let live = self.live.lock();
        live.values()
            .filter(|l| l.download.strong_count() > 0)
            .count()
    }
}

/// A download of one version, as long as its task runs or a reader holds it.
struct Live {
    /// The readers' hold on it, while some handle is open.
    download: Weak<Download>,
    /// The download itself (its task holds it until it ends).
    stream: Weak<Stream>,
    task: AbortHandle,
}

/// A download for readers, held by each open handle of the version. When the last
/// handle lets go, the download stops (its requests dropped, its temp file
/// removed, nothing committed) unless the object is at most `FINISH_SMALL` or at
/// most `FINISH_LEFT` is left to fetch. A reader that left must not keep a
/// terabyte coming into the mirror; the daily prefetch brings what was stopped.
pub struct Download {
    stream: Arc<Stream>,
    task: AbortHandle,
    key: Key,
    size: u64,
}

impl Deref for Download {
    type Target = Stream;

    fn deref(&self) -> &Stream {
        &self.stream
    }
}

impl Download {
    /// Whether the download is still worth finishing with nobody waiting for it.
    fn worth_finishing(&self) -> bool {
        let left = self.size.saturating_sub(self.stream.received());
        self.size <= FINISH_SMALL || left <= FINISH_LEFT
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        if self.stream.finished() || self.worth_finishing() {
            return;
        }
        let (key, received) = (&self.key, self.stream.received());
        tracing::info!(%key, received, size = self.size, "no reader left; download stopped");
        self.task.abort();
        self.stream.finish(Finished::Stopped);
    }
}

/// How a download for readers ended, logged.
fn finished(key: &Key, result: Result<Outcome, FetchError>) -> Finished {
    match result {
        Ok(_) => Finished::Complete,
        Err(FetchError::Mirror(e)) => {
            // The copy is best effort to a reader: its bytes still come from S3.
            tracing::error!(%key, "cannot persist to the mirror ({e}); serving it from S3");
            Finished::Unpersisted
        }
        // Said once per key by the filesystem, with what restores it.
        Err(e @ FetchError::Store(crate::store::StoreError::Archived(_))) => {
            tracing::debug!(%key, "download failed: {e}");
            Finished::Failed(Arc::new(e))
        }
        Err(e) => {
            tracing::warn!(%key, "download failed: {e}");
            Finished::Failed(Arc::new(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::fetch::FetchConfig;
    use crate::mirror::Mirror;
    use crate::store::ObjectStore;
    use crate::store::failing::{FailingStore, GetFault};
    use crate::store::memory::MemoryStore;
    use crate::testing::{Scratch, runtime};

    struct Fixture {
        streams: Streams,
        store: Arc<MemoryStore>,
        _scratch: Scratch,
        _rt: tokio::runtime::Runtime,
    }

    fn fixture() -> Fixture {
        let rt = runtime(1);
        let scratch = Scratch::new(&[]);
        let fetcher = scratch.fetcher(FetchConfig::default());
        Fixture {
            streams: Streams::new(fetcher, rt.handle().clone()),
            store: Arc::clone(&scratch.store),
            _scratch: scratch,
            _rt: rt,
        }
    }

    fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn readers_of_one_version_share_one_download() {
        let f = fixture();
        let hooked = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&hooked);
        f.streams
            .on_commit(Box::new(move |ino| seen.store(ino, Ordering::SeqCst)));
        let etag = f.store.put("k", "old");
        let key = Key::new("k").unwrap();
        let first = f.streams.open(7, &key, &etag, 3, Path::new("k"));
        let second = f.streams.open(7, &key, &etag, 3, Path::new("k"));
        assert!(Arc::ptr_eq(&first, &second));
        until("the commit is told", || hooked.load(Ordering::SeqCst) == 7);
        let newer = f.store.put("k", "new!");
        let other = f.streams.open(7, &key, &newer, 4, Path::new("k"));
        assert!(
            !Arc::ptr_eq(&first, &other),
            "another version, another download"
        );
        assert_eq!(f.streams.live(), 2);
        drop((first, second));
        until("a finished download is let go", || f.streams.live() == 1);
    }

    /// Streams over a store whose first `stalls` GETs deliver 1000 bytes and then
    /// stall, holding `k` of `size` bytes; a stalled body is given up after `stall`.
    fn stalling(
        size: u64,
        stalls: u64,
        stall: Duration,
    ) -> (
        Streams,
        Arc<FailingStore<MemoryStore>>,
        ETag,
        tempfile::TempDir,
        tokio::runtime::Runtime,
    ) {
        let rt = runtime(1);
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FailingStore::new(MemoryStore::new("b")));
        let etag = store.inner().put("k", vec![7u8; size as usize]);
        for n in 1..=stalls {
            store.on_get(n, GetFault::StallAfter(1000));
        }
        let mirror = Arc::new(Mirror::open(dir.path(), "b").unwrap());
        let config = FetchConfig {
            stall_timeout: stall,
            ..FetchConfig::default()
        };
        let fetcher = Fetcher::new(Arc::clone(&store) as Arc<dyn ObjectStore>, mirror, config);
        (
            Streams::new(fetcher, rt.handle().clone()),
            store,
            etag,
            dir,
            rt,
        )
    }

    fn temp_files(dir: &Path) -> usize {
        std::fs::read_dir(dir.join(".s3mirrorfs/tmp")).map_or(0, |d| d.count())
    }

    #[test]
    fn the_last_reader_leaving_stops_a_large_download_and_leaves_nothing() {
        let size = FINISH_SMALL + FINISH_LEFT + (1 << 20);
        let (streams, store, etag, dir, _rt) = stalling(size, 8, Duration::from_secs(60));
        let key = Key::new("k").unwrap();
        let first = streams.open(1, &key, &etag, size, Path::new("k"));
        let second = streams.open(1, &key, &etag, size, Path::new("k"));
        until("bytes arrive", || first.received() > 0);
        assert_eq!(temp_files(dir.path()), 1);
        drop(first);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(temp_files(dir.path()), 1, "a reader is left: it goes on");
        drop(second);
        until("the temp file is removed", || temp_files(dir.path()) == 0);
        let gets = store.gets();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(store.gets(), gets, "no request after");
        assert!(!dir.path().join("k").exists(), "nothing committed");
    }

    #[test]
    fn a_small_download_is_finished_for_the_mirror_when_its_reader_leaves() {
        let size = 100_000;
        let (streams, _store, etag, dir, _rt) = stalling(size, 1, Duration::from_millis(100));
        let key = Key::new("k").unwrap();
        let reader = streams.open(1, &key, &etag, size, Path::new("k"));
        until("bytes arrive", || reader.received() > 0);
        drop(reader);
        until("the copy is committed", || dir.path().join("k").exists());
        assert_eq!(
            std::fs::read(dir.path().join("k")).unwrap(),
            vec![7u8; 100_000]
        );
        assert_eq!(temp_files(dir.path()), 0);
    }

    #[test]
    fn a_reader_joins_the_download_its_last_reader_left_to_finish() {
        let size = 100_000;
        let (streams, store, etag, dir, _rt) = stalling(size, 1, Duration::from_millis(300));
        let key = Key::new("k").unwrap();
        let first = streams.open(1, &key, &etag, size, Path::new("k"));
        until("bytes arrive", || first.received() > 0);
        let stream = Arc::clone(&first.stream);
        drop(first);
        let second = streams.open(1, &key, &etag, size, Path::new("k"));
        assert!(Arc::ptr_eq(&stream, &second.stream), "the same download");
        match second.read(0..size, Duration::from_secs(10)).unwrap() {
            super::super::stream::Ready::InFile(file) => assert_eq!(
                super::super::stream::tests::bytes(&file, 0..size),
                vec![7u8; 100_000]
            ),
            _ => panic!("the bytes of the file being filled"),
        }
        until("the copy is committed", || dir.path().join("k").exists());
        assert_eq!(store.gets(), 2, "the first GET and its resume, no other");
    }

    #[test]
    fn a_failed_download_is_started_again_by_the_next_open() {
        let f = fixture();
        let key = Key::new("missing").unwrap();
        let etag = ETag::new("e");
        let first = f.streams.open(2, &key, &etag, 3, Path::new("missing"));
        until("the download fails", || first.failed());
        let again = f.streams.open(2, &key, &etag, 3, Path::new("missing"));
        assert!(!Arc::ptr_eq(&first, &again));
    }
}
