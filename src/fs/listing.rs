//! Directory listings for the filesystem: one delimited LIST per directory, cached
//! for the metadata TTL, persisted under `.s3mirrorfs/listings/` so a restart or an
//! outage still has them, and rebuilt from the mirror itself as a last resort.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::layout::{NAME_MAX, STATE_DIR};
use crate::mirror::Mirror;
use crate::store::{Escaped, ObjectMeta, ObjectStore, StorageClass, StoreError};

/// Keys asked for by the LIST that tells what one name is.
pub const NAME_LIST_KEYS: u32 = 8;

/// One child of a directory, kept small: the listings and the inodes of a
/// directory of a million names live in memory. An ETag of the MD5 form is kept
/// as its 16 bytes, a storage class as one byte; anything else (a multipart or
/// encrypted object's ETag, a class this tool has no name for) in a box of its
/// own. Saved listings keep the plain form (`Saved`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Saved", into = "Saved")]
pub struct Entry {
    pub name: Box<str>,
    pub size: u64,
    /// LastModified, nanoseconds since the epoch.
    pub mtime_ns: u64,
    tag: Tag,
    /// The storage class as `StorageClass::as_byte` gives it, unless `tag`
    /// holds it (`Tag::Rare`).
    class: u8,
    pub dir: bool,
    /// The listing says a GET cannot read it until it is restored.
    pub archived: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tag {
    /// No ETag (a directory, or an object listed without one).
    None,
    /// `"` and 32 lowercase hex digits and `"`, as its 16 bytes.
    Md5([u8; 16]),
    Rare(Box<Rare>),
}

/// What does not fit the compact form, as the listing showed it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rare {
    etag: String,
    class: StorageClass,
}

/// The byte of the class of a directory, and of an entry whose class `Tag::Rare` holds.
const STANDARD: u8 = match StorageClass::Standard.as_byte() {
    Some(byte) => byte,
    None => panic!("STANDARD has a byte"),
};

