//! Where one key's copy lives, and opening copies for readers: the filesystem asks
//! here instead of joining mirror paths itself.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::{LocalStatus, Mirror};
use crate::layout::{Placement, place_alone};
use crate::store::{ETag, Key};

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

    /// The copy at `rel`, opened for reading, if it is exactly this version of `key`.
    pub fn open_current(&self, rel: &Path, key: &Key, etag: &ETag, size: u64) -> Option<File> {
        if self.status(rel, key, etag, size) != LocalStatus::Current {
            return None;
        }
        File::open(self.root.join(rel)).ok()
    }

    /// The record of the copy (file or marker directory) at `rel`, with its
    /// mtime (for a file, the object's LastModified); `None` without a record.
    pub fn copy_at(&self, rel: &Path) -> Option<(super::Record, std::time::SystemTime)> {
        let path = self.root.join(rel);
        let record = super::read_record(&path)?;
        let modified = std::fs::symlink_metadata(&path).ok()?.modified().ok()?;
        Some((record, modified))
    }

    /// Opens the copy at `rel` for reading (one a download just committed).
    pub fn open_copy(&self, rel: &Path) -> io::Result<File> {
        File::open(self.root.join(rel))
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

    #[test]
    fn only_the_listed_version_is_opened() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::open(dir.path(), "b").unwrap();
        put(&mirror, "a/k", "a/k", "\"e1\"", b"hello");
        let rel = Path::new("a/k");
        let mut text = String::new();
        let mut file = mirror
            .open_current(rel, &key("a/k"), &ETag::new("\"e1\""), 5)
            .unwrap();
        file.read_to_string(&mut text).unwrap();
        assert_eq!(text, "hello");
        assert!(
            mirror
                .open_current(rel, &key("a/k"), &ETag::new("\"e2\""), 5)
                .is_none(),
            "another ETag"
        );
        assert!(
            mirror
                .open_current(rel, &key("a/k"), &ETag::new("\"e1\""), 6)
                .is_none(),
            "another size"
        );
        assert!(
            mirror
                .open_current(rel, &key("other"), &ETag::new("\"e1\""), 5)
                .is_none(),
            "another key"
        );
        assert!(
            mirror
                .open_current(Path::new("a/x"), &key("a/x"), &ETag::new("\"e1\""), 5)
                .is_none()
        );
        assert!(mirror.open_copy(rel).is_ok());
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
