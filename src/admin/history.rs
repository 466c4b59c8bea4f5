//! `s3mirrorfs history KEY`: every version the mirror holds of one key, the current
//! copy first, and the choice `restore --as-of` makes among them. Local state only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::AdminError;
use crate::layout::possible_paths;
use crate::mirror::history::{
    KeptVersion, KeyHistory, current_at, read_all_histories, read_key_history,
};
use crate::mirror::inventory::{Entry, MirrorView};
use crate::mirror::{MirrorError, Record, read_record_in};
use crate::report::human_bytes;
use crate::store::{ETag, Escaped, Key};
use crate::utc;

/// One version of a key, as `history` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct VersionView {
    /// `null` for a file the mirror had no record of.
    pub etag: Option<String>,
    pub size: u64,
    pub md5: Option<String>,
    /// S3's LastModified of the version (RFC 3339, UTC).
    pub last_modified: String,
    /// When it stopped being current; `null` for the current copy.
    pub replaced_at: Option<String>,
    /// When a prefetch found the key deleted while this version was the latest.
    pub deleted_at: Option<String>,
    pub current: bool,
    /// The file, relative to the mirror directory.
    pub path: String,
    /// A file the mirror did not write, kept because a copy took its place.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unrecorded: bool,
}

/// What `history KEY` prints; `--json` prints it as one object.
#[derive(Clone, Debug, Serialize)]
pub struct HistoryReport {
    pub key: String,
    pub versions: Vec<VersionView>,
}

/// A version of a key that a restore can upload: where its bytes are, what they
/// are, and when it was current.
#[derive(Clone, Debug)]
struct Candidate {
    entry: Entry,
    last_modified: u64,
    replaced_at: Option<u64>,
}

/// The history of `key` in the mirror at `dir`; an unknown key is an error.
pub fn run(dir: &Path, key: &str) -> Result<HistoryReport, AdminError> {
    let view = MirrorView::open(dir)?;
    let key = Key::new(key).map_err(|_| AdminError::UnknownKey(String::new()))?;
    let history =
        read_key_history(view.dir(), key.as_str()).map_err(|err| mirror_io(view.root(), err))?;
    let current = current_copy(&key, &view);
    let mut versions: Vec<VersionView> = current
        .iter()
        .map(|(entry, lm)| current_view(entry, *lm, &history))
        .collect();
    versions.extend(
        history
            .versions
            .iter()
            .rev()
            .map(|v| kept_view(&history, v)),
    );
    if versions.is_empty() {
        return Err(AdminError::UnknownKey(key.as_str().to_string()));
    }
    Ok(HistoryReport {
        key: key.as_str().to_string(),
        versions,
    })
}

fn mirror_io(root: &Path, err: std::io::Error) -> AdminError {
    AdminError::Mirror(MirrorError::Io {
        path: root.join(crate::layout::HISTORY_DIR),
        err,
    })
}

/// The current copy of `key`: at one of its possible paths, or where the index
/// says it is, with its record (from the file, or vouched for by the index when
/// the file lost its extended attributes) and its LastModified.
fn current_copy(key: &Key, view: &MirrorView) -> Option<(Entry, u64)> {
    let mut paths = possible_paths(key.as_str());
    let index = view.index().unwrap_or_default();
    if let Some(entry) = index.get(key) {
        paths.push(PathBuf::from(&entry.path));
    }
    paths.into_iter().find_map(|rel| {
        let meta = view.dir().symlink_metadata(&rel).ok()?;
        let record = match read_record_in(view.dir(), &rel) {
            Some(record) => record,
            None => index.get(key)?.vouches_for(&rel, &meta)?,
        };
        let entry = Entry {
            path: rel,
            directory: meta.is_dir(),
            record,
        };
        let last_modified = meta.modified().map(utc::unix_ms).unwrap_or(0);
        (entry.record.key == *key).then_some((entry, last_modified))
    })
}

/// The record an index entry gives a file at `rel` of `len` bytes, if it is the
/// file the entry describes.
fn current_view(entry: &Entry, last_modified: u64, history: &KeyHistory) -> VersionView {
    let record = &entry.record;
    let deleted_at = history
        .deletions
        .iter()
        .find(|d| d.at >= last_modified && d.etag.as_deref() == Some(record.etag.as_str()))
        .map(|d| utc::rfc3339_ms(d.at));
    VersionView {
        etag: Some(record.etag.as_str().to_string()),
        size: record.size,
        md5: record.expected_md5(),
        last_modified: utc::rfc3339_ms(last_modified),
        replaced_at: None,
        deleted_at,
        current: true,
        path: entry.path.to_string_lossy().into_owned(),
        unrecorded: false,
    }
}

