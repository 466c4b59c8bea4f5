//! The inode table: one node per name the kernel has been shown, stable across
//! listings, and the by-name index that keeps it so. Each node counts the
//! kernel's lookups of it (the FUSE `nlookup` protocol): a node is dropped when
//! the kernel forgets it, so memory follows what the kernel holds, and nodes the
//! kernel never counted (plain `readdir` entries) are kept only up to a bound.
//! The kernel would hold every name a walk showed it until memory runs short:
//! beyond a bound, the names it was given first are picked for it to let go.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use lru::LruCache;
use parking_lot::Mutex;

use super::listing::Entry;
use super::{FileKind, FsError, Ino, ROOT_INO};

/// What the filesystem knows of one inode. Kept small: the kernel may hold
/// hundreds of thousands. A file's key is not stored: it is its parent's
/// prefix and its name (the kernel holds a directory while it holds anything
/// in it).
pub struct Node {
    pub parent: Ino,
    pub entry: Entry,
    /// A directory's key prefix (ending in `/`, or the root prefix).
    prefix: Option<Box<str>>,
    /// Replies that gave the kernel this node, less what it forgot.
    lookups: u64,
    /// Picked for the kernel to let go, and not forgotten yet.
    picked: bool,
}

impl Node {
    pub fn kind(&self) -> FileKind {
        match self.prefix {
            Some(_) => FileKind::Directory,
            None => FileKind::File,
        }
    }
}

/// Nodes the kernel holds no lookup of (shown by a plain `readdir` only) that
/// are kept, so a name keeps its inode number while it is being browsed.
pub const IDLE_INODES_MAX: usize = 16_384;

/// Nodes the kernel holds lookups of beyond which the oldest given are picked
/// for the kernel to let go (it is told to drop their names, and forgets them
/// unless they are in use); a batch brings it back to 7/8 of this.
pub const HELD_INODES_MAX: usize = 32_768;

/// Nodes dropped as the kernel forgets them after which the allocator is asked
/// to hand free memory back to the system (the kernel forgets a walk's names in
/// bulk, under memory pressure or `drop_caches`).
const RELEASE_AFTER_NODES: usize = 16_384;

/// A name the kernel is to let go: its directory's inode and the name.
pub type Excess = (Ino, Box<str>);

/// Inodes by number and by (parent, name).
pub struct InodeTable {
    inner: Mutex<Inner>,
    next: AtomicU64,
    idle_max: usize,
    held_max: usize,
    /// The kernel held more than `held_max` nodes at the last count.
    over: AtomicBool,
}

struct Inner {
    nodes: HashMap<Ino, Node>,
    by_name: HashMap<(Ino, Box<str>), Ino>,
    /// Nodes with no kernel lookup, least recently shown first.
    idle: LruCache<Ino, ()>,
    /// Nodes the kernel holds (the root aside), and how many of them it was
    /// told to let go.
    held: usize,
    picked: usize,
    /// Nodes the kernel forgot since the allocator was last asked to give memory back.
    forgotten: usize,
    /// Nodes in the order the kernel came to hold them (with some it has
    /// forgotten since, skipped when met).
    given: VecDeque<Ino>,
}

impl Inner {
    /// Drops node `ino` and its name (unless the name now has another node).
    fn remove(&mut self, ino: Ino) {
        self.idle.pop(&ino);
        if let Some(node) = self.nodes.remove(&ino) {
            self.picked -= usize::from(node.picked);
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
            held: 0,
            picked: 0,
            forgotten: 0,
            given: VecDeque::new(),
        };
        let root = Entry::dir("");
        inner.nodes.insert(
            ROOT_INO,
            Node {
                parent: ROOT_INO,
                entry: root,
                prefix: Some(prefix.into()),
                lookups: 0,
                picked: false,
            },
        );
        InodeTable {
            inner: Mutex::new(inner),
            next: AtomicU64::new(ROOT_INO + 1),
            idle_max: idle_max.max(1),
            held_max: HELD_INODES_MAX,
            over: AtomicBool::new(false),
        }
    }

    /// `new`, picking names for the kernel to let go beyond `held_max` held nodes.
    #[cfg(test)]
    pub fn with_held_max(prefix: &str, held_max: usize) -> InodeTable {
        InodeTable {
            held_max: held_max.max(8),
            ..InodeTable::new(prefix)
        }
    }

