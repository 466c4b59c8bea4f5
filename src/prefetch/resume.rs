//! Where a prefetch keeps its listing's progress: a journal in the state
//! directory (`.s3mirrorfs/listing/<hash of the prefix>.journal`), one
//! compressed record per page, so a run stopped half way (kill -9, a reboot, a
//! listing that gave up) lists only what it had not listed yet. A finished
//! listing removes its journal; one older than `MAX_AGE` is not trusted and
//! starts over.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::mirror::Mirror;
use crate::store::split::{Entry, Journal};

/// How old a listing's journal may be and still be gone on with: past that the
/// keys it holds are too stale to mix with a new listing.
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// The state file of the listing of `prefix`.
pub fn journal_name(prefix: &str) -> String {
    let hash = Sha256::digest(prefix.as_bytes());
    let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("listing/{hex}.journal")
}

/// A listing's journal in a mirror's state directory.
pub struct MirrorJournal {
    mirror: Arc<Mirror>,
    name: String,
    file: Option<std::fs::File>,
    /// Set once an append failed: the rest of this listing is not recorded.
    broken: bool,
}

impl MirrorJournal {
    pub fn new(mirror: Arc<Mirror>, prefix: &str) -> MirrorJournal {
        MirrorJournal {
            mirror,
            name: journal_name(prefix),
            file: None,
            broken: false,
        }
    }

    fn remove(&self) {
        if let Err(e) = self.mirror.remove_state_file(&self.name)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove the listing journal {}: {e}", self.name);
        }
    }
}

impl Journal for MirrorJournal {
    fn replay(&mut self) -> Box<dyn Iterator<Item = Entry> + '_> {
        let file = match self.mirror.open_state_file(&self.name) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Box::new(std::iter::empty()),
            Err(e) => {
                tracing::warn!("cannot read the listing journal {}: {e}", self.name);
                self.remove();
                return Box::new(std::iter::empty());
            }
        };
        let age = file
            .metadata()
            .and_then(|m| m.created().or_else(|_| m.modified()))
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok());
        if age.is_none_or(|age| age > MAX_AGE) {
            tracing::info!("an earlier listing's journal is too old to go on with; listing anew");
            self.remove();
            return Box::new(std::iter::empty());
        }
        Box::new(Replay {
            journal: self,
            reader: io::BufReader::new(file),
            good: 0,
            done: false,
        })
    }

    fn append(&mut self, entry: &Entry) {
        if self.broken {
            return;
        }
        let result = (|| -> io::Result<()> {
            if self.file.is_none() {
                let file = self
                    .mirror
                    .append_state_file(&self.name)
                    .map_err(|e| io::Error::other(e.to_string()))?;
                self.file = Some(file);
            }
            let json = serde_json::to_vec(entry).map_err(io::Error::other)?;
            let packed = zstd::bulk::compress(&json, 1)?;
            let mut frame = Vec::with_capacity(packed.len() + 8);
            frame.extend_from_slice(&(packed.len() as u32).to_le_bytes());
            frame.extend_from_slice(&crc(&packed).to_le_bytes());
            frame.extend_from_slice(&packed);
            self.file.as_mut().expect("opened above").write_all(&frame)
        })();
        if let Err(e) = result {
            tracing::warn!(
                "cannot record the listing's progress ({}): a stopped run will list again from the start: {e}",
                self.name
            );
            self.broken = true;
        }
    }

    fn finish(&mut self) {
        self.discard();
    }

    fn discard(&mut self) {
        self.file = None;
        self.remove();
    }
}

/// A journal's entries read one at a time, up to the first damaged record;
/// at the end the damaged tail (a record cut short by a crash) is cut off, so
/// that later records go after the last good one.
struct Replay<'a> {
    journal: &'a mut MirrorJournal,
    reader: io::BufReader<std::fs::File>,
    /// The length of the good records read so far.
    good: u64,
    done: bool,
}

impl Replay<'_> {
    fn next_entry(&mut self) -> Option<Entry> {
        let mut head = [0u8; 8];
        self.reader.read_exact(&mut head).ok()?;
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let sum = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        let mut packed = vec![0; len];
        self.reader.read_exact(&mut packed).ok()?;
        if crc(&packed) != sum {
            return None;
        }
        let entry = zstd::stream::decode_all(packed.as_slice())
            .ok()
            .and_then(|json| serde_json::from_slice::<Entry>(&json).ok())?;
        self.good += 8 + len as u64;
        Some(entry)
    }

    fn cut_damaged_tail(&mut self) {
        let journal = &mut *self.journal;
        if let Ok(file) = journal.mirror.append_state_file(&journal.name)
            && file.metadata().is_ok_and(|m| m.len() > self.good)
            && file.set_len(self.good).is_err()
        {
            journal.remove();
        }
    }
}

impl Iterator for Replay<'_> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        if self.done {
            return None;
        }
        let entry = self.next_entry();
        if entry.is_none() {
            self.done = true;
            self.cut_damaged_tail();
        }
        entry
    }
}

/// A checksum of a record (FNV-1a): enough to tell a record cut short or
/// never fully written from a whole one.
fn crc(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::split::Part;

    fn page(id: u64) -> Entry {
        Entry::Page {
            id,
            part: None,
            first_child: 1,
            children: Vec::new(),
            runs: Vec::new(),
        }
    }

    #[test]
    fn a_record_cut_short_ends_the_replay() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Arc::new(Mirror::open(&dir.path().join("m"), "b").unwrap());
        let mut journal = MirrorJournal::new(Arc::clone(&mirror), "p/");
        let first = Part::Dir {
            prefix: "p/".into(),
        };
        journal.append(&Entry::Start {
            prefix: "p/".into(),
            first,
        });
        journal.append(&page(0));
        journal.append(&page(3));
        drop(journal);
        let path = dir.path().join("m/.s3mirrorfs").join(journal_name("p/"));
        let len = std::fs::metadata(&path).unwrap().len();
        // A crash in the middle of the last record.
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 3).unwrap();
        let mut journal = MirrorJournal::new(Arc::clone(&mirror), "p/");
        let entries: Vec<Entry> = journal.replay().collect();
        assert_eq!(entries.len(), 2);
        assert!(matches!(entries[1], Entry::Page { id: 0, .. }));
        // The damaged tail is gone, and new records follow the good ones.
        journal.append(&page(5));
        let entries: Vec<Entry> = MirrorJournal::new(Arc::clone(&mirror), "p/")
            .replay()
            .collect();
        assert_eq!(entries.len(), 3);
        assert!(matches!(entries[2], Entry::Page { id: 5, .. }));
        journal.finish();
        assert!(!path.exists());
    }
}
