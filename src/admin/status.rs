//! `s3mirrorfs status`: what the mirror holds, how the last prefetch ended, who holds
//! the lock. Local state only: no S3 client is built, whatever the environment says.

use std::path::Path;

use serde::Serialize;

use super::AdminError;
use crate::mirror::inventory::MirrorView;
use crate::prefetch::{LAST_PREFETCH_FILE, LastPrefetch};
use crate::report::human_bytes;
use crate::sys::beneath::Dir;

/// What `status` reports; `--json` prints it as one object.
#[derive(Clone, Debug, Serialize)]
pub struct StatusReport {
    pub mirror: String,
    /// The bucket the mirror belongs to, if it has been used for one.
    pub bucket: Option<String>,
    /// The endpoint it is mirrored from ("" for AWS), if recorded.
    pub endpoint: Option<String>,
    /// The account id of the bucket's owner, if known.
    pub owner: Option<String>,
    /// Mirrored objects (files and directory markers).
    pub objects: u64,
    /// Bytes of those objects, as recorded.
    pub bytes: u64,
    /// Of `objects`, the zero-byte `dir/` markers kept as directories.
    pub markers: u64,
    /// Keys kept under `.s3mirrorfs/renamed/` instead of their own path.
    pub renamed: u64,
    /// Copies `verify` found corrupt that no prefetch has replaced yet.
    pub marked_corrupt: u64,
    /// Directories of the mirror that could not be read (their copies are not counted).
    pub unreadable: Vec<String>,
    pub last_prefetch: Option<LastPrefetch>,
    /// What `.s3mirrorfs/history/` keeps of replaced and pruned copies.
    pub history: HistorySummary,
    /// Who holds the run lock now, if anyone.
    pub locked_by: Option<String>,
}

/// The versions kept in history.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HistorySummary {
    pub versions: u64,
    pub bytes: u64,
    /// When the oldest of them was replaced (RFC 3339); `null` with none.
    pub oldest_replaced_at: Option<String>,
    /// Keys found deleted from S3 whose deletion is recorded.
    pub deletions: u64,
}

fn history_summary(root: &Dir) -> HistorySummary {
    let histories = match crate::mirror::history::read_all_histories(root) {
        Ok(histories) => histories,
        Err(e) => {
            tracing::warn!("cannot read the history: {e}");
            return HistorySummary::default();
        }
    };
    let versions = histories.iter().flat_map(|h| &h.versions);
    HistorySummary {
        versions: versions.clone().count() as u64,
        bytes: versions.clone().map(|v| v.size).sum(),
        oldest_replaced_at: versions
            .map(|v| v.replaced_at)
            .min()
            .map(crate::utc::rfc3339_ms),
        deletions: histories.iter().map(|h| h.deletions.len() as u64).sum(),
    }
}

/// What `status` counts of the recorded copies, one at a time (a mirror of
/// millions costs no memory).
#[derive(Default)]
struct Counts {
    objects: u64,
    bytes: u64,
    markers: u64,
    renamed: u64,
    marked_corrupt: u64,
}

impl Counts {
    fn add(&mut self, entry: &crate::mirror::inventory::Entry) {
        self.objects += 1;
        self.bytes += entry.record.size;
        self.markers += u64::from(entry.directory);
        self.renamed += u64::from(entry.is_renamed());
        self.marked_corrupt += u64::from(entry.is_marked_corrupt());
    }
}

/// Reads the mirror at `dir` without changing it.
pub fn run(dir: &Path) -> Result<StatusReport, AdminError> {
    let view = MirrorView::open(dir)?;
    let mut counts = Counts::default();
    let errors = view.each_entry(|entry| counts.add(&entry));
    let last_prefetch = match view.read_state_file(LAST_PREFETCH_FILE)? {
        None => None,
        Some(bytes) => match serde_json::from_slice(&bytes) {
            Ok(last) => Some(last),
            Err(e) => {
                tracing::warn!("ignoring an unreadable {LAST_PREFETCH_FILE}: {e}");
                None
            }
        },
    };
    let identity = view.identity.clone();
    Ok(StatusReport {
        mirror: dir.display().to_string(),
        bucket: identity.as_ref().map(|i| i.bucket.clone()),
        endpoint: identity.as_ref().and_then(|i| i.endpoint.clone()),
        owner: identity.and_then(|i| i.owner),
        objects: counts.objects,
        bytes: counts.bytes,
        markers: counts.markers,
        renamed: counts.renamed,
        marked_corrupt: counts.marked_corrupt,
        unreadable: errors
            .iter()
            .map(|e| format!("{}: {}", e.path.display(), e.err))
            .collect(),
        last_prefetch,
        history: history_summary(view.dir()),
        locked_by: view.locked_by()?,
    })
}

