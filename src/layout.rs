//! Key -> mirror path. A key that is a safe relative path is stored verbatim; every
//! other key goes to a deterministic path under `.s3mirrorfs/renamed/`, which no
//! real key can reach because every key under `.s3mirrorfs/` is itself renamed.
//! Pure functions only: the rules are written down in doc/SEMANTICS.md.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::store::raw_bytes;

/// The tool's own directory inside the mirror; no key is stored verbatim under it.
pub const STATE_DIR: &str = ".s3mirrorfs";
/// Where keys that cannot be stored verbatim are kept.
pub const RENAMED_DIR: &str = ".s3mirrorfs/renamed";
/// Where the versions the mirror no longer holds as current are kept.
pub const HISTORY_DIR: &str = ".s3mirrorfs/history";
/// Longest name Linux filesystems accept for one component.
pub const NAME_MAX: usize = 255;
/// Longest relative path stored verbatim; leaves room for the mirror's own path within PATH_MAX.
pub const REL_PATH_MAX: usize = 3072;
/// Bytes of the key's last component kept in a renamed file's name, to help people find it.
const READABLE_TAIL_MAX: usize = 64;

/// Why a key is not stored under its own name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenameReason {
    /// Leading `/`, `//`, or a trailing `/` on a non-empty object.
    EmptyComponent,
    /// A `.` or `..` component.
    DotComponent,
    /// A component longer than 255 bytes.
    NameTooLong,
    /// The whole path is longer than the mirror allows.
    PathTooLong,
    /// A NUL byte, which no path can hold.
    Nul,
    /// The key lies under the tool's own `.s3mirrorfs` directory.
    Reserved,
    /// The key is also a prefix of other keys: the directory keeps the name.
    PrefixConflict,
    /// The key is not valid UTF-8 (see `store::raw_bytes`).
    NotUtf8,
}

impl fmt::Display for RenameReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RenameReason::EmptyComponent => "empty path component",
            RenameReason::DotComponent => "'.' or '..' component",
            RenameReason::NameTooLong => "component longer than 255 bytes",
            RenameReason::PathTooLong => "path too long",
            RenameReason::Nul => "NUL byte",
            RenameReason::Reserved => "reserved name .s3mirrorfs",
            RenameReason::PrefixConflict => "key is also a directory prefix",
            RenameReason::NotUtf8 => "key is not valid UTF-8",
        })
    }
}

/// Where one listed object lives in the mirror, relative to the mirror root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// A regular file at the key's own path.
    File(PathBuf),
    /// A directory marker (zero-byte key ending in `/`): a directory at the key's path.
    Directory(PathBuf),
    /// A regular file under `.s3mirrorfs/renamed/`.
    Renamed { path: PathBuf, reason: RenameReason },
}

impl Placement {
    /// The relative path this placement names.
    pub fn path(&self) -> &Path {
        match self {
            Placement::File(p) | Placement::Directory(p) => p,
            Placement::Renamed { path, .. } => path,
        }
    }
}

/// Checks that `rel` can be used verbatim as a relative path inside the mirror.
pub fn verbatim_path(rel: &str) -> Result<PathBuf, RenameReason> {
    if rel.contains('\0') {
        return Err(RenameReason::Nul);
    }
    if raw_bytes::has_raw_bytes(rel) {
        return Err(RenameReason::NotUtf8);
    }
    if rel.len() > REL_PATH_MAX {
        return Err(RenameReason::PathTooLong);
    }
    for (i, component) in rel.split('/').enumerate() {
        match component {
            "" => return Err(RenameReason::EmptyComponent),
            "." | ".." => return Err(RenameReason::DotComponent),
            c if c.len() > NAME_MAX => return Err(RenameReason::NameTooLong),
            STATE_DIR if i == 0 => return Err(RenameReason::Reserved),
            _ => {}
        }
    }
    Ok(PathBuf::from(rel))
}