/// The 16 bytes of an ETag of the form `"<32 lowercase hex digits>"`, which
/// give that very text back.
fn md5_of(etag: &str) -> Option<[u8; 16]> {
    let hex = etag.strip_prefix('"')?.strip_suffix('"')?.as_bytes();
    if hex.len() != 32 {
        return None;
    }
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

impl Entry {
    /// A subdirectory.
    pub fn dir(name: &str) -> Entry {
        Entry {
            name: name.into(),
            size: 0,
            mtime_ns: 0,
            tag: Tag::None,
            class: STANDARD,
            dir: true,
            archived: false,
        }
    }

    /// A file of `size` bytes with `etag` (as S3 gives it, quoted).
    pub fn file(
        name: &str,
        size: u64,
        etag: &str,
        mtime_ns: u64,
        class: &StorageClass,
        archived: bool,
    ) -> Entry {
        let (tag, class) = match (etag, md5_of(etag), class.as_byte()) {
            ("", _, Some(class)) => (Tag::None, class),
            (_, Some(md5), Some(class)) => (Tag::Md5(md5), class),
            (etag, _, _) => {
                let rare = Rare {
                    etag: etag.to_string(),
                    class: class.clone(),
                };
                (Tag::Rare(Box::new(rare)), STANDARD)
            }
        };
        Entry {
            name: name.into(),
            size,
            mtime_ns,
            tag,
            class,
            dir: false,
            archived,
        }
    }

    pub fn mtime(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(self.mtime_ns)
    }

    /// The ETag as S3 gave it ("" for none).
    pub fn etag(&self) -> String {
        match &self.tag {
            Tag::None => String::new(),
            Tag::Md5(md5) => {
                let hex: String = md5.iter().map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            }
            Tag::Rare(rare) => rare.etag.clone(),
        }
    }

    /// The storage class the listing shows.
    pub fn storage_class(&self) -> StorageClass {
        match &self.tag {
            Tag::Rare(rare) => rare.class.clone(),
            _ => StorageClass::from_byte(self.class).expect("set from StorageClass::as_byte"),
        }
    }

    /// About how many bytes of memory the entry takes, its heap parts included.
    pub fn weight(&self) -> usize {
        let rare = match &self.tag {
            Tag::Rare(rare) => std::mem::size_of::<Rare>() + rare.etag.len(),
            _ => 0,
        };
        // The allocator rounds each block up and adds a word of its own.
        let block = |len: usize| {
            if len == 0 {
                0
            } else {
                (len + 8).div_ceil(16) * 16
            }
        };
        std::mem::size_of::<Entry>() + block(self.name.len()) + block(rare)
    }
}

/// An entry as saved listings (and older versions) write it.
#[derive(Clone, Serialize, Deserialize)]
struct Saved {
    name: String,
    dir: bool,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    etag: String,
    #[serde(default)]
    mtime_ns: u64,
    #[serde(default, skip_serializing_if = "StorageClass::is_standard")]
    storage_class: StorageClass,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    archived: bool,
}

impl From<Saved> for Entry {
    fn from(saved: Saved) -> Entry {
        let Saved {
            name,
            dir,
            size,
            etag,
            mtime_ns,
            storage_class,
            archived,
        } = saved;
        match dir {
            true => Entry::dir(&name),
            false => Entry::file(&name, size, &etag, mtime_ns, &storage_class, archived),
        }
    }
}

impl From<Entry> for Saved {
    fn from(entry: Entry) -> Saved {
        Saved {
            etag: entry.etag(),
            storage_class: entry.storage_class(),
            name: entry.name.into(),
            dir: entry.dir,
            size: entry.size,
            mtime_ns: entry.mtime_ns,
            archived: entry.archived,
        }
    }
}

/// Whether `name` can be shown as one directory entry.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= NAME_MAX
        && !name.contains(['/', '\0'])
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Lists the children of `prefix` (which is "" or ends in `/`), all pages. A name
/// that is both an object and a prefix is shown as the directory.
pub async fn list_dir(store: &dyn ObjectStore, prefix: &str) -> Result<Vec<Entry>, StoreError> {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    let mut token = None;
    loop {
        let page = store.list_page(prefix, true, token).await?;
        for common in page.prefixes {
            let name = common[prefix.len()..].trim_end_matches('/');
            if common[prefix.len()..].matches('/').count() == 1 && valid_name(name) {
                dirs.push(dir_entry(name));
            }
        }
        for object in page.objects {
            let name = &object.key.as_str()[prefix.len()..];
            if valid_name(name) {
                files.push(file_entry(name, &object));
            }
        }
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    let dir_names: std::collections::HashSet<&str> = dirs.iter().map(|d| &*d.name).collect();
    files.retain(|f| !dir_names.contains(&*f.name));
    drop(dir_names);
    // Into the longer of the two (the files, in a big directory), then no
    // spare room: the listing may be kept for long.
    files.append(&mut dirs);
    files.sort_by(|a, b| a.name.cmp(&b.name));
    files.dedup_by(|a, b| a.name == b.name);
    files.shrink_to_fit();
    Ok(files)
}

fn dir_entry(name: &str) -> Entry {
    Entry::dir(name)
}

fn file_entry(name: &str, object: &ObjectMeta) -> Entry {
    let (etag, class) = (object.etag.as_str(), &object.storage_class);
    let mtime_ns = nanos(object.last_modified);
    Entry::file(name, object.size, etag, mtime_ns, class, object.archived())
}

/// What `name` (a valid name) is in directory `prefix`, without listing the
/// directory: one LIST of at most `NAME_LIST_KEYS` keys under `prefix + name`,
/// and a second of one key under `prefix + name + "/"` only when the first was
/// cut short before it could show that prefix. As in `list_dir`, a directory
/// wins over an object of the same name.
pub async fn list_name(
    store: &dyn ObjectStore,
    prefix: &str,
    name: &str,
) -> Result<Option<Entry>, StoreError> {
    let key = format!("{prefix}{name}");
    let below = format!("{key}/");
    let page = store.list_first(&key, NAME_LIST_KEYS).await?;
    let dir = match page.prefixes.contains(&below) {
        true => true,
        false if page.next.is_none() => false,
        false => {
            let inside = store.list_first(&below, 1).await?;
            !inside.objects.is_empty() || !inside.prefixes.is_empty()
        }
    };
    if dir {
        return Ok(Some(dir_entry(name)));
    }
    let file = page.objects.iter().find(|o| o.key.as_str() == key);
    Ok(file.map(|object| file_entry(name, object)))
}

/// A saved listing not written again for this long (its directory neither read
/// nor listed ahead, or gone from S3) is removed when a mount starts.
pub const SAVED_LISTING_KEEP: Duration = Duration::from_secs(90 * 24 * 3600);

/// zstd level of saved listings: fast, and names of one directory compress well.
const SAVED_LEVEL: i32 = 3;

/// The saved listing's name in the state directory, zstd-compressed JSON, and
/// the name of the plain JSON form older versions wrote.
fn cache_names(bucket: &str, prefix: &str) -> (String, String) {
    let digest = Sha256::digest(format!("{bucket}\0{prefix}").as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    (
        format!("listings/{hex}.json.zst"),
        format!("listings/{hex}.json"),
    )
}

#[derive(Deserialize)]
struct Persisted {
    prefix: String,
    /// When S3 gave this listing, milliseconds since the epoch.
    #[serde(default)]
    fetched_ms: u64,
    entries: Vec<Entry>,
}

/// `Persisted` as it is written, borrowing the listing rather than copying it.
#[derive(Serialize)]
struct ToPersist<'a> {
    prefix: &'a str,
    fetched_ms: u64,
    entries: &'a [Entry],
}

/// Saves a listing for restarts and outages, compressed, in place of any plain
/// JSON form an older version saved (best effort: it is a cache).
pub fn persist(mirror: &Mirror, bucket: &str, prefix: &str, entries: &[Entry]) {
    let listing = ToPersist {
        prefix,
        fetched_ms: nanos(SystemTime::now()) / 1_000_000,
        entries,
    };
    let (name, legacy) = cache_names(bucket, prefix);
    let written = compress(&listing).and_then(|body| {
        mirror
            .write_cache_file(&name, &body)
            .map_err(std::io::Error::other)
    });
    match written {
        Ok(()) => {
            let _ = mirror.remove_state_file(&legacy);
        }
        Err(e) => tracing::debug!(prefix = %Escaped(prefix), "cannot persist listing: {e}"),
    }
}

/// The listing as zstd-compressed JSON. Told the exact size first, zstd sizes its
/// tables to the listing (a few KiB for a small directory) rather than preparing
/// ~1 MiB of them for input of unknown size, in a daemon streaming files meanwhile.
fn compress(listing: &ToPersist<'_>) -> std::io::Result<Vec<u8>> {
    let mut size = Counted(0);
    serde_json::to_writer(&mut size, listing)?;
    let mut encoder = zstd::Encoder::new(Vec::new(), SAVED_LEVEL)?;
    encoder.set_pledged_src_size(Some(size.0))?;
    serde_json::to_writer(&mut encoder, listing)?;
    encoder.finish()
}

/// A writer that only counts what it is given.
struct Counted(u64);

impl std::io::Write for Counted {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The persisted listing of `prefix`, if any, with its age.
pub fn load(mirror: &Mirror, bucket: &str, prefix: &str) -> Option<(Vec<Entry>, Duration)> {
    let (name, legacy) = cache_names(bucket, prefix);
    let persisted: Persisted = match mirror.open_state_file(&name) {
        Ok(file) => serde_json::from_reader(zstd::Decoder::new(file).ok()?).ok()?,
        Err(_) => serde_json::from_slice(&mirror.read_state_file(&legacy).ok()?).ok()?,
    };
    let fetched = SystemTime::UNIX_EPOCH + Duration::from_millis(persisted.fetched_ms);
    let age = SystemTime::now()
        .duration_since(fetched)
        .unwrap_or(Duration::MAX);
    (persisted.prefix == prefix).then_some((persisted.entries, age))
}

/// Removes the saved listings (either form) last written more than `keep` ago;
/// returns how many. Best effort: they are a cache.
pub fn sweep(mirror: &Mirror, keep: Duration) -> usize {
    let listings = Path::new(STATE_DIR).join("listings");
    let Ok(items) = mirror.read_dir(&listings) else {
        return 0;
    };
    let old = |rel: &Path| {
        let written = mirror.metadata(rel).and_then(|m| m.modified());
        written.is_ok_and(|t| t.elapsed().is_ok_and(|age| age > keep))
    };
    let saved = |item: &crate::sys::beneath::Entry| {
        let name = item.name.to_string_lossy();
        name.ends_with(".json") || name.ends_with(".json.zst")
    };
    items
        .iter()
        .filter(|item| saved(item))
        .map(|item| format!("listings/{}", item.name.to_string_lossy()))
        .filter(|name| old(&Path::new(STATE_DIR).join(name)))
        .filter(|name| mirror.remove_state_file(name).is_ok())
        .count()
}

/// Rebuilds a listing of `prefix` from the mirrored files: directories, and files
/// whose record names a key directly under the prefix.
pub fn from_mirror(mirror: &Mirror, prefix: &str) -> Option<Vec<Entry>> {
    let dir = Path::new(prefix.trim_end_matches('/'));
    let mut entries = Vec::new();
    for item in mirror.read_dir(dir).ok()? {
        let Some(name) = item.name.to_str().map(str::to_string) else {
            continue;
        };
        if prefix.is_empty() && name == STATE_DIR {
            continue;
        }
        let rel = dir.join(&item.name);
        let Ok(meta) = mirror.metadata(&rel) else {
            continue;
        };
        if meta.is_dir() {
            entries.push(dir_entry(&name));
        } else if let Some(record) = mirror.record_at(&rel)
            && record.key.as_str() == format!("{prefix}{name}")
        {
            let mtime_ns = meta.modified().map_or(0, nanos);
            let (size, etag) = (record.size, record.etag.as_str());
            let standard = &StorageClass::Standard;
            entries.push(Entry::file(&name, size, etag, mtime_ns, standard, false));
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Some(entries)
}

/// Listings being fetched right now, so a reader waits for one already on its
/// way (from a look-ahead) instead of sending the same LIST again.
#[derive(Default)]
pub struct InFlight {
    map: Mutex<HashMap<String, Arc<Flight>>>,
}

#[derive(Default)]
struct Flight {
    done: Mutex<bool>,
    landed: Condvar,
}

/// Marks one listing as in flight until dropped.
pub struct FlightGuard {
    owner: Arc<InFlight>,
    prefix: String,
    flight: Arc<Flight>,
}

impl InFlight {
    /// Claims `prefix`; `None` if another listing of it is already on its way.
    pub fn begin(self: &Arc<Self>, prefix: &str) -> Option<FlightGuard> {
        let mut map = self.map.lock();
        if map.contains_key(prefix) {
            return None;
        }
        let flight = Arc::new(Flight::default());
        map.insert(prefix.to_string(), Arc::clone(&flight));
        Some(FlightGuard {
            owner: Arc::clone(self),
            prefix: prefix.to_string(),
            flight,
        })
    }

    /// Whether a listing of `prefix` is on its way.
    pub fn contains(&self, prefix: &str) -> bool {
        self.map.lock().contains_key(prefix)
    }

    /// Waits for a listing of `prefix` that is on its way to land (its own
    /// timeouts and retries bound it), so no second one is started meanwhile.
    pub fn wait(&self, prefix: &str) {
        let Some(flight) = self.map.lock().get(prefix).cloned() else {
            return;
        };
        let mut done = flight.done.lock();
        while !*done {
            flight.landed.wait(&mut done);
        }
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.owner.map.lock().remove(&self.prefix);
        *self.flight.done.lock() = true;
        self.flight.landed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[test]
    fn a_listing_in_flight_is_waited_for_once() {
        let inflight = Arc::new(InFlight::default());
        let guard = inflight.begin("a/").unwrap();
        assert!(inflight.begin("a/").is_none());
        assert!(inflight.contains("a/"));
        let waiter = {
            let inflight = Arc::clone(&inflight);
            std::thread::spawn(move || inflight.wait("a/"))
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(!waiter.is_finished(), "it waits, with no time limit");
        drop(guard);
        waiter.join().unwrap();
        assert!(!inflight.contains("a/"));
        // Nothing in flight: no wait at all.
        inflight.wait("b/");
        assert!(inflight.begin("a/").is_some());
    }

    #[tokio::test]
    async fn directories_win_over_objects_of_the_same_name() {
        let store = MemoryStore::new("b");
        store.put("photo", "file");
        store.put("photo/1.jpg", "x");
        store.put("a.jpg", "x");
        store.put("dir/", "");
        store.put("bad//x", "x");
        store.put("..", "x");
        let entries = list_dir(&store, "").await.unwrap();
        let names: Vec<_> = entries.iter().map(|e| (&*e.name, e.dir)).collect();
        assert_eq!(
            names,
            vec![
                ("a.jpg", false),
                ("bad", true),
                ("dir", true),
                ("photo", true)
            ]
        );
        let inner = list_dir(&store, "dir/").await.unwrap();
        assert!(inner.is_empty(), "the marker itself is not an entry");
        let bad = list_dir(&store, "bad/").await.unwrap();
        assert!(bad.is_empty(), "an empty name is not an entry");
    }

    #[tokio::test]
    async fn one_name_is_told_by_one_small_listing_or_two() {
        let store = MemoryStore::new("b");
        store.put("d/photo", "file");
        store.put("d/photo/1.jpg", "x");
        store.put("d/file", "f");
        for i in 0..20 {
            // Each sorts before "d/crowded/": the first page cannot show it.
            store.put(&format!("d/crowded-{i:02}"), "x");
        }
        store.put("d/crowded/inner", "x");
        store.put("d/marker/", "");
        let lists = || store.lists.load(std::sync::atomic::Ordering::Relaxed);
        let what = |e: Option<Entry>| e.map(|e| (e.dir, e.size));
        assert_eq!(
            what(list_name(&store, "d/", "file").await.unwrap()),
            Some((false, 1))
        );
        assert_eq!(lists(), 1);
        let dir = list_name(&store, "d/", "photo").await.unwrap();
        assert_eq!(what(dir), Some((true, 0)), "the directory wins");
        assert_eq!(
            what(list_name(&store, "d/", "crowded").await.unwrap()),
            Some((true, 0))
        );
        assert_eq!(lists(), 4, "a second LIST when the first was cut short");
        assert_eq!(
            what(list_name(&store, "d/", "marker").await.unwrap()),
            Some((true, 0))
        );
        assert_eq!(list_name(&store, "d/", "fil").await.unwrap(), None);
        assert_eq!(list_name(&store, "d/", "nothing").await.unwrap(), None);
    }

    #[test]
    fn saved_listings_are_compressed_and_replace_the_plain_form() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::open(dir.path(), "b").unwrap();
        let entries: Vec<Entry> = (0..1000)
            .map(|i| {
                let etag = format!("\"{:032x}\"", i * 7919);
                let mtime_ns = 1_700_000_000_000_000_000 + i;
                let class = StorageClass::Standard;
                Entry::file(
                    &format!("IMG_{i:05}.jpg"),
                    1000 + i,
                    &etag,
                    mtime_ns,
                    &class,
                    false,
                )
            })
            .collect();
        let (name, legacy) = cache_names("b", "photos/");
        // What an older version saved is still read...
        let plain = serde_json::to_vec(&ToPersist {
            prefix: "photos/",
            fetched_ms: 0,
            entries: &entries,
        })
        .unwrap();
        mirror.write_cache_file(&legacy, &plain).unwrap();
        let (loaded, _) = load(&mirror, "b", "photos/").unwrap();
        assert_eq!(loaded, entries);
        // ...and replaced by the compressed form at the next save.
        persist(&mirror, "b", "photos/", &entries);
        let state = mirror.state_dir();
        assert!(!state.join(&legacy).exists(), "the plain form is removed");
        let size = std::fs::metadata(state.join(&name)).unwrap().len();
        assert!(size * 4 < plain.len() as u64, "{size} vs {}", plain.len());
        let (loaded, age) = load(&mirror, "b", "photos/").unwrap();
        assert_eq!(loaded, entries);
        assert!(age < Duration::from_secs(60));
        assert!(load(&mirror, "b", "other/").is_none());
    }

    #[test]
    fn saved_listings_not_written_for_long_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Mirror::open(dir.path(), "b").unwrap();
        assert_eq!(sweep(&mirror, SAVED_LISTING_KEEP), 0, "none saved yet");
        persist(&mirror, "b", "old/", &[]);
        persist(&mirror, "b", "new/", &[]);
        let (old, _) = cache_names("b", "old/");
        let path = mirror.state_dir().join(old);
        let long_ago = SystemTime::now() - SAVED_LISTING_KEEP - Duration::from_secs(60);
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(long_ago).unwrap();
        assert_eq!(sweep(&mirror, SAVED_LISTING_KEEP), 1);
        assert!(load(&mirror, "b", "old/").is_none());
        assert!(load(&mirror, "b", "new/").is_some());
    }

    #[test]
    fn entries_are_compact_and_give_back_what_the_listing_said() {
        assert!(
            std::mem::size_of::<Entry>() <= 64,
            "{}",
            std::mem::size_of::<Entry>()
        );
        let md5 = "\"0123456789abcdef0123456789abcdef\"";
        let odd = [
            (md5, StorageClass::Standard),
            (md5, StorageClass::DeepArchive),
            (
                "\"0123456789abcdef0123456789abcdef-3\"",
                StorageClass::Standard,
            ),
            (
                "\"0123456789ABCDEF0123456789ABCDEF\"",
                StorageClass::GlacierIr,
            ),
            (md5, StorageClass::Other("EXPRESS_ONEZONE".into())),
            ("", StorageClass::Standard),
        ];
        for (etag, class) in odd {
            let entry = Entry::file("n", 7, etag, 9, &class, true);
            assert_eq!(
                (entry.etag().as_str(), entry.storage_class()),
                (etag, class.clone())
            );
            let saved = serde_json::to_string(&entry).unwrap();
            assert_eq!(
                serde_json::from_str::<Entry>(&saved).unwrap(),
                entry,
                "{saved}"
            );
        }
        let plain = Entry::file("n", 7, md5, 9, &StorageClass::Standard, false);
        let rare = Entry::file("n", 7, "x", 9, &StorageClass::Standard, false);
        assert!(plain.weight() < rare.weight());
        // The saved form is the one older versions wrote and read.
        let saved = serde_json::to_value(&plain).unwrap();
        let expected =
            serde_json::json!({"name": "n", "dir": false, "size": 7, "etag": md5, "mtime_ns": 9});
        assert_eq!(saved, expected);
        let dir: Entry = serde_json::from_str(r#"{"name":"d","dir":true}"#).unwrap();
        assert_eq!(dir, Entry::dir("d"));
    }

    #[test]
    fn names() {
        assert!(valid_name("a.jpg"));
        assert!(!valid_name(""));
        assert!(!valid_name("."));
        assert!(!valid_name(".."));
        assert!(!valid_name(&"x".repeat(256)));
    }
}
