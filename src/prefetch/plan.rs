//! The plan of a prefetch, made without holding the bucket in memory: the
//! listing, the previous index and the mirror's copies are each read as a
//! stream sorted by key (spooled to scratch files in the state directory) and
//! merged, so memory stays flat from a thousand keys to a hundred million.

use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::archived::{ArchivedList, Why};
use super::{Item, KeyPath};
use crate::layout::{Placement, PrefixConflicts, RenameReason, place_alone, renamed_path};
use crate::mirror::inventory::{
    Entry, IndexEntry, SpooledEntry, SpooledIndexEntry, newest_of_each,
};
use crate::mirror::{LocalStatus, Mirror, MirrorError};
use crate::spool::{Sorter, Spool, SpoolRecord};
use crate::store::raw_bytes::bytes_of;
use crate::store::split::{Listed, ListedObjects};

/// A key's bytes, for the spool of keys renamed out of a directory's way.
#[derive(Serialize, Deserialize)]
struct KeyBytes(#[serde(with = "hex_bytes")] Vec<u8>);

impl SpoolRecord for KeyBytes {
    fn sort_key(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.0)
    }
}

/// What a download made while the listing went on found.
#[derive(Serialize, Deserialize)]
pub(super) struct Fetched {
    #[serde(with = "hex_bytes")]
    pub key: Vec<u8>,
    pub outcome: Early,
}

/// How a download made while the listing went on ended; the plan counts it,
/// and never asks for the object again in the same run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Early {
    /// In the mirror now.
    Downloaded,
    /// A GET answered that it is archived.
    Archived,
    /// S3 no longer had it.
    Gone,
    /// It failed, after all its attempts, for this reason.
    Failed(String),
}

impl SpoolRecord for Fetched {
    fn sort_key(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.key)
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        s.serialize_str(&hex)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let hex = String::deserialize(d)?;
        (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| serde::de::Error::custom("not hex"))
            })
            .collect()
    }
}

/// The keys a listing stores under renamed paths because other keys are stored
/// beneath them (`layout::place_all`'s rule), sorted.
fn prefix_conflicts(objects: &mut ListedObjects, scratch: File) -> io::Result<Spool<KeyBytes>> {
    let mut sorter = Sorter::new(scratch);
    let mut conflicts = PrefixConflicts::new();
    let mut found = Vec::new();
    for object in objects.iter()? {
        let object = object?;
        conflicts.push(object.key.as_str(), object.size, |key| found.push(key));
        for key in found.drain(..) {
            sorter.push(KeyBytes(key))?;
        }
    }
    sorter.finish()
}

/// What the last prefetches listed under `prefix`, sorted by key (of several
/// entries of one key, the newest last: see `newest_of_each`). Empty on a first run.
fn previous_index(
    mirror: &Mirror,
    prefix: &str,
    scratch: File,
) -> io::Result<Spool<SpooledIndexEntry>> {
    match mirror.view() {
        Ok(view) => view.sorted_index(prefix, scratch),
        Err(e) => {
            tracing::warn!("cannot read the previous index: {e}");
            Ok(Spool::new(scratch))
        }
    }
}

/// One object of the plan: what to do about it, as the spool keeps it.
#[derive(Serialize, Deserialize)]
pub(super) struct Planned {
    o: Listed,
    p: PathBuf,
    #[serde(default, skip_serializing_if = "is_false")]
    d: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    m: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    c: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<Why>,
    st: LocalStatus,
    /// How a download while the listing went on ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x: Option<Early>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl SpoolRecord for Planned {
    fn sort_key(&self) -> Cow<'_, [u8]> {
        self.o.sort_key()
    }
}

impl Planned {
    pub(super) fn of(item: &Item, status: LocalStatus) -> Planned {
        Planned {
            o: Listed::of(&item.meta),
            p: item.rel.clone(),
            d: item.directory,
            m: item.md5.clone(),
            c: item.changed,
            a: item.archived,
            st: status,
            x: None,
        }
    }

    /// How a download of the object while the listing went on ended, if one
    /// did and the plan has not taken it over.
    pub(super) fn early(&self) -> Option<&Early> {
        self.x.as_ref()
    }

