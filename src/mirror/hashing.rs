//! The MD5 of local copies, and where the threads hashing them meet.
//!
//! One MD5 is serial (each 64-byte block depends on the one before), so a core
//! hashes one stream at a few hundred MiB/s; but independent streams fit side by
//! side in one core's SIMD lanes, eight or sixteen for the cost of about two. When
//! many downloads land at once (eight readers of cold files, a prefetch of large
//! objects) hashing is most of the CPU they cost. So the threads that hash at the
//! same moment meet here: the first to come leads, hashing its own bytes together
//! with those of every thread that came while it worked (they wait for it), then
//! hands the lead to the next one waiting. A thread alone hashes at once, with no
//! wait. The one home of `md5-many`.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{OnceLock, mpsc};

use md5_many::{Md5Many, Md5State};
use parking_lot::Mutex;

/// The most streams hashed in one batch: two groups of eight lanes.
const MOST: usize = 16;

/// How many bytes a thread reads and hashes in one go: enough for few system
/// calls, small enough that a mount hashing its downloads holds little for it.
const STEP: u64 = 256 << 10;

/// The MD5 of a file's contents, as lower-case hex.
pub fn md5_file(file: &File) -> io::Result<String> {
    let mut prefix = PrefixMd5::default();
    prefix.extend(file, None)?;
    Ok(prefix.finish())
}

/// The MD5 of a file's first bytes, extended as more of them become final: a
/// download in parts hashes the run of finished parts from the first byte while
/// later parts still arrive, so little is left to hash once the last one lands.
#[derive(Clone, Default)]
pub struct PrefixMd5 {
    state: Md5State,
}

impl PrefixMd5 {
    /// How many bytes are hashed.
    pub fn len(&self) -> u64 {
        self.state.bytes_hashed()
    }