impl StatusReport {
    /// Where the mirror's bucket is reached, and whose it is.
    fn source(&self) -> String {
        let endpoint = match self.endpoint.as_deref() {
            None => "endpoint not recorded yet",
            Some("") => "AWS",
            Some(url) => url,
        };
        match &self.owner {
            Some(owner) => format!("{endpoint}, bucket owner {owner}"),
            None => format!("{endpoint}, bucket owner not known"),
        }
    }

    /// The report for a person, one fact a line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let bucket = self
            .bucket
            .as_deref()
            .map_or("no bucket yet".to_string(), |b| format!("bucket {b}"));
        out.push_str(&format!("mirror:         {} ({bucket})\n", self.mirror));
        if self.bucket.is_some() {
            out.push_str(&format!("source:         {}\n", self.source()));
        }
        out.push_str(&format!(
            "objects:        {} ({}), {} of them directory markers\n",
            self.objects,
            human_bytes(self.bytes),
            self.markers
        ));
        out.push_str(&format!("renamed keys:   {}\n", self.renamed));
        if self.marked_corrupt > 0 {
            out.push_str(&format!(
                "corrupt copies: {} (found by verify; the next prefetch fetches them again)\n",
                self.marked_corrupt
            ));
        }
        for dir in &self.unreadable {
            out.push_str(&format!("unreadable:     {dir}\n"));
        }
        match &self.last_prefetch {
            None => out.push_str("last prefetch:  never\n"),
            Some(p) => {
                out.push_str(&format!(
                    "last prefetch:  {} at {} of s3://{}/{} (listed {}, downloaded {}, up to date {}, failed {}, archived {}, pruned {})\n",
                    p.outcome, p.time, p.bucket, p.prefix, p.listed, p.downloaded, p.up_to_date, p.failed, p.archived, p.pruned
                ));
                if p.archived > 0 {
                    out.push_str(&format!(
                        "archived:       {} objects left out: archived in S3 and not in the mirror (prefetch --restore-archived DAYS fetches them)\n",
                        p.archived
                    ));
                }
                if let Some(error) = &p.error {
                    out.push_str(&format!("                {error}\n"));
                }
                const SHOWN: usize = 5;
                for f in p.failures.iter().take(SHOWN) {
                    let key = crate::store::Escaped(&f.key);
                    out.push_str(&format!("  failed:       {key}: {}\n", f.error));
                }
                if p.failures.len() > SHOWN {
                    out.push_str(&format!(
                        "  failed:       and {} more (status --json lists them)\n",
                        p.failures.len() - SHOWN
                    ));
                }
            }
        }
        let h = &self.history;
        match &h.oldest_replaced_at {
            None => out.push_str("history:        no versions kept\n"),
            Some(oldest) => out.push_str(&format!(
                "history:        {} versions ({}), the oldest replaced {oldest}\n",
                h.versions,
                human_bytes(h.bytes)
            )),
        }
        match &self.locked_by {
            None => out.push_str("lock:           free\n"),
            Some(holder) => out.push_str(&format!("lock:           held by {holder}\n")),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_prefetch_shows_its_archived_objects_and_old_files_still_read() {
        // As a version without archived objects wrote it.
        let old = r#"{"time":"2026-12-03T03:00:41Z","time_unix":1796266841,"outcome":"success",
            "bucket":"b","prefix":"","listed":3,"downloaded":3,"up_to_date":0,"failed":0,
            "pruned":0,"renamed":0,"bytes":10,"seconds":0.5}"#;
        let mut last: LastPrefetch = serde_json::from_str(old).unwrap();
        assert_eq!(last.archived, 0);
        last.archived = 2;
        let report = StatusReport {
            mirror: "/m".into(),
            bucket: Some("b".into()),
            endpoint: Some(String::new()),
            owner: None,
            objects: 3,
            bytes: 10,
            markers: 0,
            renamed: 0,
            marked_corrupt: 0,
            unreadable: Vec::new(),
            last_prefetch: Some(last),
            history: HistorySummary::default(),
            locked_by: None,
        };
        let text = report.render();
        assert!(text.contains("failed 0, archived 2, pruned 0"), "{text}");
        assert!(
            text.contains("archived:       2 objects left out"),
            "{text}"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["last_prefetch"]["archived"], 2);
    }
}
