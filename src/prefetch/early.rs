//! Downloads that start while the listing goes on. A listed object that is
//! plainly new (nothing at its path or its renamed path, no file in the way of
//! its directories, stored under its own name, not archived) needs no plan to
//! be fetched: it replaces nothing, so the mass change guard has nothing to
//! say about it. The plan made once the listing is complete sees each of them
//! as a current copy, and moves one aside in the rare case a key listed later
//! turns its name into a directory, as it does for a copy of an earlier run.
//! Objects that come while every worker is busy are simply left to the plan,
//! so the listing never waits for downloads and memory stays bounded.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::archived::{ArchivedList, why_archived};
use super::plan::{Early, Fetched};
use crate::fetch::{FetchError, Fetcher, Outcome};
use crate::layout::{Placement, place_alone, renamed_path};
use crate::mirror::Mirror;
use crate::spool::{Sorter, Spool};
use crate::store::raw_bytes::bytes_of;
use crate::store::{ObjectMeta, StoreError};

/// Objects waiting for an early download at most: past that, the plan takes them.
const QUEUE: usize = 4096;

/// Hands listed objects to the early downloads.
pub(super) struct EarlyFetch {
    queue: Option<mpsc::Sender<ObjectMeta>>,
    worker: tokio::task::JoinHandle<Option<Spool<Fetched>>>,
}

impl EarlyFetch {
    /// Starts the downloader, `concurrency` objects at once.
    pub(super) fn start(
        fetcher: &Fetcher,
        remembered: Arc<ArchivedList>,
        concurrency: usize,
    ) -> Option<EarlyFetch> {
        let mirror = Arc::clone(fetcher.mirror());
        let scratch = match mirror.scratch_file() {
            Ok(file) => file,
            Err(e) => {
                tracing::debug!("no downloads during the listing: {e}");
                return None;
            }
        };
        let (queue, listed) = mpsc::channel(QUEUE);
        let fetcher = fetcher.clone();
        let worker = tokio::spawn(download(
            fetcher,
            remembered,
            listed,
            concurrency.max(1),
            Sorter::new(scratch),
        ));
        Some(EarlyFetch {
            queue: Some(queue),
            worker,
        })
    }

    /// A run of listed objects: queued as far as there is room (the downloader
    /// takes the plainly new ones; the rest, and what does not fit, are the
    /// plan's).
    pub(super) fn listed(&mut self, run: &[ObjectMeta]) {
        let Some(queue) = &self.queue else { return };
        for object in run {
            if queue.try_send(object.clone()).is_err() {
                return;
            }
        }
    }

    /// The listing is over: waits for the downloads under way; returns how
    /// each that S3 answered ended (`None` if that cannot be told: the plan then
    /// sees the downloaded as copies already current, and asks S3 again for the
    /// others).
    pub(super) async fn finish(mut self) -> Option<Spool<Fetched>> {
        self.queue = None;
        self.worker.await.ok().flatten()
    }
}

/// Takes objects off the queue and downloads those plainly new.
async fn download(
    fetcher: Fetcher,
    remembered: Arc<ArchivedList>,
    mut listed: mpsc::Receiver<ObjectMeta>,
    concurrency: usize,
    mut done: Sorter<Fetched>,
) -> Option<Spool<Fetched>> {
    let mirror = Arc::clone(fetcher.mirror());
    // S3 answered a listing page: the bucket is confirmed, the mirror may be claimed.
    let mut claimed = false;
    let mut running = JoinSet::new();
    let mut failed = false;
    let mut open = true;
    while open || !running.is_empty() {
        tokio::select! {
            object = listed.recv(), if open && running.len() < concurrency => {
                let Some(object) = object else {
                    open = false;
                    continue;
                };
                if why_archived(&object, &remembered).is_some() {
                    continue;
                }
                if !claimed {
                    if let Err(e) = mirror.claim() {
                        tracing::debug!("no downloads during the listing: {e}");
                        open = false;
                        listed.close();
                        continue;
                    }
                    claimed = true;
                }
                let (fetcher, mirror) = (fetcher.clone(), Arc::clone(&mirror));
                running.spawn(async move {
                    let key = object.key.as_str().to_string();
                    let look = tokio::task::spawn_blocking(move || {
                        let path = plainly_new(&mirror, &object);
                        (object, path)
                    });
                    let Ok((object, Some(rel))) = look.await else {
                        return None;
                    };
                    let fetched = fetcher
                        .ensure(&object.key, &object.etag, object.size, &rel)
                        .await;
                    let outcome = match fetched {
                        Ok(Outcome::Downloaded { .. }) => Early::Downloaded,
                        Ok(Outcome::Current) => return None,
                        Err(FetchError::Store(StoreError::Archived(e))) => {
                            tracing::info!(key = %object.key, "archived, left out: {e}");
                            Early::Archived
                        }
                        Err(FetchError::Store(e @ StoreError::NoSuchKey { .. })) => {
                            tracing::warn!(key = %object.key, "listed but no longer in S3: {e}");
                            Early::Gone
                        }
                        // S3 slows down: the plan's queue, which backs off,
                        // takes the object over.
                        Err(FetchError::Store(e)) if e.is_throttling() => return None,
                        // The mirror refused the copy: most often a key listed
                        // meanwhile took its path (`a` committed as a file
                        // where `a/b` needs a directory), which the plan sorts
                        // out by moving one aside; or the disk is full, where
                        // the plan's queue stops. Either way the plan decides.
                        Err(FetchError::Mirror(e)) => {
                            tracing::debug!(key = %object.key, "left to the plan: {e}");
                            return None;
                        }
                        Err(FetchError::ShuttingDown) => return None,
                        // S3's answer after every attempt: final for this run,
                        // so a failing object costs `--max-attempts` GETs once.
                        Err(e) => {
                            tracing::error!(key = %object.key, "failed: {e}");
                            Early::Failed(e.to_string())
                        }
                    };
                    Some((key, outcome))
                });
            }
            Some(joined) = running.join_next(), if !running.is_empty() => {
                if let Ok(Some((key, outcome))) = joined
                    && !failed
                    && done.push(Fetched { key: bytes_of(&key).into_owned(), outcome }).is_err()
                {
                    failed = true;
                }
            }
        }
    }
    if failed {
        return None;
    }
    done.finish().ok()
}

/// Where `object` goes when nothing stands in its way: its own name, with no
/// copy there or at its renamed path and no file where its directories go.
fn plainly_new(mirror: &Mirror, object: &ObjectMeta) -> Option<PathBuf> {
    let Placement::File(rel) = place_alone(object.key.as_str(), object.size) else {
        return None;
    };
    let absent =
        |p: &Path| matches!(mirror.metadata(p), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
    let dirs_clear = rel
        .ancestors()
        .skip(1)
        .filter(|a| !a.as_os_str().is_empty())
        .all(|a| absent(a) || mirror.metadata(a).is_ok_and(|m| m.is_dir()));
    let new = absent(&rel) && absent(&renamed_path(object.key.as_str()));
    (dirs_clear && new).then_some(rel)
}