    /// How many nodes the kernel holds (the root aside).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.inner.lock().held
    }

    /// Whether the kernel holds more than the bound (cheap: no lock).
    pub fn over(&self) -> bool {
        self.over.load(Ordering::Relaxed)
    }

    /// When the kernel holds more than the bound, the names it was given first,
    /// enough to bring it back to 7/8 of the bound once it forgets them (those
    /// picked before and not forgotten yet count); else none. They stay here
    /// until it forgets them.
    pub fn excess(&self) -> Vec<Excess> {
        let mut inner = self.inner.lock();
        self.over.store(false, Ordering::Relaxed);
        let keep = self.held_max - self.held_max / 8;
        let goal = inner.held.saturating_sub(keep + inner.picked);
        if inner.held <= self.held_max || goal == 0 {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(goal);
        while out.len() < goal {
            let Some(ino) = inner.given.pop_front() else {
                break;
            };
            let Some(node) = inner
                .nodes
                .get_mut(&ino)
                .filter(|n| n.lookups > 0 && !n.picked)
            else {
                continue;
            };
            node.picked = true;
            out.push((node.parent, node.entry.name.clone()));
        }
        inner.picked += out.len();
        out
    }

    /// How many nodes the table holds, the root included.
    pub fn len(&self) -> usize {
        self.inner.lock().nodes.len()
    }

    /// The kernel forgot `n` lookups of `ino`: once it holds none, the node is
    /// dropped (never the root). An open handle needs no node: it keeps what it
    /// opened. True once `RELEASE_AFTER_NODES` nodes were dropped so since the
    /// last time it said so: the allocator may give memory back.
    pub fn forget(&self, ino: Ino, n: u64) -> bool {
        if ino == ROOT_INO {
            return false;
        }
        let mut inner = self.inner.lock();
        let Some(node) = inner.nodes.get_mut(&ino) else {
            return false;
        };
        let before = node.lookups;
        node.lookups = before.saturating_sub(n);
        if node.lookups == 0 {
            if before > 0 {
                inner.held -= 1;
            }
            inner.remove(ino);
            // The queue of held nodes, rid of the forgotten ones once they are most of it.
            if inner.given.len() > 2 * inner.held + 1024 {
                let Inner { given, nodes, .. } = &mut *inner;
                given.retain(|ino| nodes.get(ino).is_some_and(|n| n.lookups > 0));
            }
            inner.forgotten += 1;
            if inner.forgotten >= RELEASE_AFTER_NODES {
                inner.forgotten = 0;
                return true;
            }
        }
        false
    }

    /// Runs `f` on the node of `ino` (under the table's lock), if there is one.
    pub fn with<R>(&self, ino: Ino, f: impl FnOnce(&Node) -> R) -> Result<R, FsError> {
        let inner = self.inner.lock();
        inner.nodes.get(&ino).map(f).ok_or_else(FsError::not_found)
    }

    /// The key prefix of directory `ino`.
    pub fn dir_path(&self, ino: Ino) -> Result<String, FsError> {
        self.with(ino, |node| match &node.prefix {
            Some(prefix) => Ok(prefix.to_string()),
            None => Err(FsError::not_a_directory()),
        })?
    }

    /// The key of file `ino` (`None` for a directory), its parent and its entry.
    pub fn file(&self, ino: Ino) -> Result<(Option<String>, Ino, Entry), FsError> {
        let inner = self.inner.lock();
        let node = inner.nodes.get(&ino).ok_or_else(FsError::not_found)?;
        if node.prefix.is_some() {
            return Ok((None, node.parent, node.entry.clone()));
        }
        let parent = inner
            .nodes
            .get(&node.parent)
            .and_then(|p| p.prefix.as_deref());
        // Never without its parent while the kernel can name it; were it so,
        // not found rather than a wrong key.
        let parent = parent.ok_or_else(FsError::not_found)?;
        let key = format!("{parent}{}", node.entry.name);
        Ok((Some(key), node.parent, node.entry.clone()))
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
        let prefix = entry
            .dir
            .then(|| format!("{parent_path}{}/", entry.name).into_boxed_str());
        let mut inner = self.inner.lock();
        let name = (parent, entry.name.clone());
        let known = inner.by_name.get(&name).and_then(|&ino| {
            let node = inner.nodes.get(&ino).filter(|n| n.entry.dir == entry.dir)?;
            Some((ino, node.lookups, node.picked))
        });
        let (ino, held, picked) = match known {
            Some(known) => known,
            None => {
                let ino = self.next.fetch_add(1, Ordering::Relaxed);
                inner.by_name.insert(name, ino);
                (ino, 0, false)
            }
        };
        let node = Node {
            parent,
            entry: entry.clone(),
            prefix,
            lookups: held + u64::from(counted),
            picked,
        };
        let out = f(ino, &node);
        let idle = node.lookups == 0;
        if held == 0 && !idle {
            inner.held += 1;
            inner.given.push_back(ino);
            if inner.held > self.held_max {
                self.over.store(true, Ordering::Relaxed);
            }
        }
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
    use crate::store::StorageClass;

    fn entry(name: &str, dir: bool, size: u64) -> Entry {
        match dir {
            true => Entry::dir(name),
            false => Entry::file(name, size, "\"e\"", 0, &StorageClass::Standard, false),
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
    fn beyond_the_bound_the_names_given_first_are_picked_for_the_kernel_to_let_go() {
        let table = InodeTable::with_held_max("", 16);
        let dir = child(&table, ROOT_INO, "", &entry("d", true, 0));
        let files: Vec<Ino> = (0..16)
            .map(|i| child(&table, dir, "d/", &entry(&format!("f{i}"), false, 1)))
            .collect();
        shown(&table, dir, "d/", &entry("idle", false, 1));
        assert_eq!(
            table.held(),
            17,
            "the directory and its files; not the idle one"
        );
        let excess = table.excess();
        let names: Vec<&str> = excess.iter().map(|(_, n)| &**n).collect();
        assert_eq!(names, ["d", "f0", "f1"], "down to 14 = 16 - 16/8");
        assert_eq!(excess[1].0, dir);
        assert_eq!(table.held(), 17, "kept until the kernel forgets them");
        table.forget(files[0], 1);
        table.forget(files[1], 1);
        assert_eq!(table.held(), 15);
        assert!(table.excess().is_empty(), "within the bound again");
        assert!(!table.over());
        // Looked up again, a name is held again and queued again.
        child(&table, dir, "d/", &entry("f0", false, 1));
        child(&table, dir, "d/", &entry("g", false, 1));
        assert_eq!(table.held(), 17);
        assert!(table.over());
        let names: Vec<Box<str>> = table.excess().into_iter().map(|(_, n)| n).collect();
        // d was picked already and is still held (in use, say): it counts.
        assert_eq!(names, ["f2", "f3"].map(Box::from), "each name picked once");
        assert!(
            table.excess().is_empty(),
            "nothing more until they are forgotten"
        );
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
        assert_eq!(table.file(f).unwrap().0.unwrap(), "a/f");
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
