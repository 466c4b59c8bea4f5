//! The inode table: one node per name the kernel has been shown, stable across
//! listings, and the by-name index that keeps it so. Each node counts the
//! kernel's lookups of it (the FUSE `nlookup` protocol): a node is dropped when
//! the kernel forgets it, so memory follows what the kernel holds, and nodes the
//! kernel never counted (plain `readdir` entries) are kept only up to a bound.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use lru::LruCache;
use parking_lot::Mutex;

use super::listing::Entry;
use super::{FileKind, FsError, Ino, ROOT_INO};
use crate::store::StorageClass;

/// What the filesystem knows of one inode.
pub struct Node {
    pub parent: Ino,
    pub kind: FileKind,
    /// The directory's key prefix (ending in `/`, or the root prefix) or the file's key.
    pub path: String,
    pub entry: Entry,
    /// Replies that gave the kernel this node, less what it forgot.
    lookups: u64,
}

/// Nodes the kernel holds no lookup of (shown by a plain `readdir` only) that
/// are kept, so a name keeps its inode number while it is being browsed.
pub const IDLE_INODES_MAX: usize = 16_384;

/// Inodes by number and by (parent, name).
pub struct InodeTable {
    inner: Mutex<Inner>,
    next: AtomicU64,
    idle_max: usize,
}

struct Inner {
    nodes: HashMap<Ino, Node>,
    by_name: HashMap<(Ino, String), Ino>,
    /// Nodes with no kernel lookup, least recently shown first.
    idle: LruCache<Ino, ()>,
}

impl Inner {
    /// Drops node `ino` and its name (unless the name now has another node).
    fn remove(&mut self, ino: Ino) {
        self.idle.pop(&ino);
        if let Some(node) = self.nodes.remove(&ino) {
            let name = (node.parent, node.entry.name);
            if self.by_name.get(&name) == Some(&ino) {
                self.by_name.remove(&name);
            }
        }
    }
}

impl InodeTable {
    /// A table holding only the root, the directory of `prefix`.
    pub fn new(prefix: &str) -> InodeTable {
        InodeTable::with_idle_max(prefix, IDLE_INODES_MAX)
    }

    /// `new`, keeping at most `idle_max` (at least 1) nodes the kernel holds no lookup of.
    pub fn with_idle_max(prefix: &str, idle_max: usize) -> InodeTable {
        let mut inner = Inner {
            nodes: HashMap::new(),
            by_name: HashMap::new(),
            idle: LruCache::unbounded(),
        };
        let root = Entry {
            name: String::new(),
            dir: true,
            size: 0,
            etag: String::new(),
            mtime_ns: 0,
            storage_class: StorageClass::Standard,
            archived: false,
        };
        inner.nodes.insert(
            ROOT_INO,
            Node {
                parent: ROOT_INO,
                kind: FileKind::Directory,
                path: prefix.to_string(),
                entry: root,
                lookups: 0,
            },
        );
        InodeTable {
            inner: Mutex::new(inner),
            next: AtomicU64::new(ROOT_INO + 1),
            idle_max: idle_max.max(1),
        }
    }

    /// How many nodes the table holds, the root included.
    pub fn len(&self) -> usize {
        self.inner.lock().nodes.len()
    }

    /// The kernel forgot `n` lookups of `ino`: once it holds none, the node is
    /// dropped (never the root). An open handle needs no node: it keeps what it
    /// opened.
    pub fn forget(&self, ino: Ino, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let mut inner = self.inner.lock();
        let Some(node) = inner.nodes.get_mut(&ino) else {
            return;
        };
        node.lookups = node.lookups.saturating_sub(n);
        if node.lookups == 0 {
            inner.remove(ino);
        }
    }

    /// Runs `f` on the node of `ino` (under the table's lock), if there is one.
    pub fn with<R>(&self, ino: Ino, f: impl FnOnce(&Node) -> R) -> Result<R, FsError> {
        let inner = self.inner.lock();
        inner.nodes.get(&ino).map(f).ok_or_else(FsError::not_found)
    }

    /// The key prefix of directory `ino`.
    pub fn dir_path(&self, ino: Ino) -> Result<String, FsError> {
        self.with(ino, |node| match node.kind {
            FileKind::Directory => Ok(node.path.clone()),
            FileKind::File => Err(FsError::not_a_directory()),
        })?
    }

