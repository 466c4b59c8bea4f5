//! Where one key's copy lives, and opening copies for readers: the filesystem asks
//! here instead of joining mirror paths itself.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::{LocalStatus, Mirror};
use crate::layout::{Placement, place_alone, renamed_path};
use crate::store::{ETag, Key};
use crate::sys::beneath::Open;

impl Mirror {
    /// Where the copy of `key` (of `size` bytes) lives, relative to the root: the
    /// placement prefetch gives it, for one key seen alone.
    pub fn path_for(&self, key: &Key, size: u64) -> PathBuf {
        match place_alone(key.as_str(), size) {
            Placement::File(path) => self.resolve(key, &path),
            Placement::Directory(path) => path,
            Placement::Renamed { path, .. } => path,
        }
    }

    /// The copy of `key`, opened for reading, if it is exactly this version (at
    /// the path `path_for` gives). Every open of a file the mirror holds comes
    /// here, so it costs one open, one stat and one xattr read: the descriptor
    /// that is checked is the one returned, which a rename cannot swap between.
    pub fn open_current(&self, key: &Key, etag: &ETag, size: u64) -> Option<File> {
        // (O_NONBLOCK, which keeps a FIFO from blocking the open, is ignored by
        // reads of a regular file.)
        let open = |rel: &Path| {
            let file = self.dir.open(rel, Open::read().nonblocking()).ok()?;
            let meta = file.metadata().ok()?;
            Some((file, meta))
        };
        let (file, meta) = match place_alone(key.as_str(), size) {
            Placement::File(path) => match open(&path)? {
                // A directory stands at the key's own path: its copy is renamed.
                (_, meta) if meta.is_dir() => open(&renamed_path(key.as_str()))?,
                opened => opened,
            },
            Placement::Renamed { path, .. } => open(&path)?,
            Placement::Directory(_) => return None,
        };
        if !meta.is_file() {
            return None;
        }
        let record = super::read_record_of(&file);
        match super::judge(record.as_ref(), meta.len(), key, etag, size) {
            LocalStatus::Current => Some(file),
            _ => None,
        }
    }

    /// The record of the copy (file or marker directory) at `rel`, with its
    /// mtime (for a file, the object's LastModified); `None` without a record.
    pub fn copy_at(&self, rel: &Path) -> Option<(super::Record, std::time::SystemTime)> {
        let file = self.dir.open_read(rel).ok()?;
        let record = super::read_record_of(&file)?;
        let modified = file.metadata().ok()?.modified().ok()?;
        Some((record, modified))
    }

    /// The record of the file or directory at `rel`, if it has a valid one.
    pub fn record_at(&self, rel: &Path) -> Option<super::Record> {
        super::read_record_in(&self.dir, rel)
    }

    /// What stands at `rel`, a symlink not followed.
    pub fn metadata(&self, rel: &Path) -> io::Result<std::fs::Metadata> {
        self.dir.symlink_metadata(rel)
    }

    /// Opens a file of the state directory for reading.
    pub fn open_state_file(&self, name: &str) -> io::Result<File> {
        self.dir
            .open_read(&std::path::Path::new(crate::layout::STATE_DIR).join(name))
    }

    /// Reads a file of the state directory (`name` may be in a subdirectory).
    pub fn read_state_file(&self, name: &str) -> io::Result<Vec<u8>> {
        self.dir
            .read(&std::path::Path::new(crate::layout::STATE_DIR).join(name))
    }

    /// The entries of the directory at `rel`.
    pub fn read_dir(&self, rel: &Path) -> io::Result<Vec<crate::sys::beneath::Entry>> {
        self.dir.read_dir(rel)
    }

    /// Removes a file of the state directory (`name` may be in a subdirectory).
    pub fn remove_state_file(&self, name: &str) -> io::Result<()> {
        self.dir
            .remove_file(&std::path::Path::new(crate::layout::STATE_DIR).join(name))
    }

    /// Opens (creating, appending) a file of the state directory, for the
    /// daemon's log.
    pub fn open_state_log(&self, name: &str) -> io::Result<File> {
        use crate::sys::beneath::Open;
        self.dir.open(
            &std::path::Path::new(crate::layout::STATE_DIR).join(name),
            Open::read_write().create(0o600).append(),
        )
    }

    /// Opens the copy at `rel` for reading (one a download just committed).
    pub fn open_copy(&self, rel: &Path) -> io::Result<File> {
        self.dir.open_read(rel)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::time::SystemTime;

    use super::*;
    use crate::layout::renamed_path;
    use crate::mirror::Record;

    fn key(key: &str) -> Key {
        Key::new(key).unwrap()
    }

    fn put(mirror: &Mirror, rel: &str, key: &str, etag: &str, body: &[u8]) {
        let tmp = mirror.create_temp().unwrap();
        tmp.write_at(body, 0).unwrap();
        let record = Record {
            key: Key::new(key).unwrap(),
            etag: ETag::new(etag),
            size: body.len() as u64,
            md5: None,
            corrupt: false,
        };
        mirror
            .commit(tmp, Path::new(rel), &record, SystemTime::now())
            .unwrap();
    }

    /// What `open_current` gives for this version, read whole.
    fn current(mirror: &Mirror, k: &str, etag: &str, size: u64) -> Option<String> {
        let mut file = mirror.open_current(&key(k), &ETag::new(etag), size)?;
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        Some(text)
    }

    #[test]
    fn only_the_listed_version_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::open(dir.path(), "b").unwrap();
        put(&mirror, "a/k", "a/k", "\"e1\"", b"hello");
        assert_eq!(
            current(&mirror, "a/k", "\"e1\"", 5).as_deref(),
            Some("hello")
        );
        assert_eq!(current(&mirror, "a/k", "\"e2\"", 5), None, "another ETag");
        assert_eq!(current(&mirror, "a/k", "\"e1\"", 6), None, "another size");
        assert_eq!(current(&mirror, "other", "\"e1\"", 5), None, "another key");
        assert_eq!(current(&mirror, "a/x", "\"e1\"", 5), None, "no copy");
        // A directory at a key's own path: its copy is the renamed one.
        put(&mirror, "d/inner", "d/inner", "\"e\"", b"x");
        let renamed = renamed_path("d");
        put(&mirror, renamed.to_str().unwrap(), "d", "\"e3\"", b"dd");
        assert_eq!(current(&mirror, "d", "\"e3\"", 2).as_deref(), Some("dd"));
        assert_eq!(current(&mirror, "d/", "\"e\"", 0), None, "a marker");
        assert!(mirror.open_copy(Path::new("a/k")).is_ok());
        let missing = mirror.open_copy(Path::new("a/x")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn keys_are_placed_as_prefetch_places_them() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::open(dir.path(), "b").unwrap();
        assert_eq!(mirror.path_for(&key("a/b.jpg"), 3), Path::new("a/b.jpg"));
        assert_eq!(
            mirror.path_for(&key("a/"), 0),
            Path::new("a"),
            "a directory marker"
        );
        assert_eq!(mirror.path_for(&key("a//b"), 3), renamed_path("a//b"));
        // A directory already standing at a key's path keeps its name.
        put(&mirror, "d/inner", "d/inner", "\"e\"", b"x");
        assert_eq!(mirror.path_for(&key("d"), 3), renamed_path("d"));
    }
}