/// The renamed path of `key`: `.s3mirrorfs/renamed/<32 hex of SHA-256(key)>[-<readable tail>]`.
pub fn renamed_path(key: &str) -> PathBuf {
    let digest = Sha256::digest(key.as_bytes());
    let mut name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    let tail = readable_tail(key);
    if !tail.is_empty() {
        name.push('-');
        name.push_str(&tail);
    }
    Path::new(RENAMED_DIR).join(name)
}

/// The directory of `key`'s history: `.s3mirrorfs/history/<32 hex of SHA-256(key)>`.
pub fn history_dir(key: &str) -> PathBuf {
    let digest = Sha256::digest(key.as_bytes());
    let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    Path::new(HISTORY_DIR).join(name)
}

/// The name of a kept version of `key` in its history directory:
/// `<ms since the epoch it was replaced>-<n>[-<readable tail>]`, so it sorts by
/// age and keeps the key's file name (and extension) for whoever copies it out.
pub fn version_name(replaced_at_ms: u64, n: u32, key: &str) -> String {
    let tail = readable_tail(key);
    match tail.is_empty() {
        true => format!("{replaced_at_ms}-{n}"),
        false => format!("{replaced_at_ms}-{n}-{tail}"),
    }
}

/// When a version named by `version_name` was replaced.
pub fn version_replaced_at(name: &str) -> Option<u64> {
    name.split('-').next()?.parse().ok()
}

/// The key's last non-empty component, with anything awkward in a file name replaced by `_`.
fn readable_tail(key: &str) -> String {
    let last = key.rsplit('/').find(|c| !c.is_empty()).unwrap_or("");
    if last == "." || last == ".." {
        return String::new();
    }
    let mut tail = String::new();
    for c in last.chars() {
        let c = if c.is_control() || raw_bytes::raw_byte(c).is_some() {
            '_'
        } else {
            c
        };
        if tail.len() + c.len_utf8() > READABLE_TAIL_MAX {
            break;
        }
        tail.push(c);
    }
    tail
}

/// Where a key goes considered alone, before conflicts with other keys.
pub fn place_alone(key: &str, size: u64) -> Placement {
    let as_marker = key.strip_suffix('/').filter(|_| size == 0);
    let result = match as_marker {
        Some(dir) => verbatim_path(dir).map(Placement::Directory),
        None => verbatim_path(key).map(Placement::File),
    };
    result.unwrap_or_else(|reason| Placement::Renamed {
        path: renamed_path(key),
        reason,
    })
}

/// Every path a copy of `key` can have, whatever the listing around it: its own
/// path as a file, the directory of a `dir/` marker, and its renamed path. A
/// key whose placement changes (it becomes a prefix, a marker gains bytes)
/// moves between these, so the mirror looks at all of them to keep one copy.
pub fn possible_paths(key: &str) -> Vec<PathBuf> {
    let mut paths = Vec::with_capacity(3);
    if let Ok(own) = verbatim_path(key) {
        paths.push(own);
    }
    if let Some(Ok(dir)) = key.strip_suffix('/').map(verbatim_path) {
        paths.push(dir);
    }
    paths.push(renamed_path(key));
    paths
}

/// Places every key of a listing: a key that is also the prefix of another stored
/// key gives its name to the directory and is renamed itself.
pub fn place_all<'a>(keys: impl IntoIterator<Item = (&'a str, u64)>) -> Vec<Placement> {
    let mut placements: Vec<Placement> = keys
        .into_iter()
        .map(|(k, size)| place_alone(k, size))
        .collect();
    let mut directories: HashSet<&Path> = HashSet::new();
    for placement in &placements {
        let (path, own) = match placement {
            Placement::File(p) => (p.as_path(), false),
            Placement::Directory(p) => (p.as_path(), true),
            Placement::Renamed { .. } => continue,
        };
        if own {
            directories.insert(path);
        }
        directories.extend(
            path.ancestors()
                .skip(1)
                .filter(|a| !a.as_os_str().is_empty()),
        );
    }
    let conflicts: Vec<usize> = placements
        .iter()
        .enumerate()
        .filter(|(_, p)| matches!(p, Placement::File(path) if directories.contains(path.as_path())))
        .map(|(i, _)| i)
        .collect();
    drop(directories);
    for i in conflicts {
        let Placement::File(path) = &placements[i] else {
            unreachable!("only files conflict")
        };
        let key = path
            .to_str()
            .expect("verbatim paths come from UTF-8 keys")
            .to_string();
        placements[i] = Placement::Renamed {
            path: renamed_path(&key),
            reason: RenameReason::PrefixConflict,
        };
    }
    placements
}

