//! Serving reads while a download is still filling the mirror: the download tells
//! a `Stream` which byte ranges have landed, and readers wait only for their own
//! range (or, far ahead of the fill, fetch it with a ranged GET of their own).

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::fetch::{FetchError, Observer};

/// Byte ranges known to be in the file, kept sorted and merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet(Vec<Range<u64>>);

impl RangeSet {
    pub fn insert(&mut self, range: Range<u64>) {
        if range.start >= range.end {
            return;
        }
        let mut merged = range;
        self.0.retain(|r| {
            if r.end < merged.start || r.start > merged.end {
                true
            } else {
                merged = merged.start.min(r.start)..merged.end.max(r.end);
                false
            }
        });
        let at = self.0.partition_point(|r| r.start < merged.start);
        self.0.insert(at, merged);
    }

    pub fn covers(&self, range: &Range<u64>) -> bool {
        range.start >= range.end
            || self
                .0
                .iter()
                .any(|r| r.start <= range.start && range.end <= r.end)
    }

    /// Where the run of bytes that starts at 0 ends.
    pub fn contiguous_end(&self) -> u64 {
        self.0.first().filter(|r| r.start == 0).map_or(0, |r| r.end)
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// How many bytes the set holds.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|r| r.end - r.start).sum()
    }
}

/// How a download for readers ended.
#[derive(Clone, Debug)]
pub enum Finished {
    /// The file is complete (it may be the temp file, now renamed, or none at all if
    /// the mirror already held the version).
    Complete,
    /// Every reader waiting on it fails with this.
    Failed(Arc<FetchError>),
    /// The bytes could not be persisted (disk full, say): readers get them from S3
    /// directly, since the mirror is a best-effort copy to a reader.
    Unpersisted,
    /// Stopped when its last reader left: nobody reads it, a new open starts another.
    Stopped,
}

#[derive(Default)]
struct State {
    file: Option<Arc<File>>,
    ranges: RangeSet,
    finished: Option<Finished>,
}

/// A download in progress, shared by every reader of the object.
#[derive(Default)]
pub struct Stream {
    state: Mutex<State>,
    changed: Condvar,
}

/// Why a reader of a stream gets no bytes.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("the download failed")]
    Failed(#[source] Arc<FetchError>),
    #[error("timed out after {0:?} waiting for the download")]
    TimedOut(Duration),
    #[error("the download was stopped")]
    Stopped,
}

/// What a reader should do next.
pub enum Ready {
    /// The range is in the file being filled: read it there.
    InFile(Arc<File>),
    /// The download completed without a file handle here: read the mirror copy.
    ReadMirror,
    /// The range is far ahead of the fill: fetch it directly.
    FetchDirect,
}

/// Reads further than this past the contiguous fill get their own ranged GET.
pub const FAR_AHEAD: u64 = 16 << 20;

impl Stream {
    /// Ends the download; the first end told is the one that holds (a download
    /// stopped as it finished stays stopped).
    pub fn finish(&self, result: Finished) {
        self.state.lock().finished.get_or_insert(result);
        self.changed.notify_all();
    }

    /// Whether the download ended, one way or another.
    pub fn finished(&self) -> bool {
        self.state.lock().finished.is_some()
    }

    /// Bytes of the object the current attempt has put in its file so far.
    pub fn received(&self) -> u64 {
        self.state.lock().ranges.total()
    }

    /// Whether the download failed or was stopped (a new open starts another).
    pub fn failed(&self) -> bool {
        matches!(
            self.state.lock().finished,
            Some(Finished::Failed(_) | Finished::Unpersisted | Finished::Stopped)
        )
    }

    /// Waits until `range` can be served, up to `limit`.
    pub fn read(&self, range: Range<u64>, limit: Duration) -> Result<Ready, StreamError> {
        let deadline = Instant::now() + limit;
        let mut state = self.state.lock();
        loop {
            if let Some(file) = &state.file
                && (state.ranges.covers(&range)
                    || matches!(state.finished, Some(Finished::Complete)))
            {
                return Ok(Ready::InFile(Arc::clone(file)));
            }
            match &state.finished {
                Some(Finished::Complete) => return Ok(Ready::ReadMirror),
                Some(Finished::Failed(e)) => return Err(StreamError::Failed(Arc::clone(e))),
                Some(Finished::Unpersisted) => return Ok(Ready::FetchDirect),
                Some(Finished::Stopped) => return Err(StreamError::Stopped),
                None => {}
            }
            if range.start >= state.ranges.contiguous_end() + FAR_AHEAD {
                return Ok(Ready::FetchDirect);
            }
            if self.changed.wait_until(&mut state, deadline).timed_out() {
                return Err(StreamError::TimedOut(limit));
            }
        }
    }
}

