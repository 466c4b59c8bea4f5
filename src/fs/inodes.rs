//! The inode table: one node per name the kernel has been shown, stable across
//! listings, and the by-name index that keeps it so.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

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
}

/// Inodes by number and by (parent, name).
pub struct InodeTable {
    inner: Mutex<Inner>,
    next: AtomicU64,
}

#[derive(Default)]
struct Inner {
    nodes: HashMap<Ino, Node>,
    by_name: HashMap<(Ino, String), Ino>,
}

impl InodeTable {
    /// A table holding only the root, the directory of `prefix`.
    pub fn new(prefix: &str) -> InodeTable {
        let mut inner = Inner::default();
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
            },
        );
        InodeTable {
            inner: Mutex::new(inner),
            next: AtomicU64::new(ROOT_INO + 1),
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
    /// created or updated; a name keeps its inode while it keeps its kind. `f` sees
    /// the node under the lock.
    pub fn child<R>(
        &self,
        parent: Ino,
        parent_path: &str,
        entry: &Entry,
        f: impl FnOnce(Ino, &Node) -> R,
    ) -> R {
        let (kind, path) = if entry.dir {
            (FileKind::Directory, format!("{parent_path}{}/", entry.name))
        } else {
            (FileKind::File, format!("{parent_path}{}", entry.name))
        };
        let mut inner = self.inner.lock();
        let name = (parent, entry.name.clone());
        let ino = match inner.by_name.get(&name) {
            Some(&ino) if inner.nodes.get(&ino).is_some_and(|n| n.kind == kind) => ino,
            _ => {
                let ino = self.next.fetch_add(1, Ordering::Relaxed);
                inner.by_name.insert(name, ino);
                ino
            }
        };
        let node = Node {
            parent,
            kind,
            path,
            entry: entry.clone(),
        };
        let out = f(ino, &node);
        inner.nodes.insert(ino, node);
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
        table.child(parent, path, e, |ino, _| ino)
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