    /// The item and the state of its copy; `None` for a record whose key is
    /// not a key (never written so).
    pub(super) fn item(self) -> Option<(Item, LocalStatus)> {
        let item = Item {
            meta: self.o.object()?,
            rel: self.p,
            directory: self.d,
            md5: self.m,
            changed: self.c,
            archived: self.a,
        };
        Some((item, self.st))
    }
}

/// The plan of a run.
pub(super) struct Plan {
    /// Every listed object, in S3's order, with the state of its copy.
    pub items: Spool<Planned>,
    /// Index entries of the last listings whose keys this one no longer has.
    pub unlisted: Spool<SpooledIndexEntry>,
    /// Copies that a download would replace with another version.
    pub replace: u64,
    /// Copies made while the listing went on: new, so not counted among the
    /// copies the mass change guard weighs the changes against.
    pub early: u64,
    pub renamed: Vec<KeyPath>,
}

/// Where each listed object goes and whether its local copy is current (local
/// syscalls only, no S3 request): the listing merged with the keys renamed out
/// of a directory's way and with the previous index.
pub(super) fn plan(
    mirror: &Mirror,
    prefix: &str,
    objects: &mut ListedObjects,
    remembered: &ArchivedList,
    early: Option<&mut Spool<Fetched>>,
) -> Result<Plan, MirrorError> {
    let scratch = || mirror.scratch_file();
    let scratch_error = &super::scratch_error(mirror);
    let mut conflicts = prefix_conflicts(objects, scratch()?).map_err(scratch_error)?;
    let mut previous = previous_index(mirror, prefix, scratch()?).map_err(scratch_error)?;
    let mut plan = Plan {
        items: Spool::new(scratch()?),
        unlisted: Spool::new(scratch()?),
        replace: 0,
        early: 0,
        renamed: Vec::new(),
    };
    let mut conflicts = conflicts.sorted().map_err(scratch_error)?.peekable();
    let mut previous = newest_of_each(previous.sorted().map_err(scratch_error)?).peekable();
    let mut early = match early {
        Some(early) => Some(early.sorted().map_err(scratch_error)?.peekable()),
        None => None,
    };
    for object in objects.iter().map_err(scratch_error)? {
        let meta = object.map_err(scratch_error)?;
        let key = bytes_of(meta.key.as_str()).into_owned();
        let mut conflict = false;
        while let Some(next) = conflicts.next_if(|c| !matches!(c, Ok(c) if c.0 > key)) {
            conflict |= next.map_err(scratch_error)?.0 == key;
        }
        let mut indexed = None;
        while let Some(next) = previous.next_if(|p| !matches!(p, Ok(p) if *p.sort_key() > *key)) {
            let entry = next.map_err(scratch_error)?;
            if *entry.sort_key() == *key {
                indexed = entry.entry();
            } else {
                plan.unlisted.append(&entry).map_err(scratch_error)?;
            }
        }
        let (item, status) = plan_one(mirror, meta, conflict, indexed.as_ref(), &mut plan.renamed);
        let (mut item, status) = mark_archived(item, status, remembered);
        let mut outcome = None;
        if let Some(early) = early.as_mut() {
            while let Some(next) = early.next_if(|f| !matches!(f, Ok(f) if f.key > key)) {
                let next = next.map_err(scratch_error)?;
                if next.key == key {
                    outcome = Some(next.outcome);
                }
            }
        }
        // What the early download found holds for the copy the plan sees: one
        // now current was that download; otherwise its answer stands, so the
        // object is not asked for again in this run.
        let outcome = match outcome {
            Some(Early::Downloaded) if status == LocalStatus::Current => {
                plan.early += 1;
                Some(Early::Downloaded)
            }
            Some(Early::Archived) if !item.directory && status != LocalStatus::Current => {
                item.archived = Some(Why::Answer);
                None
            }
            Some(other @ (Early::Gone | Early::Failed(_))) if status != LocalStatus::Current => {
                Some(other)
            }
            _ => None,
        };
        if !item.directory && item.archived.is_none() && status == LocalStatus::Changed {
            plan.replace += 1;
        }
        let mut planned = Planned::of(&item, status);
        planned.x = outcome;
        plan.items.append(&planned).map_err(scratch_error)?;
    }
    for entry in previous {
        plan.unlisted
            .append(&entry.map_err(scratch_error)?)
            .map_err(scratch_error)?;
    }
    plan.items.end_run().map_err(scratch_error)?;
    plan.unlisted.end_run().map_err(scratch_error)?;
    Ok(plan)
}