    /// The node for `entry` in directory `parent` (whose prefix is `parent_path`),
    /// created or updated; a name keeps its inode while it keeps its kind. With
    /// `counted`, the reply gives the node to the kernel, which then holds one
    /// more lookup of it. `f` sees the node under the lock.
    pub fn child<R>(
        &self,
        parent: Ino,
        parent_path: &str,
        entry: &Entry,
        counted: bool,
        f: impl FnOnce(Ino, &Node) -> R,
    ) -> R {
        let (kind, path) = if entry.dir {
            (FileKind::Directory, format!("{parent_path}{}/", entry.name))
        } else {
            (FileKind::File, format!("{parent_path}{}", entry.name))
        };
        let mut inner = self.inner.lock();
        let name = (parent, entry.name.clone());
        let known = inner.by_name.get(&name).and_then(|&ino| {
            let node = inner.nodes.get(&ino).filter(|n| n.kind == kind)?;
            Some((ino, node.lookups))
        });
        let (ino, held) = match known {
            Some(known) => known,
            None => {
                let ino = self.next.fetch_add(1, Ordering::Relaxed);
                inner.by_name.insert(name, ino);
                (ino, 0)
            }
        };
        let node = Node {
            parent,
            kind,
            path,
            entry: entry.clone(),
            lookups: held + u64::from(counted),
        };
        let out = f(ino, &node);
        let idle = node.lookups == 0;
        inner.nodes.insert(ino, node);
        if idle {
            inner.idle.put(ino, ());
            while inner.idle.len() > self.idle_max {
                let Some((oldest, ())) = inner.idle.pop_lru() else {
                    break;
                };
                inner.remove(oldest);
            }
        } else {
            inner.idle.pop(&ino);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, dir: bool, size: u64) -> Entry {
        Entry {
            name: name.into(),
            dir,
            size,
            etag: "\"e\"".into(),
            mtime_ns: 0,
            storage_class: StorageClass::Standard,
            archived: false,
        }
    }

    fn child(table: &InodeTable, parent: Ino, path: &str, e: &Entry) -> Ino {
        table.child(parent, path, e, true, |ino, _| ino)
    }

    fn shown(table: &InodeTable, parent: Ino, path: &str, e: &Entry) -> Ino {
        table.child(parent, path, e, false, |ino, _| ino)
    }

    #[test]
    fn a_node_lives_while_the_kernel_holds_a_lookup_of_it() {
        let table = InodeTable::new("");
        let a = child(&table, ROOT_INO, "", &entry("a", true, 0));
        assert_eq!(child(&table, ROOT_INO, "", &entry("a", true, 0)), a);
        let f = child(&table, a, "a/", &entry("f", false, 3));
        assert_eq!(table.len(), 3);
        table.forget(a, 1);
        assert_eq!(table.dir_path(a).unwrap(), "a/", "one lookup is left");
        table.forget(a, 1);
        assert_eq!(table.dir_path(a).unwrap_err().errno(), libc::ENOENT);
        table.forget(f, 5);
        assert_eq!(table.len(), 1, "only the root is left");
        table.forget(ROOT_INO, 100);
        assert_eq!(table.dir_path(ROOT_INO).unwrap(), "");
        // A forgotten name comes back as a new inode; a forget of an unknown
        // or already forgotten inode changes nothing.
        let again = child(&table, ROOT_INO, "", &entry("a", true, 0));
        assert_ne!(again, a);
        table.forget(a, 1);
        table.forget(999, 1);
        assert_eq!(table.dir_path(again).unwrap(), "a/");
    }

    #[test]
    fn a_forgotten_node_leaves_the_name_to_its_successor() {
        let table = InodeTable::new("");
        let file = child(&table, ROOT_INO, "", &entry("x", false, 1));
        let dir = child(&table, ROOT_INO, "", &entry("x", true, 0));
        assert_ne!(file, dir);
        table.forget(file, 1);
        assert_eq!(
            child(&table, ROOT_INO, "", &entry("x", true, 0)),
            dir,
            "the name still finds the directory"
        );
    }

    #[test]
    fn nodes_the_kernel_holds_no_lookup_of_are_bounded() {
        let table = InodeTable::with_idle_max("", 3);
        let held = child(&table, ROOT_INO, "", &entry("held", false, 1));
        let idle: Vec<Ino> = (0..5)
            .map(|i| shown(&table, ROOT_INO, "", &entry(&format!("f{i}"), false, 1)))
            .collect();
        assert_eq!(
            table.len(),
            1 + 1 + 3,
            "the root, the held node, three idle"
        );
        assert!(
            table.with(idle[0], |_| ()).is_err(),
            "the oldest went first"
        );
        assert!(table.with(idle[4], |_| ()).is_ok());
        assert!(
            table.with(held, |_| ()).is_ok(),
            "a held node is never evicted"
        );
        // Shown again, a name keeps its inode; a lookup takes it off the idle list.
        assert_eq!(shown(&table, ROOT_INO, "", &entry("f2", false, 1)), idle[2]);
        assert_eq!(child(&table, ROOT_INO, "", &entry("f3", false, 1)), idle[3]);
        for i in 5..10 {
            shown(&table, ROOT_INO, "", &entry(&format!("f{i}"), false, 1));
        }
        assert!(table.with(idle[3], |_| ()).is_ok(), "looked up, so held");
        assert!(table.with(idle[2], |_| ()).is_err());
    }

    #[test]
    fn the_root_is_the_prefix_directory() {
        let table = InodeTable::new("photos/");
        assert_eq!(table.dir_path(ROOT_INO).unwrap(), "photos/");
        assert_eq!(table.with(ROOT_INO, |n| n.parent).unwrap(), ROOT_INO);
        assert_eq!(table.with(2, |_| ()).unwrap_err().errno(), libc::ENOENT);
    }

    #[test]
    fn names_keep_their_inode_while_they_keep_their_kind() {
        let table = InodeTable::new("");
        let a = child(&table, ROOT_INO, "", &entry("a", true, 0));
        let f = child(&table, a, "a/", &entry("f", false, 3));
        assert_ne!(a, f);
        assert_eq!(table.dir_path(a).unwrap(), "a/");
        assert_eq!(table.with(f, |n| n.path.clone()).unwrap(), "a/f");
        assert_eq!(table.dir_path(f).unwrap_err().errno(), libc::ENOTDIR);
        // A new listing of the same file updates it in place.
        assert_eq!(child(&table, a, "a/", &entry("f", false, 9)), f);
        assert_eq!(table.with(f, |n| n.entry.size).unwrap(), 9);
        // The same name in another directory is another inode.
        assert_ne!(child(&table, ROOT_INO, "", &entry("f", false, 3)), f);
        // A file that became a directory is another inode.
        let g = child(&table, a, "a/", &entry("f", true, 0));
        assert_ne!(g, f);
        assert_eq!(table.dir_path(g).unwrap(), "a/f/");
        assert_eq!(table.with(g, |n| n.parent).unwrap(), a);
    }
}
