//! What unit tests share: a bucket held in memory with a mirror in a temporary
//! directory, and a runtime for the code that spawns onto one.

use std::sync::Arc;

use crate::fetch::{FetchConfig, Fetcher};
use crate::mirror::Mirror;
use crate::store::ObjectStore;
use crate::store::memory::MemoryStore;

/// A bucket `b` in memory and an empty mirror of it, removed when dropped.
pub struct Scratch {
    pub store: Arc<MemoryStore>,
    pub mirror: Arc<Mirror>,
    _dir: tempfile::TempDir,
}

impl Scratch {
    /// The bucket holding `objects`, and a mirror that holds nothing yet.
    pub fn new(objects: &[(&str, &[u8])]) -> Scratch {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(MemoryStore::new("b"));
        for (key, data) in objects {
            store.put(key, data.to_vec());
        }
        let mirror = Arc::new(Mirror::open(dir.path(), "b").unwrap());
        Scratch {
            store,
            mirror,
            _dir: dir,
        }
    }

    /// The bucket as the code sees it.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store) as Arc<dyn ObjectStore>
    }

    /// A fetcher from the bucket into the mirror.
    pub fn fetcher(&self, config: FetchConfig) -> Fetcher {
        Fetcher::new(self.store(), Arc::clone(&self.mirror), config)
    }
}

/// A multi-threaded runtime with `workers` threads and timers.
pub fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}