impl Observer for Stream {
    fn started(&self, file: File) {
        let mut state = self.state.lock();
        state.file = Some(Arc::new(file));
        state.ranges.clear();
        drop(state);
        self.changed.notify_all();
    }

    fn filled(&self, offset: u64, len: u64) {
        self.state.lock().ranges.insert(offset..offset + len);
        self.changed.notify_all();
    }
}

/// Reads as much of `buf` as the file has at `offset`.
pub fn read_full(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The bytes of `range` in a file a reader was sent to.
    pub(crate) fn bytes(file: &File, range: Range<u64>) -> Vec<u8> {
        let mut buf = vec![0u8; (range.end - range.start) as usize];
        let n = read_full(file, &mut buf, range.start).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn ranges_merge_and_cover() {
        let mut set = RangeSet::default();
        set.insert(10..20);
        set.insert(30..40);
        assert!(!set.covers(&(15..35)));
        assert_eq!(set.contiguous_end(), 0);
        set.insert(0..10);
        assert_eq!(set.contiguous_end(), 20);
        set.insert(20..30);
        assert!(set.covers(&(0..40)));
        assert_eq!((set.0.len(), set.0[0].clone()), (1, 0..40));
        set.insert(5..6);
        assert_eq!(set.0.len(), 1);
        set.insert(50..60);
        assert_eq!(set.total(), 50);
        assert!(set.covers(&(7..7)));
    }

    #[test]
    fn readers_wait_for_their_range_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 100]).unwrap();
        let stream = Arc::new(Stream::default());
        stream.started(File::open(&path).unwrap());
        stream.filled(0, 50);
        match stream.read(10..20, Duration::from_secs(1)).unwrap() {
            Ready::InFile(f) => assert_eq!(bytes(&f, 10..20), vec![7u8; 10]),
            _ => panic!("data expected"),
        }
        let waiter = {
            let stream = Arc::clone(&stream);
            std::thread::spawn(move || stream.read(60..80, Duration::from_secs(5)))
        };
        std::thread::sleep(Duration::from_millis(50));
        stream.filled(50, 50);
        assert!(
            matches!(waiter.join().unwrap(), Ok(Ready::InFile(f)) if bytes(&f, 60..80).len() == 20)
        );
    }

    #[test]
    fn far_reads_go_direct_and_failures_reach_readers() {
        let stream = Stream::default();
        assert!(matches!(
            stream.read(FAR_AHEAD..FAR_AHEAD + 10, Duration::from_secs(1)),
            Ok(Ready::FetchDirect)
        ));
        let boom = Arc::new(FetchError::ShuttingDown);
        stream.finish(Finished::Failed(Arc::clone(&boom)));
        assert!(stream.failed());
        match stream.read(0..10, Duration::from_secs(1)) {
            Err(StreamError::Failed(e)) => {
                assert!(Arc::ptr_eq(&e, &boom), "the download's own error")
            }
            _ => panic!("the failure reaches the reader"),
        }
    }

    #[test]
    fn a_reader_gives_up_at_its_limit() {
        let stream = Stream::default();
        let limit = Duration::from_millis(20);
        assert!(matches!(
            stream.read(0..10, limit),
            Err(StreamError::TimedOut(l)) if l == limit
        ));
    }

    #[test]
    fn an_unpersisted_download_serves_what_landed_and_sends_the_rest_direct() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![5u8; 100]).unwrap();
        let stream = Stream::default();
        stream.started(File::open(&path).unwrap());
        stream.filled(0, 40);
        stream.finish(Finished::Unpersisted);
        assert!(stream.failed(), "a new open tries to persist again");
        assert!(matches!(
            stream.read(0..40, Duration::from_secs(1)),
            Ok(Ready::InFile(f)) if bytes(&f, 0..40) == vec![5u8; 40]
        ));
        assert!(matches!(
            stream.read(30..50, Duration::from_secs(1)),
            Ok(Ready::FetchDirect)
        ));
    }
}