/// Marks an object a GET cannot read, unless the mirror holds it at its listed
/// version: see `archived::mark`.
fn mark_archived(
    mut item: Item,
    status: LocalStatus,
    remembered: &ArchivedList,
) -> (Item, LocalStatus) {
    if !item.directory && status != LocalStatus::Current {
        item.archived = super::archived::why_archived(&item.meta, remembered);
    }
    (item, status)
}

/// Where one object goes and how its copy compares.
fn plan_one(
    mirror: &Mirror,
    meta: crate::store::ObjectMeta,
    conflict: bool,
    indexed: Option<&IndexEntry>,
    renamed: &mut Vec<KeyPath>,
) -> (Item, LocalStatus) {
    let key = &meta.key;
    let placement = match place_alone(key.as_str(), meta.size) {
        Placement::File(_) if conflict => Placement::Renamed {
            path: renamed_path(key.as_str()),
            reason: RenameReason::PrefixConflict,
        },
        placement => placement,
    };
    let (rel, directory) = match &placement {
        Placement::Directory(p) => (p.clone(), true),
        Placement::File(p) => (mirror.resolve(key, p), false),
        Placement::Renamed { path, reason } => {
            if *reason == RenameReason::NotUtf8 {
                tracing::warn!(
                    key = %meta.key,
                    path = %path.display(),
                    "the key is not valid UTF-8: stored under a renamed path"
                );
            } else {
                tracing::debug!(key = %meta.key, %reason, "stored under a renamed path");
            }
            if *reason == RenameReason::PrefixConflict {
                // An earlier run stored the key under its own name before it became a prefix.
                mirror.move_aside(Path::new(key.as_str()), key);
            }
            (path.clone(), false)
        }
    };
    if rel != placement.path() || matches!(placement, Placement::Renamed { .. }) {
        renamed.push(KeyPath {
            key: key.as_str().to_string(),
            path: rel.to_string_lossy().into_owned(),
        });
    }
    let (status, record) = if directory {
        (LocalStatus::Missing, None)
    } else {
        super::inspect(mirror, &rel, &meta, indexed)
    };
    let md5 = record
        .filter(|_| status == LocalStatus::Current)
        .and_then(|r| r.md5);
    let item = Item {
        meta,
        rel,
        directory,
        md5,
        changed: status == LocalStatus::Changed,
        archived: None,
    };
    (item, status)
}

/// The recorded files under `prefix` whose key the listing no longer has (what
/// a prune would take out), and how many files are recorded under it.
pub(super) fn unlisted_copies(
    mirror: &Mirror,
    prefix: &str,
    objects: &mut ListedObjects,
) -> Result<(Spool<SpooledEntry>, u64), MirrorError> {
    let scratch_error = &super::scratch_error(mirror);
    let view = mirror.view()?;
    let files_under = |e: &Entry| !e.directory && e.record.key.as_str().starts_with(prefix);
    let (mut walked, _unreadable) = view
        .sorted_entries(mirror.scratch_file()?, files_under)
        .map_err(scratch_error)?;
    let copies = walked.len();
    let mut unlisted = Spool::new(mirror.scratch_file()?);
    let mut listed = objects.iter().map_err(scratch_error)?.peekable();
    // The greatest listed key passed so far: copies come in key order.
    let mut passed: Option<Vec<u8>> = None;
    for copy in walked.sorted().map_err(scratch_error)? {
        let copy = copy.map_err(scratch_error)?;
        let key = copy.sort_key().into_owned();
        while let Some(next) =
            listed.next_if(|o| !matches!(o, Ok(o) if *bytes_of(o.key.as_str()) > *key))
        {
            passed = Some(bytes_of(next.map_err(scratch_error)?.key.as_str()).into_owned());
        }
        if passed.as_deref() != Some(key.as_slice()) {
            unlisted.append(&copy).map_err(scratch_error)?;
        }
    }
    unlisted.end_run().map_err(scratch_error)?;
    Ok((unlisted, copies))
}
