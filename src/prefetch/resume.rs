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
    fn replay(&mut self) -> Vec<Entry> {
        let file = match self.mirror.open_state_file(&self.name) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                tracing::warn!("cannot read the listing journal {}: {e}", self.name);
                self.remove();
                return Vec::new();
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
            return Vec::new();
        }
        let (entries, good) = read_entries(file);
        // A record cut short by a crash is dropped, and later records go after the last good one.
        if let Ok(file) = self.mirror.append_state_file(&self.name)
            && file.metadata().is_ok_and(|m| m.len() > good)
            && file.set_len(good).is_err()
        {
            self.remove();
            return Vec::new();
        }
        entries
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
        self.file = None;
        self.remove();
    }
}

/// The entries of a journal up to the first damaged record, and the length of
/// the good part.
fn read_entries(mut file: impl Read) -> (Vec<Entry>, u64) {
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return (Vec::new(), 0);
    }
    let mut entries = Vec::new();
    let mut at = 0usize;
    while bytes.len() >= at + 8 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let sum = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let Some(packed) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc(packed) != sum {
            break;
        }
        let Some(entry) = zstd::stream::decode_all(packed)
            .ok()
            .and_then(|json| serde_json::from_slice::<Entry>(&json).ok())
        else {
            break;
        };
        entries.push(entry);
        at += 8 + len;
    }
    (entries, at as u64)
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
        let entries = journal.replay();
        assert_eq!(entries.len(), 2);
        assert!(matches!(entries[1], Entry::Page { id: 0, .. }));
        // The damaged tail is gone, and new records follow the good ones.
        journal.append(&page(5));
        let entries = MirrorJournal::new(Arc::clone(&mirror), "p/").replay();
        assert_eq!(entries.len(), 3);
        assert!(matches!(entries[2], Entry::Page { id: 5, .. }));
        journal.finish();
        assert!(!path.exists());
    }
}
