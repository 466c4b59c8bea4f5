//! Records kept on disk instead of in memory, for the work whose size grows with
//! the bucket (a listing of 100 million keys, the plan of a prefetch, a walk of
//! the mirror): written once as runs of checksummed, compressed frames in a
//! scratch file, read back frame by frame.
//!
//! A run is a sequence of records in the order of their `sort_key`. Read back
//! with `sorted`, the runs merge into one ordered stream: runs that do not
//! overlap (the pages of a listing) are read one after the other, with one
//! frame in memory; runs that do (chunks of an unsorted input, sorted one by
//! one) are merged, with one frame of each in memory.

use std::borrow::Cow;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};
use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::os::unix::fs::FileExt;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Records in one frame: what a reader holds of a run at a time.
const FRAME_RECORDS: usize = 512;
/// Records sorted in memory at once by a `Sorter` before they go to disk.
pub const CHUNK_RECORDS: usize = 64 * 1024;

/// What a spool holds.
pub trait SpoolRecord: Serialize + DeserializeOwned {
    /// The order of records in a run and of the merged stream (bytewise).
    fn sort_key(&self) -> Cow<'_, [u8]>;
}

/// A frame of a run: where it is in the file and how many records it holds.
#[derive(Clone, Copy)]
struct Frame {
    offset: u64,
    len: u32,
}

struct Run {
    frames: Vec<Frame>,
    /// The sort key of its first record.
    first: Vec<u8>,
    /// The sort key of its last record.
    last: Vec<u8>,
}

/// Records on disk, in runs.
pub struct Spool<T> {
    file: File,
    end: u64,
    runs: Vec<Run>,
    /// The records of the frame being filled, encoded, and how many.
    pending: Vec<u8>,
    pending_records: usize,
    /// Whether a run is open (records appended since the last `end_run`).
    open: bool,
    records: u64,
    _records: PhantomData<fn() -> T>,
}

impl<T: SpoolRecord> Spool<T> {
    /// A spool in `file`, an empty scratch file nobody else writes (best
    /// unlinked already, so that it goes away with the process).
    pub fn new(file: File) -> Spool<T> {
        Spool {
            file,
            end: 0,
            runs: Vec::new(),
            pending: Vec::new(),
            pending_records: 0,
            open: false,
            records: 0,
            _records: PhantomData,
        }
    }

    /// Records written.
    pub fn len(&self) -> u64 {
        self.records
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Appends a record to the open run (opening one if needed). A run's
    /// records must come in order: one out of order is an error, not a silent
    /// misorder.
    pub fn append(&mut self, record: &T) -> io::Result<()> {
        let key = record.sort_key();
        if !self.open {
            self.runs.push(Run {
                frames: Vec::new(),
                first: key.to_vec(),
                last: key.to_vec(),
            });
            self.open = true;
        } else {
            let run = self.runs.last_mut().expect("a run is open");
            if key.as_ref() < run.last.as_slice() {
                return Err(io::Error::other("a spool run's records came out of order"));
            }
            run.last.clear();
            run.last.extend_from_slice(&key);
        }
        drop(key);
        serde_json::to_writer(&mut self.pending, record).map_err(io::Error::other)?;
        self.pending.push(b'\n');
        self.pending_records += 1;
        self.records += 1;
        if self.pending_records >= FRAME_RECORDS {
            self.flush_frame()?;
        }
        Ok(())
    }

    /// Ends the open run: the next record starts another.
    pub fn end_run(&mut self) -> io::Result<()> {
        self.flush_frame()?;
        self.open = false;
        Ok(())
    }

    /// Appends `records` as a run of their own, sorted first.
    pub fn append_unsorted_run(&mut self, mut records: Vec<T>) -> io::Result<()> {
        records.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        self.end_run()?;
        for record in &records {
            self.append(record)?;
        }
        self.end_run()
    }

    fn flush_frame(&mut self) -> io::Result<()> {
        if self.pending_records == 0 {
            return Ok(());
        }
        let packed = zstd::bulk::compress(&self.pending, 1)?;
        let mut frame = Vec::with_capacity(packed.len() + 8);
        frame.extend_from_slice(&(packed.len() as u32).to_le_bytes());
        frame.extend_from_slice(&checksum(&packed).to_le_bytes());
        frame.extend_from_slice(&packed);
        self.file.write_all_at(&frame, self.end)?;
        self.runs
            .last_mut()
            .expect("a frame belongs to a run")
            .frames
            .push(Frame {
                offset: self.end,
                len: frame.len() as u32,
            });
        self.end += frame.len() as u64;
        self.pending.clear();
        self.pending_records = 0;
        Ok(())
    }

    /// Ends the open run and reads every record back in the order of their
    /// sort keys (records of equal keys in the order they were written).
    pub fn sorted(&mut self) -> io::Result<Sorted<'_, T>> {
        self.end_run()?;
        let mut order: Vec<usize> = (0..self.runs.len()).collect();
        order.sort_by(|a, b| self.runs[*a].first.cmp(&self.runs[*b].first).then(a.cmp(b)));
        Ok(Sorted {
            spool: self,
            order,
            next_run: 0,
            cursors: Vec::new(),
            heap: BinaryHeap::new(),
            failed: None,
        })
    }