    /// Whether no byte is hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hashes `file` from `len()` up to `end` (to its end if `None`); a file that
    /// ends before `end` is an error.
    pub fn extend(&mut self, file: &File, end: Option<u64>) -> io::Result<()> {
        // No bigger than what is left to hash: most objects are far smaller than a
        // step, and zeroing a step for each of them cost more than hashing them.
        let left = match end {
            Some(end) => end.saturating_sub(self.len()),
            None => file.metadata()?.len().saturating_sub(self.len()).max(1),
        };
        let mut buf = vec![0u8; left.min(STEP) as usize];
        while end.is_none_or(|end| self.len() < end) {
            let step = buf.len() as u64;
            let want = end.map_or(step, |end| (end - self.len()).min(step)) as usize;
            let n = match file.read_at(&mut buf[..want], self.len()) {
                Ok(0) if end.is_none() => break,
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let hashed = hash(Chunk {
                state: self.state,
                buf,
                len: n,
            });
            self.state = hashed.state;
            buf = hashed.buf;
        }
        Ok(())
    }

    /// The MD5 of the bytes hashed, as lower-case hex.
    pub fn finish(self) -> String {
        self.state
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

/// Bytes to hash into a stream: `buf[..len]` goes into `state`. The buffer
/// travels with them so a waiting thread gets it back to read into again.
struct Chunk {
    state: Md5State,
    buf: Vec<u8>,
    len: usize,
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// A thread waiting for the leader, and how to answer it.
struct Waiting {
    chunk: Chunk,
    answer: mpsc::SyncSender<Answer>,
}

enum Answer {
    /// The chunk, hashed.
    Hashed(Chunk),
    /// The chunk, not hashed: the lead is yours.
    Lead(Chunk),
}

struct Meeting {
    waiting: VecDeque<Waiting>,
    /// Whether a thread is leading: then the others wait.
    leading: bool,
}

static MEETING: Mutex<Meeting> = parking_lot::const_mutex(Meeting {
    waiting: VecDeque::new(),
    leading: false,
});

/// Hashes one chunk, with whatever other threads bring at the same moment.
fn hash(chunk: Chunk) -> Chunk {
    let mut meeting = MEETING.lock();
    if !meeting.leading {
        meeting.leading = true;
        drop(meeting);
        return lead(chunk);
    }
    let (answer, answered) = mpsc::sync_channel(1);
    meeting.waiting.push_back(Waiting { chunk, answer });
    drop(meeting);
    match answered.recv() {
        Ok(Answer::Hashed(chunk)) => chunk,
        Ok(Answer::Lead(chunk)) => lead(chunk),
        // Only a leader that panicked drops a waiting thread's chunk.
        Err(mpsc::RecvError) => panic!("the thread hashing this chunk panicked"),
    }
}

/// Hashes `own` and the chunks of the threads waiting, answers them, and hands
/// the lead to the next thread waiting.
fn lead(own: Chunk) -> Chunk {
    // A leader that panics gives up the lead, so later threads do not wait for
    // it forever (the chunks it held are lost with it, and their threads panic).
    struct Leading;
    impl Drop for Leading {
        fn drop(&mut self) {
            if std::thread::panicking() {
                MEETING.lock().leading = false;
            }
        }
    }
    let _leading = Leading;
    let others: Vec<Waiting> = {
        let mut meeting = MEETING.lock();
        let n = meeting.waiting.len().min(MOST - 1);
        meeting.waiting.drain(..n).collect()
    };
    let mut answers = Vec::with_capacity(others.len());
    let mut chunks = Vec::with_capacity(others.len() + 1);
    chunks.push(own);
    for waiting in others {
        chunks.push(waiting.chunk);
        answers.push(waiting.answer);
    }
    hash_together(&mut chunks);
    let mut chunks = chunks.into_iter();
    let own = chunks.next().expect("the leader's own chunk");
    for (chunk, answer) in chunks.zip(answers) {
        // A waiting thread cannot be gone: it blocks until answered.
        let _ = answer.send(Answer::Hashed(chunk));
    }
    let mut meeting = MEETING.lock();
    loop {
        let Some(next) = meeting.waiting.pop_front() else {
            meeting.leading = false;
            break;
        };
        if next.answer.send(Answer::Lead(next.chunk)).is_ok() {
            break;
        }
    }
    own
}

/// Hashes every chunk into its own state: one alone in the scalar code, several
/// side by side in SIMD lanes.
fn hash_together(chunks: &mut [Chunk]) {
    static ENGINE: OnceLock<Md5Many> = OnceLock::new();
    if let [chunk] = chunks {
        let len = chunk.len;
        chunk.state.update(&chunk.buf[..len]);
        return;
    }
    let engine = *ENGINE.get_or_init(Md5Many::new);
    // The engine is fast only for whole groups of lanes (a batch of five or six
    // streams can be slower than one), so a batch is padded with streams that
    // hash the first chunk's bytes again and are thrown away.
    let group = engine.lanes().clamp(1, 8);
    let mut done = vec![0usize; chunks.len()];
    loop {
        let open: Vec<usize> = (0..chunks.len())
            .filter(|&i| done[i] < chunks[i].len)
            .collect();
        // The same length of every open stream, in whole blocks, goes through the
        // lanes together; what is left when one stream (or less than a block of
        // each) remains is hashed one stream at a time.
        let together = open
            .iter()
            .map(|&i| chunks[i].len - done[i])
            .min()
            .map_or(0, |least| least - least % 64);
        if open.len() < 2 || together == 0 {
            for i in open {
                let from = done[i];
                let chunk = &mut chunks[i];
                let len = chunk.len;
                chunk.state.update(&chunk.buf[from..len]);
            }
            return;
        }
        let lanes = open.len().div_ceil(group) * group;
        let mut states = Vec::with_capacity(lanes);
        let mut inputs: Vec<&[u8]> = Vec::with_capacity(lanes);
        for &i in &open {
            states.push(chunks[i].state);
            inputs.push(&chunks[i].bytes()[done[i]..done[i] + together]);
        }
        let padding = inputs[0];
        states.resize(lanes, Md5State::new());
        inputs.resize(lanes, padding);
        engine.update_many(&mut states, &inputs);
        for (&i, state) in open.iter().zip(states) {
            chunks[i].state = state;
            done[i] += together;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::Digest;
    use proptest::prelude::*;

    fn reference(bytes: &[u8]) -> String {
        format!("{:x}", md5::Md5::digest(bytes))
    }

    fn bytes(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[3] ^ seed)
            .collect()
    }

    /// Hashes `data` in chunks of the given lengths (cycled) through the meeting.
    fn in_chunks(data: &[u8], lens: &[usize]) -> String {
        let mut state = Md5State::new();
        let mut at = 0;
        for &len in lens.iter().cycle() {
            if at == data.len() {
                break;
            }
            let len = len.clamp(1, data.len() - at);
            let hashed = hash(Chunk {
                state,
                buf: data[at..at + len].to_vec(),
                len,
            });
            state = hashed.state;
            at += len;
        }
        PrefixMd5 { state }.finish()
    }

    #[test]
    fn known_digests() {
        assert_eq!(PrefixMd5::default().finish(), crate::mirror::EMPTY_MD5);
        let mut chunks = vec![Chunk {
            state: Md5State::new(),
            buf: b"hello".to_vec(),
            len: 5,
        }];
        hash_together(&mut chunks);
        assert_eq!(
            PrefixMd5 {
                state: chunks[0].state
            }
            .finish(),
            "5d41402abc4b2a76b9719d911017c592"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Streams of any lengths and states, hashed side by side (padded lanes,
        /// blocks left over, partial blocks already in a state), each give the MD5
        /// of their own bytes.
        #[test]
        fn streams_hashed_together_are_each_their_own_md5(
            streams in prop::collection::vec((0usize..300, 0usize..5000, any::<u8>()), 1..=MOST),
        ) {
            let mut chunks = Vec::new();
            let mut wholes = Vec::new();
            for (i, &(before, len, seed)) in streams.iter().enumerate() {
                let whole = bytes(seed ^ i as u8, before + len);
                let mut state = Md5State::new();
                state.update(&whole[..before]);
                chunks.push(Chunk { state, buf: whole[before..].to_vec(), len });
                wholes.push(whole);
            }
            hash_together(&mut chunks);
            for (chunk, whole) in chunks.into_iter().zip(&wholes) {
                prop_assert_eq!(PrefixMd5 { state: chunk.state }.finish(), reference(whole));
            }
        }
    }

    #[test]
    fn threads_hashing_at_once_each_get_their_own_md5() {
        // More threads than one batch holds, with chunk lengths that are not whole
        // blocks, so batches are padded, left-over bytes are hashed alone, and the
        // lead passes from thread to thread.
        let threads: Vec<_> = (0..MOST as u8 + 5)
            .map(|t| {
                std::thread::spawn(move || {
                    let data = bytes(t, 300_000 + 4099 * t as usize);
                    let lens = [65_536, 1000 + t as usize, 64, 7, 200_000];
                    for _ in 0..3 {
                        assert_eq!(in_chunks(&data, &lens), reference(&data), "thread {t}");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
    }
}