/// Finds, over keys in S3's order (bytewise), the keys that `place_all` renames
/// because another key is stored beneath them, without holding the listing: a
/// key `K` placed as a file conflicts only with a later key starting `K/`, and
/// every key between the two starts with `K` and a byte below `/`. So the keys
/// still undecided at any moment are prefixes of one another (at most one per
/// byte of the longest key), kept on a stack.
#[derive(Default)]
pub struct PrefixConflicts {
    /// Keys placed as files that a later key may still conflict with, each a
    /// prefix of the next.
    pending: Vec<Vec<u8>>,
}

impl PrefixConflicts {
    pub fn new() -> PrefixConflicts {
        PrefixConflicts::default()
    }

    /// Takes the next key (of `size` bytes); calls `conflict` with each earlier
    /// key this one shows to be a prefix of a stored key.
    pub fn push(&mut self, key: &str, size: u64, mut conflict: impl FnMut(Vec<u8>)) {
        let placement = place_alone(key, size);
        let bytes = raw_bytes::bytes_of(key);
        while let Some(top) = self.pending.last() {
            let beneath = bytes.len() > top.len() && bytes.starts_with(top);
            match bytes.get(top.len()) {
                Some(b'/') if beneath => {
                    // Only a key stored under its own path makes `top` a directory.
                    if matches!(placement, Placement::Renamed { .. }) {
                        break;
                    }
                    conflict(self.pending.pop().expect("a top"));
                }
                Some(next) if beneath && *next < b'/' => break,
                _ => {
                    self.pending.pop();
                }
            }
        }
        if matches!(placement, Placement::File(_)) {
            self.pending.push(bytes.into_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alone(key: &str) -> Placement {
        place_alone(key, 1)
    }

    fn reason(key: &str) -> Option<RenameReason> {
        match alone(key) {
            Placement::Renamed { reason, .. } => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn safe_keys_are_verbatim() {
        for key in [
            "a",
            "photos/2024/img.jpg",
            "..x",
            "x..",
            ".hidden",
            "a b/c+d",
            "café",
            "cafe\u{301}",
            "line\nbreak",
            "tab\there",
            "back\\slash",
            ".s3mirrorfsx/a",
            "a/.s3mirrorfs",
            "...",
        ] {
            assert_eq!(alone(key), Placement::File(PathBuf::from(key)), "{key:?}");
        }
        let long = "n".repeat(255);
        assert_eq!(alone(&long), Placement::File(PathBuf::from(&long)));
    }

    #[test]
    fn hostile_keys_are_renamed_with_a_reason() {
        let cases = [
            ("../x", RenameReason::DotComponent),
            ("dir/../../x", RenameReason::DotComponent),
            ("/abs/x", RenameReason::EmptyComponent),
            ("a//b", RenameReason::EmptyComponent),
            ("./x", RenameReason::DotComponent),
            ("x/./y", RenameReason::DotComponent),
            ("x/..", RenameReason::DotComponent),
            ("x/.", RenameReason::DotComponent),
            ("..", RenameReason::DotComponent),
            (".", RenameReason::DotComponent),
            ("/", RenameReason::EmptyComponent),
            ("a/", RenameReason::EmptyComponent),
            (".s3mirrorfs", RenameReason::Reserved),
            (".s3mirrorfs/lock", RenameReason::Reserved),
            (".s3mirrorfs/renamed/x", RenameReason::Reserved),
            ("nul\0byte", RenameReason::Nul),
        ];
        for (key, expected) in cases {
            assert_eq!(reason(key), Some(expected), "{key:?}");
        }
        assert_eq!(reason(&"n".repeat(256)), Some(RenameReason::NameTooLong));
        assert_eq!(
            reason(&format!("d/{}", "n".repeat(256))),
            Some(RenameReason::NameTooLong)
        );
        let deep = vec!["d".repeat(200); 20].join("/");
        assert_eq!(reason(&deep), Some(RenameReason::PathTooLong));
        let odd = raw_bytes::text_from_bytes(b"dir/a\xffz.jpg".to_vec());
        assert_eq!(reason(&odd), Some(RenameReason::NotUtf8));
        // The readable tail of its renamed name holds no stand-in characters.
        let renamed = renamed_path(&odd);
        let name = renamed.file_name().unwrap().to_str().unwrap();
        assert!(name.ends_with("-a_z.jpg"), "{name}");
    }

    #[test]
    fn renamed_paths_stay_in_the_renamed_dir() {
        for key in [
            "../x",
            "dir/../../x",
            "/abs/x",
            "x/..",
            "a\n/..",
            &"é".repeat(300),
            "/",
            "..",
        ] {
            let path = renamed_path(key);
            assert_eq!(path.parent(), Some(Path::new(RENAMED_DIR)), "{key:?}");
            let name = path.file_name().unwrap().to_str().unwrap();
            assert!(name.len() <= NAME_MAX);
            assert!(!name.contains('/') && !name.chars().any(char::is_control));
            assert!(verbatim_path(name).is_ok(), "{name:?}");
        }
    }

    #[test]
    fn renamed_paths_are_deterministic_and_distinct() {
        assert_eq!(renamed_path("../x"), renamed_path("../x"));
        assert_ne!(renamed_path("../x"), renamed_path("../x/"));
        assert_ne!(renamed_path("a//b"), renamed_path("a///b"));
        let name = renamed_path("dir/../photo.jpg");
        assert!(name.to_str().unwrap().ends_with("-photo.jpg"));
        assert_eq!(
            renamed_path("x/..").file_name().unwrap().len(),
            32,
            "no readable tail for '..'"
        );
    }

    #[test]
    fn directory_markers() {
        assert_eq!(place_alone("a/", 0), Placement::Directory("a".into()));
        assert_eq!(place_alone("a/b/", 0), Placement::Directory("a/b".into()));
        assert!(matches!(
            place_alone("a/", 5),
            Placement::Renamed {
                reason: RenameReason::EmptyComponent,
                ..
            }
        ));
        assert!(matches!(
            place_alone("a//", 0),
            Placement::Renamed {
                reason: RenameReason::EmptyComponent,
                ..
            }
        ));
        assert!(matches!(place_alone("/", 0), Placement::Renamed { .. }));
        assert!(matches!(
            place_alone("../", 0),
            Placement::Renamed {
                reason: RenameReason::DotComponent,
                ..
            }
        ));
        assert!(matches!(
            place_alone(".s3mirrorfs/", 0),
            Placement::Renamed {
                reason: RenameReason::Reserved,
                ..
            }
        ));
        assert_eq!(place_alone("empty", 0), Placement::File("empty".into()));
    }

    #[test]
    fn a_key_that_is_also_a_prefix_gives_way_to_the_directory() {
        let placed = place_all([
            ("photo", 3),
            ("photo/1.jpg", 3),
            ("photo/1.jpg/x", 1),
            ("other", 1),
        ]);
        assert!(
            matches!(&placed[0], Placement::Renamed { reason: RenameReason::PrefixConflict, path } if *path == renamed_path("photo"))
        );
        assert!(matches!(
            &placed[1],
            Placement::Renamed {
                reason: RenameReason::PrefixConflict,
                ..
            }
        ));
        assert_eq!(placed[2], Placement::File("photo/1.jpg/x".into()));
        assert_eq!(placed[3], Placement::File("other".into()));
    }

    #[test]
    fn directory_markers_and_renamed_keys_in_conflicts() {
        // A marker makes a directory; a renamed key makes none.
        let placed = place_all([("d", 1), ("d/", 0), ("e", 1), ("e//x", 1)]);
        assert!(matches!(
            &placed[0],
            Placement::Renamed {
                reason: RenameReason::PrefixConflict,
                ..
            }
        ));
        assert_eq!(placed[1], Placement::Directory("d".into()));
        assert_eq!(placed[2], Placement::File("e".into()));
        assert!(matches!(
            &placed[3],
            Placement::Renamed {
                reason: RenameReason::EmptyComponent,
                ..
            }
        ));
    }

    #[test]
    fn nfc_and_nfd_twins_stay_distinct() {
        let placed = place_all([("caf\u{e9}", 1), ("cafe\u{301}", 1)]);
        assert_ne!(placed[0].path(), placed[1].path());
        assert!(matches!(placed[0], Placement::File(_)) && matches!(placed[1], Placement::File(_)));
    }

    #[test]
    fn every_placement_stays_inside_the_mirror() {
        let keys = [
            "../x",
            "dir/../../x",
            "/abs/x",
            "a//b",
            "./x",
            "x/./y",
            "x/..",
            "x/.",
            "..",
            "/",
            "a/b",
            "photo",
            "photo/1.jpg",
            ".s3mirrorfs/x",
        ];
        for placement in place_all(keys.iter().map(|k| (*k, 1))) {
            let path = placement.path();
            assert!(path.is_relative());
            assert!(
                path.components()
                    .all(|c| matches!(c, std::path::Component::Normal(_))),
                "{path:?}"
            );
        }
    }

    /// Properties of the mapping over generated listings, each checked against the
    /// rules of doc/SEMANTICS.md as written there, not against the code above.
    mod properties {
        use std::collections::{BTreeMap, HashSet};

        use proptest::prelude::*;

        use super::*;

        /// Components that hit every rule, plus arbitrary text without `/`.
        fn component() -> impl Strategy<Value = String> {
            let tricky = prop::sample::select(vec![
                "a",
                "b",
                "photo",
                "1.jpg",
                "",
                ".",
                "..",
                "...",
                ".s3mirrorfs",
                "renamed",
                "tmp",
                "caf\u{e9}",
                "cafe\u{301}",
                "line\nbreak",
                "nul\0byte",
                " ",
            ]);
            prop_oneof![
                6 => tricky.prop_map(String::from),
                3 => "[^/]{0,12}",
                1 => (NAME_MAX - 3..=NAME_MAX + 3).prop_map(|n| "n".repeat(n)),
                // Two-byte characters on both sides of the 255-byte limit.
                1 => (126usize..=129).prop_map(|n| "\u{e9}".repeat(n)),
            ]
        }

        /// An S3 key: 1 to 1024 bytes of UTF-8, often with leading, doubled or trailing `/`.
        fn s3_key() -> impl Strategy<Value = String> {
            let built = (
                prop::bool::weighted(0.15),
                prop::collection::vec(component(), 1..5),
                prop::bool::weighted(0.2),
            )
                .prop_map(|(lead, parts, trail)| {
                    let mut key = parts.join("/");
                    if lead {
                        key.insert(0, '/');
                    }
                    if trail {
                        key.push('/');
                    }
                    key
                });
            prop_oneof![8 => built, 1 => any::<String>()]
                .prop_filter("S3 keys are 1 to 1024 bytes", |k| {
                    !k.is_empty() && k.len() <= 1024
                })
        }

        /// A key, or, rarely, a path longer than S3 allows, to reach the whole-path limit.
        fn key() -> impl Strategy<Value = String> {
            let deep =
                prop::collection::vec((200usize..=NAME_MAX).prop_map(|n| "d".repeat(n)), 12..16)
                    .prop_map(|parts| parts.join("/"));
            prop_oneof![20 => s3_key(), 1 => deep]
        }

        fn size() -> impl Strategy<Value = u64> {
            prop_oneof![Just(0u64), 1u64..10]
        }

        /// A listing (distinct keys, in listing order) where keys are often the
        /// prefixes or markers of other keys, since conflicts are where data is lost.
        fn listing() -> impl Strategy<Value = Vec<(String, u64)>> {
            prop::collection::vec((key(), size(), 0u8..4), 1..14)
                .prop_map(|entries| {
                    let mut keys: BTreeMap<String, u64> = BTreeMap::new();
                    for (key, size, relative) in entries {
                        if let Some((parent, _)) = key.trim_end_matches('/').rsplit_once('/') {
                            match relative {
                                1 => {
                                    keys.insert(parent.to_string(), size + 1);
                                }
                                2 => {
                                    keys.insert(format!("{parent}/"), 0);
                                }
                                _ => {}
                            }
                        }
                        keys.insert(key, size);
                    }
                    keys.into_iter()
                        .filter(|(k, _)| !k.is_empty())
                        .collect::<Vec<_>>()
                })
                .prop_shuffle()
        }

        /// Every reason SEMANTICS gives for `rel` not being usable verbatim.
        fn reasons_against(rel: &str) -> Vec<RenameReason> {
            let parts: Vec<&str> = rel.split('/').collect();
            let mut reasons = Vec::new();
            if rel.contains('\0') {
                reasons.push(RenameReason::Nul);
            }
            if rel.len() > REL_PATH_MAX {
                reasons.push(RenameReason::PathTooLong);
            }
            if parts.iter().any(|c| c.is_empty()) {
                reasons.push(RenameReason::EmptyComponent);
            }
            if parts.iter().any(|c| *c == "." || *c == "..") {
                reasons.push(RenameReason::DotComponent);
            }
            if parts.iter().any(|c| c.len() > NAME_MAX) {
                reasons.push(RenameReason::NameTooLong);
            }
            if parts[0] == STATE_DIR {
                reasons.push(RenameReason::Reserved);
            }
            // The store writes a key that is not UTF-8 (or holds one of these
            // characters itself) with characters from U+10FF80 up.
            if rel.chars().any(|c| u32::from(c) >= 0x10_FF80) {
                reasons.push(RenameReason::NotUtf8);
            }
            reasons
        }

        /// What a key asks to be on its own: the path it wants and whether it is a marker.
        fn wanted(key: &str, size: u64) -> (&str, bool) {
            match key.strip_suffix('/') {
                Some(dir) if size == 0 => (dir, true),
                _ => (key, false),
            }
        }

        /// Where SEMANTICS puts `key` within `listing`.
        fn expected(key: &str, size: u64, listing: &[(String, u64)]) -> Placement {
            let (rel, marker) = wanted(key, size);
            let reasons = reasons_against(rel);
            if let Some(&reason) = reasons.first() {
                // Which of several true reasons is named is checked separately.
                return Placement::Renamed {
                    path: renamed_path(key),
                    reason,
                };
            }
            if marker {
                return Placement::Directory(PathBuf::from(rel));
            }
            let below = format!("{key}/");
            let is_a_directory = listing.iter().any(|(other, other_size)| {
                let (other_rel, other_marker) = wanted(other, *other_size);
                other != key
                    && reasons_against(other_rel).is_empty()
                    && (other_rel.starts_with(&below) || (other_marker && other_rel == key))
            });
            if is_a_directory {
                Placement::Renamed {
                    path: renamed_path(key),
                    reason: RenameReason::PrefixConflict,
                }
            } else {
                Placement::File(PathBuf::from(key))
            }
        }

        fn same_ignoring_reason(a: &Placement, b: &Placement) -> bool {
            match (a, b) {
                (Placement::Renamed { path: p, .. }, Placement::Renamed { path: q, .. }) => p == q,
                _ => a == b,
            }
        }

        proptest! {
            #[test]
            fn every_key_goes_where_semantics_says(listing in listing()) {
                let placed = place_all(listing.iter().map(|(k, s)| (k.as_str(), *s)));
                prop_assert_eq!(placed.len(), listing.len());
                for ((key, size), placement) in listing.iter().zip(&placed) {
                    let want = expected(key, *size, &listing);
                    prop_assert!(
                        same_ignoring_reason(placement, &want),
                        "{:?} ({} bytes): placed {:?}, expected {:?}", key, size, placement, want
                    );
                    if let Placement::Renamed { reason, .. } = placement {
                        let (rel, _) = wanted(key, *size);
                        let reasons = reasons_against(rel);
                        prop_assert!(
                            reasons.contains(reason)
                                || (reasons.is_empty() && *reason == RenameReason::PrefixConflict),
                            "{:?}: reason {:?}, true reasons {:?}", key, reason, reasons
                        );
                    }
                }
            }

            #[test]
            fn distinct_keys_get_distinct_paths_and_each_path_gives_back_its_key(
                listing in listing()
            ) {
                let placed = place_all(listing.iter().map(|(k, s)| (k.as_str(), *s)));
                let mut seen = HashSet::new();
                for ((key, size), placement) in listing.iter().zip(&placed) {
                    prop_assert!(seen.insert(placement.path().to_path_buf()), "{:?} shares {:?}", key, placement);
                    match placement {
                        Placement::File(path) => prop_assert_eq!(path.to_str(), Some(key.as_str())),
                        Placement::Directory(path) => {
                            prop_assert_eq!(*size, 0);
                            prop_assert_eq!(format!("{}/", path.to_str().unwrap()), key.clone());
                        }
                        Placement::Renamed { path, .. } => prop_assert_eq!(path, &renamed_path(key)),
                    }
                }
            }

            #[test]
            fn every_path_is_a_clean_relative_path_inside_the_mirror(listing in listing()) {
                let placed = place_all(listing.iter().map(|(k, s)| (k.as_str(), *s)));
                for ((key, _), placement) in listing.iter().zip(&placed) {
                    let path = placement.path();
                    let text = path.to_str().expect("paths are UTF-8");
                    prop_assert!(path.is_relative(), "{:?} -> {:?}", key, path);
                    prop_assert!(!text.contains('\0') && text.len() <= REL_PATH_MAX);
                    for part in text.split('/') {
                        prop_assert!(
                            !part.is_empty() && part != "." && part != ".." && part.len() <= NAME_MAX,
                            "{:?} -> {:?}", key, path
                        );
                    }
                    let in_state_dir = text.split('/').next() == Some(STATE_DIR);
                    if let Placement::Renamed { .. } = placement {
                        prop_assert_eq!(path.parent(), Some(Path::new(RENAMED_DIR)));
                    } else {
                        prop_assert!(!in_state_dir, "{:?} -> {:?}", key, path);
                    }
                }
            }

            #[test]
            fn no_file_stands_where_a_directory_is_needed(listing in listing()) {
                let placed = place_all(listing.iter().map(|(k, s)| (k.as_str(), *s)));
                let mut directories: HashSet<&Path> = HashSet::new();
                for placement in &placed {
                    if let Placement::Directory(path) = placement {
                        directories.insert(path);
                    }
                    directories.extend(
                        placement.path().ancestors().skip(1).filter(|a| !a.as_os_str().is_empty()),
                    );
                }
                for placement in &placed {
                    if let Placement::File(path) = placement {
                        prop_assert!(!directories.contains(path.as_path()), "{:?} is also a directory", path);
                    }
                }
            }

            #[test]
            fn a_key_that_conflicts_with_nothing_is_placed_as_alone(listing in listing()) {
                let placed = place_all(listing.iter().map(|(k, s)| (k.as_str(), *s)));
                for ((key, size), placement) in listing.iter().zip(&placed) {
                    let alone = place_alone(key, *size);
                    prop_assert_eq!(place_all([(key.as_str(), *size)]), vec![alone.clone()]);
                    if !matches!(placement, Placement::Renamed { reason: RenameReason::PrefixConflict, .. }) {
                        prop_assert_eq!(placement, &alone);
                    }
                }
            }

            #[test]
            fn placement_does_not_depend_on_listing_order(listing in listing()) {
                let placed = place_all(listing.iter().map(|(k, s)| (k.as_str(), *s)));
                let mut sorted = listing.clone();
                sorted.sort();
                let placed_sorted = place_all(sorted.iter().map(|(k, s)| (k.as_str(), *s)));
                let by_key: BTreeMap<&str, &Placement> =
                    listing.iter().map(|(k, _)| k.as_str()).zip(&placed).collect();
                for ((key, _), placement) in sorted.iter().zip(&placed_sorted) {
                    prop_assert_eq!(by_key[key.as_str()], placement);
                }
            }

            #[test]
            fn renamed_paths_are_the_hash_and_the_readable_tail(key in key()) {
                let path = renamed_path(&key);
                prop_assert_eq!(&path, &renamed_path(&key.clone()));
                prop_assert_eq!(path.parent(), Some(Path::new(RENAMED_DIR)));
                let name = path.file_name().unwrap().to_str().unwrap();
                let hash: String = Sha256::digest(key.as_bytes())[..16]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                prop_assert!(name.starts_with(&hash), "{:?}", name);
                let last = key.rsplit('/').find(|c| !c.is_empty()).unwrap_or("");
                let readable: String =
                    last.chars().map(|c| if c.is_control() { '_' } else { c }).collect();
                match name[32..].strip_prefix('-') {
                    None => {
                        prop_assert_eq!(name.len(), 32);
                        prop_assert!(readable.is_empty() || last == "." || last == "..");
                    }
                    Some(tail) => {
                        prop_assert!(last != "." && last != "..");
                        prop_assert!(!tail.is_empty() && tail.len() <= READABLE_TAIL_MAX);
                        prop_assert!(readable.starts_with(tail), "{:?} from {:?}", tail, last);
                        // Cut only where the next character would pass the limit.
                        let next = readable[tail.len()..].chars().next();
                        prop_assert!(next.is_none_or(|c| tail.len() + c.len_utf8() > READABLE_TAIL_MAX));
                    }
                }
                prop_assert!(!name.chars().any(char::is_control) && name.len() <= NAME_MAX);
            }
        }
    }

    proptest::proptest! {
        /// Keys in S3's order, one at a time: the same renames as `place_all`.
        #[test]
        fn prefix_conflicts_found_in_a_stream_are_place_all_s(
            names in proptest::collection::btree_set("[ab/.!-]{1,6}", 0..200),
            markers in proptest::collection::vec(proptest::bool::ANY, 200),
        ) {
            let keys: Vec<(String, u64)> = names
                .iter()
                .zip(&markers)
                .map(|(k, empty)| (k.clone(), u64::from(!*empty || !k.ends_with('/'))))
                .collect();
            let placements = place_all(keys.iter().map(|(k, s)| (k.as_str(), *s)));
            let expected: std::collections::BTreeSet<Vec<u8>> = keys
                .iter()
                .zip(&placements)
                .filter(|(_, p)| matches!(p, Placement::Renamed { reason: RenameReason::PrefixConflict, .. }))
                .map(|((k, _), _)| k.as_bytes().to_vec())
                .collect();
            let mut found = std::collections::BTreeSet::new();
            let mut conflicts = PrefixConflicts::new();
            for (key, size) in &keys {
                conflicts.push(key, *size, |k| {
                    found.insert(k);
                });
            }
            proptest::prop_assert_eq!(found, expected);
        }
    }
}