    /// Reads one frame's records.
    fn read_frame(&self, frame: Frame) -> io::Result<VecDeque<T>> {
        let mut bytes = vec![0; frame.len as usize];
        self.file.read_exact_at(&mut bytes, frame.offset)?;
        let damaged = || io::Error::new(io::ErrorKind::InvalidData, "a spool frame is damaged");
        if bytes.len() < 8 {
            return Err(damaged());
        }
        let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
        let sum = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
        let packed = &bytes[8..];
        if packed.len() != len || checksum(packed) != sum {
            return Err(damaged());
        }
        let lines = zstd::stream::decode_all(packed)?;
        lines
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| serde_json::from_slice(line).map_err(|_| damaged()))
            .collect()
    }
}

/// A run being read: its frames left, and the records of the current one.
struct Cursor<T> {
    run: usize,
    next_frame: usize,
    records: VecDeque<T>,
}

/// The records of a spool in sort-key order.
pub struct Sorted<'a, T> {
    spool: &'a Spool<T>,
    /// Runs by their first key, and how many of them are open.
    order: Vec<usize>,
    next_run: usize,
    cursors: Vec<Cursor<T>>,
    /// The open runs by the key of their next record, then by when they were
    /// written (`Reverse`: the smallest first).
    heap: BinaryHeap<Reverse<Head>>,
    /// A frame that could not be read, reported after the record before it.
    failed: Option<io::Error>,
}

#[derive(PartialEq, Eq)]
struct Head {
    key: Vec<u8>,
    run: usize,
    cursor: usize,
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.cmp(&other.key).then(self.run.cmp(&other.run))
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T: SpoolRecord> Sorted<'_, T> {
    /// Loads the next frame of cursor `c` if its current one is used up, and
    /// puts its next record in the heap.
    fn advance(&mut self, c: usize) -> io::Result<()> {
        let cursor = &mut self.cursors[c];
        if cursor.records.is_empty() {
            let frames = &self.spool.runs[cursor.run].frames;
            let Some(frame) = frames.get(cursor.next_frame) else {
                return Ok(());
            };
            cursor.next_frame += 1;
            cursor.records = self.spool.read_frame(*frame)?;
        }
        if let Some(next) = cursor.records.front() {
            self.heap.push(Reverse(Head {
                key: next.sort_key().into_owned(),
                run: cursor.run,
                cursor: c,
            }));
        }
        Ok(())
    }

    fn next_record(&mut self) -> io::Result<Option<T>> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        // Open every run that starts at or before the smallest key in sight: runs
        // that do not overlap are opened one at a time.
        while let Some(&run) = self.order.get(self.next_run) {
            let first = &self.spool.runs[run].first;
            if let Some(Reverse(head)) = self.heap.peek()
                && head.key.as_slice() < first.as_slice()
            {
                break;
            }
            self.next_run += 1;
            // A used-up cursor's place is taken again, so at most as many as overlap.
            let slot = Cursor {
                run,
                next_frame: 0,
                records: VecDeque::new(),
            };
            let c = match self.cursors.iter().position(|c| {
                c.records.is_empty() && c.next_frame >= self.spool.runs[c.run].frames.len()
            }) {
                Some(c) => {
                    self.cursors[c] = slot;
                    c
                }
                None => {
                    self.cursors.push(slot);
                    self.cursors.len() - 1
                }
            };
            self.advance(c)?;
        }
        let Some(Reverse(head)) = self.heap.pop() else {
            return Ok(None);
        };
        let record = self.cursors[head.cursor]
            .records
            .pop_front()
            .expect("a head has its record");
        // The record is good whatever the next frame holds: the error comes next.
        if let Err(e) = self.advance(head.cursor) {
            self.failed = Some(e);
        }
        Ok(Some(record))
    }
}

impl<T: SpoolRecord> Iterator for Sorted<'_, T> {
    type Item = io::Result<T>;

    fn next(&mut self) -> Option<io::Result<T>> {
        match self.next_record() {
            Ok(Some(record)) => Some(Ok(record)),
            Ok(None) => None,
            Err(e) => {
                // Nothing more after an error: a reader must not go on past a gap.
                self.order.clear();
                self.heap.clear();
                Some(Err(e))
            }
        }
    }
}

/// Collects records in any order and spools them as sorted chunks.
pub struct Sorter<T> {
    spool: Spool<T>,
    chunk: Vec<T>,
    chunk_records: usize,
}

impl<T: SpoolRecord> Sorter<T> {
    pub fn new(file: File) -> Sorter<T> {
        Sorter::with_chunk(file, CHUNK_RECORDS)
    }