fn kept_view(history: &KeyHistory, v: &KeptVersion) -> VersionView {
    let deleted_at = history
        .deletions
        .iter()
        .find(|d| d.at >= v.last_modified && d.at <= v.replaced_at && d.etag == v.etag)
        .map(|d| utc::rfc3339_ms(d.at));
    VersionView {
        etag: v.etag.clone(),
        size: v.size,
        md5: v.expected_md5(),
        last_modified: utc::rfc3339_ms(v.last_modified),
        replaced_at: Some(utc::rfc3339_ms(v.replaced_at)),
        deleted_at,
        current: false,
        path: history.path_of(v).to_string_lossy().into_owned(),
        unrecorded: v.unrecorded,
    }
}

impl HistoryReport {
    /// One line per version, the current copy first.
    pub fn render(&self) -> String {
        let mut out = format!("{}\n", Escaped(&self.key));
        for v in &self.versions {
            let state = match (&v.replaced_at, v.unrecorded) {
                (None, _) => "current ".to_string(),
                (Some(_), true) => "unrecorded file, kept".to_string(),
                (Some(at), false) => format!("replaced {at}"),
            };
            let deleted = v
                .deleted_at
                .as_ref()
                .map(|at| format!(", deleted from S3 {at}"))
                .unwrap_or_default();
            out.push_str(&format!(
                "  {state}  modified {}  {}  etag {}{deleted}\n    {}\n",
                v.last_modified,
                human_bytes(v.size),
                v.etag.as_deref().unwrap_or("unknown"),
                Escaped(&v.path),
            ));
        }
        out
    }
}

/// The copies that make up the bucket as it was at `at` (ms since the epoch), as
/// far as the mirror knows it: for each key under `prefix`, the version current
/// then. Files the mirror did not write are never part of it.
pub fn as_of(
    view: &MirrorView,
    entries: Vec<Entry>,
    prefix: &str,
    at: u64,
) -> Result<Vec<Entry>, AdminError> {
    let histories = read_all_histories(view.dir()).map_err(|e| mirror_io(view.root(), e))?;
    let mut by_key: HashMap<Key, (Vec<Candidate>, Vec<u64>)> = HashMap::new();
    for entry in entries
        .into_iter()
        .filter(|e| super::under(&e.record.key, prefix))
    {
        let last_modified = match entry.directory {
            true => 0,
            false => view
                .dir()
                .symlink_metadata(&entry.path)
                .and_then(|m| m.modified())
                .map(utc::unix_ms)
                .unwrap_or(0),
        };
        let candidate = Candidate {
            entry,
            last_modified,
            replaced_at: None,
        };
        let key = candidate.entry.record.key.clone();
        by_key.entry(key).or_default().0.push(candidate);
    }
    for history in &histories {
        add_history(history, prefix, &mut by_key);
    }
    let mut chosen = Vec::new();
    for (_, (candidates, deletions)) in by_key {
        let times: Vec<(u64, Option<u64>)> = candidates
            .iter()
            .map(|c| (c.last_modified, c.replaced_at))
            .collect();
        if let Some(i) = current_at(&times, &deletions, at) {
            chosen.push(candidates[i].entry.clone());
        }
    }
    chosen.sort_by(|a, b| a.record.key.cmp(&b.record.key));
    Ok(chosen)
}

/// Adds one key's kept versions (those the mirror wrote) and deletions.
fn add_history(
    history: &KeyHistory,
    prefix: &str,
    by_key: &mut HashMap<Key, (Vec<Candidate>, Vec<u64>)>,
) {
    let Some(key) = history.key().and_then(|k| Key::new(k).ok()) else {
        return;
    };
    if !super::under(&key, prefix) {
        return;
    }
    let slot = by_key.entry(key.clone()).or_default();
    slot.1.extend(history.deletions.iter().map(|d| d.at));
    for v in history.versions.iter().filter(|v| !v.unrecorded) {
        let Some(etag) = &v.etag else { continue };
        slot.0.push(Candidate {
            entry: Entry {
                path: history.path_of(v),
                record: Record {
                    key: key.clone(),
                    etag: ETag::new(etag),
                    size: v.size,
                    md5: v.md5.clone(),
                    corrupt: false,
                },
                directory: false,
            },
            last_modified: v.last_modified,
            replaced_at: Some(v.replaced_at),
        });
    }
}