    pub fn with_chunk(file: File, chunk_records: usize) -> Sorter<T> {
        Sorter {
            spool: Spool::new(file),
            chunk: Vec::new(),
            chunk_records: chunk_records.max(1),
        }
    }

    pub fn push(&mut self, record: T) -> io::Result<()> {
        self.chunk.push(record);
        if self.chunk.len() >= self.chunk_records {
            let chunk = std::mem::take(&mut self.chunk);
            self.spool.append_unsorted_run(chunk)?;
        }
        Ok(())
    }

    /// The spool of every record pushed, to be read with `sorted`.
    pub fn finish(mut self) -> io::Result<Spool<T>> {
        let chunk = std::mem::take(&mut self.chunk);
        if !chunk.is_empty() {
            self.spool.append_unsorted_run(chunk)?;
        }
        Ok(self.spool)
    }
}

/// FNV-1a: enough to tell a frame that was damaged or cut short from a whole one.
fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Rec {
        k: String,
        n: u32,
    }

    impl SpoolRecord for Rec {
        fn sort_key(&self) -> Cow<'_, [u8]> {
            Cow::Borrowed(self.k.as_bytes())
        }
    }

    fn rec(k: &str, n: u32) -> Rec {
        Rec { k: k.into(), n }
    }

    fn read(spool: &mut Spool<Rec>) -> Vec<Rec> {
        spool.sorted().unwrap().map(Result::unwrap).collect()
    }

    #[test]
    fn runs_that_do_not_overlap_are_read_in_key_order_one_at_a_time() {
        let mut spool = Spool::new(tempfile::tempfile().unwrap());
        // Pages of a listing arrive in any order; each is sorted.
        for page in [["m", "n"], ["a", "b"], ["x", "y"]] {
            for k in page {
                spool.append(&rec(k, 0)).unwrap();
            }
            spool.end_run().unwrap();
        }
        let mut sorted = spool.sorted().unwrap();
        let keys: Vec<String> = sorted.by_ref().map(|r| r.unwrap().k).collect();
        assert_eq!(keys, ["a", "b", "m", "n", "x", "y"]);
        assert_eq!(sorted.cursors.len(), 1, "one run open at a time");
    }

    #[test]
    fn a_run_out_of_order_is_refused() {
        let mut spool = Spool::new(tempfile::tempfile().unwrap());
        spool.append(&rec("b", 0)).unwrap();
        assert!(spool.append(&rec("a", 0)).is_err());
    }

    #[test]
    fn a_damaged_frame_is_an_error_and_ends_the_stream() {
        let file = tempfile::tempfile().unwrap();
        let mut spool = Spool::new(file.try_clone().unwrap());
        for n in 0..(FRAME_RECORDS as u32 * 2) {
            spool.append(&rec(&format!("{n:06}"), n)).unwrap();
        }
        spool.end_run().unwrap();
        let second = spool.runs[0].frames[1].offset;
        file.write_all_at(b"junk", second + 20).unwrap();
        let results: Vec<io::Result<Rec>> = spool.sorted().unwrap().collect();
        assert_eq!(results.len(), FRAME_RECORDS + 1);
        assert!(results[..FRAME_RECORDS].iter().all(Result::is_ok));
        assert!(results[FRAME_RECORDS].is_err());
    }

    #[test]
    fn runs_of_many_frames_that_overlap_merge_in_order() {
        // Chunks bigger than a frame, of keys spread over the whole range.
        let mut sorter = Sorter::with_chunk(tempfile::tempfile().unwrap(), FRAME_RECORDS * 2 + 7);
        let n = FRAME_RECORDS as u32 * 9;
        for i in 0..n {
            let k = (i * 7919) % n;
            sorter.push(rec(&format!("{k:08}"), i)).unwrap();
        }
        let mut spool = sorter.finish().unwrap();
        assert!(spool.runs.len() > 3 && spool.runs[0].frames.len() > 2);
        let keys: Vec<String> = read(&mut spool).into_iter().map(|r| r.k).collect();
        let expected: Vec<String> = (0..n).map(|k| format!("{k:08}")).collect();
        assert_eq!(keys, expected);
    }

    proptest! {
        #[test]
        fn a_sorter_gives_every_record_once_in_order(
            keys in proptest::collection::vec("[a-c]{0,4}", 0..400),
            chunk in 1usize..50,
        ) {
            let mut sorter = Sorter::with_chunk(tempfile::tempfile().unwrap(), chunk);
            for (n, k) in keys.iter().enumerate() {
                sorter.push(rec(k, n as u32)).unwrap();
            }
            let mut spool = sorter.finish().unwrap();
            prop_assert_eq!(spool.len(), keys.len() as u64);
            let got = read(&mut spool);
            let mut expected: Vec<Rec> =
                keys.iter().enumerate().map(|(n, k)| rec(k, n as u32)).collect();
            // Stable: equal keys keep the order they were pushed in.
            expected.sort_by(|a, b| a.k.cmp(&b.k));
            prop_assert_eq!(got, expected);
        }
    }
}
