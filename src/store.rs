//! The object-store boundary: the project's own types for keys, ETags and object
//! metadata, and the trait every S3 backend implements. Nothing past this module
//! sees an SDK type.

mod archive;
mod error;
#[cfg(any(test, feature = "test-util"))]
pub mod failing;
#[cfg(any(test, feature = "test-util"))]
pub mod memory;
pub mod multipart;
pub mod raw_bytes;
pub mod split;

pub use archive::{RestoreAnswer, RestoreRequest, RestoreState, RetrievalTier, StorageClass};
pub use error::{
    ArchivedObject, BodyError, BoxError, ProtocolError, ServerFailure, StoreError,
    UnexpectedFailure,
};

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::time::SystemTime;

use bytes::Bytes;

/// A boxed future, so the store trait stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An S3 object key, byte for byte as S3 holds it (never normalized).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

impl Key {
    /// Wraps a key; S3 keys are never empty.
    pub fn new(key: impl Into<String>) -> Result<Key, EmptyKey> {
        let key = key.into();
        if key.is_empty() {
            return Err(EmptyKey);
        }
        Ok(Key(key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether S3 holds this key as valid UTF-8 (see `raw_bytes` for the others).
    pub fn is_utf8(&self) -> bool {
        !raw_bytes::has_raw_bytes(&self.0)
    }
}

impl From<Key> for String {
    fn from(key: Key) -> String {
        key.0
    }
}

/// The one way a key can be invalid: S3 has no object named "".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("empty object key")]
pub struct EmptyKey;

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Escaped(&self.0).fmt(f)
    }
}

/// Shows a key (or any text that came from S3) with control characters escaped,
/// so a hostile key never reaches a terminal raw: how keys appear in messages.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Debug escaping, without its surrounding quotes; the bytes of a key that
        // is not UTF-8 as `\xNN`.
        let mut rest = self.0;
        while let Some(at) = rest.find(|c| raw_bytes::raw_byte(c).is_some()) {
            let (text, tail) = rest.split_at(at);
            let escaped = format!("{text:?}");
            f.write_str(&escaped[1..escaped.len() - 1])?;
            let c = tail.chars().next().expect("found above");
            write!(f, "\\x{:02x}", raw_bytes::raw_byte(c).expect("found above"))?;
            rest = &tail[c.len_utf8()..];
        }
        let escaped = format!("{rest:?}");
        f.write_str(&escaped[1..escaped.len() - 1])
    }
}

/// An entity tag, kept in S3's quoted form (`"abc"`, `"abc-3"`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ETag(String);

impl ETag {
    /// Normalizes to the quoted form S3 uses on the wire.
    pub fn new(raw: &str) -> ETag {
        let trimmed = raw.trim();
        if trimmed.len() >= 2 && trimmed.starts_with('"') && trimmed.ends_with('"') {
            ETag(trimmed.to_string())
        } else {
            ETag(format!("\"{trimmed}\""))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the ETag has the form of a plain MD5 (32 hex digits, no `-N` part
    /// count): what S3 gives single-part objects unless they use SSE-KMS or SSE-C.
    pub fn looks_like_md5(&self) -> bool {
        let inner = self.0.trim_matches('"');
        inner.len() == 32 && inner.bytes().all(|b| b.is_ascii_hexdigit())
    }
}

impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a listing says about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: Key,
    pub size: u64,
    pub etag: ETag,
    pub last_modified: SystemTime,
    /// The storage class the listing shows.
    pub storage_class: StorageClass,
    /// The listing's restore status of an archived object (`NotRestored` when it says none).
    pub restore: RestoreState,
}

impl ObjectMeta {
    /// Whether the listing already tells that a GET fails until the object is
    /// restored: Glacier Flexible Retrieval or Deep Archive without a restored copy.
    pub fn archived(&self) -> bool {
        self.storage_class.needs_restore() && self.restore != RestoreState::Restored
    }
}

/// One page of a ListObjectsV2 listing.
#[derive(Debug, Default)]
pub struct ListPage {
    pub objects: Vec<ObjectMeta>,
    /// Common prefixes (only when listing with a delimiter), each ending in `/`.
    pub prefixes: Vec<String>,
    /// Continuation token for the next page, if any.
    pub next: Option<String>,
}

/// A GET, optionally ranged and pinned to an ETag.
#[derive(Clone, Debug)]
pub struct GetRequest {
    pub key: Key,
    pub range: Option<Range<u64>>,
    pub if_match: Option<ETag>,
}

/// The head of a GET response; the bytes follow through `body`.
pub struct GetResponse {
    pub etag: ETag,
    pub last_modified: SystemTime,
    /// Size of the whole object, not of this range.
    pub object_size: u64,
    /// Offset of the first body byte within the object.
    pub start: u64,
    /// Number of body bytes promised by the server.
    pub content_length: u64,
    /// Whether the ETag is the hex MD5 of the whole object (a single-part upload
    /// without SSE-KMS or SSE-C), so the bytes can be checked against it.
    pub etag_is_md5: bool,
    pub body: Box<dyn Body>,
}

/// A response body delivered in chunks.
pub trait Body: Send {
    /// The next chunk, or `None` at the end of the body.
    fn next_chunk(&mut self) -> BoxFuture<'_, Result<Option<Bytes>, StoreError>>;
}

/// Read access to one bucket.
pub trait ObjectStore: Send + Sync + 'static {
    /// The bucket this store reads.
    fn bucket(&self) -> &str;

    /// One page of objects under `prefix`; with `delimited`, grouped at the next `/`.
    fn list_page(
        &self,
        prefix: &str,
        delimited: bool,
        token: Option<String>,
    ) -> BoxFuture<'_, Result<ListPage, StoreError>>;

    /// One page of objects under `prefix` whose keys sort after `start_after`
    /// (S3's `StartAfter`), at most `max_keys`; `list_page` with the page's token
    /// goes on from there. Without a store of its own way, the pages before are
    /// listed and skipped.
    fn list_after(
        &self,
        prefix: &str,
        start_after: &str,
        max_keys: u32,
    ) -> BoxFuture<'_, Result<ListPage, StoreError>> {
        let _ = max_keys;
        let (prefix, after) = (prefix.to_string(), start_after.to_string());
        Box::pin(async move {
            let mut token = None;
            loop {
                let mut page = self.list_page(&prefix, false, token).await?;
                let skip = page
                    .objects
                    .iter()
                    .take_while(|o| {
                        raw_bytes::bytes_of(o.key.as_str()).as_ref() <= after.as_bytes()
                    })
                    .count();
                if skip < page.objects.len() || page.next.is_none() {
                    page.objects.drain(..skip);
                    return Ok(page);
                }
                token = page.next;
            }
        })
    }

    /// The first page of at most `max_keys` entries under `prefix`, grouped at
    /// the next `/`: enough to tell what one name is without listing its
    /// whole directory. A store that cannot limit a page answers a whole one.
    fn list_first(
        &self,
        prefix: &str,
        max_keys: u32,
    ) -> BoxFuture<'_, Result<ListPage, StoreError>> {
        let _ = max_keys;
        self.list_page(prefix, true, None)
    }

    /// Starts a GET; the body is read through the response.
    fn get(&self, request: GetRequest) -> BoxFuture<'_, Result<GetResponse, StoreError>>;

    /// Whether `key` can be read now or must be restored first (a HEAD).
    fn restore_state(&self, key: &Key) -> BoxFuture<'_, Result<RestoreState, StoreError>>;

    /// Asks S3 to restore the archived object `key`.
    fn request_restore(
        &self,
        key: &Key,
        request: &RestoreRequest,
    ) -> BoxFuture<'_, Result<RestoreAnswer, StoreError>>;
}

/// Lists every object under `prefix`, following all pages.
pub async fn list_all(
    store: &dyn ObjectStore,
    prefix: &str,
) -> Result<Vec<ObjectMeta>, StoreError> {
    let mut objects = Vec::new();
    let mut token = None;
    loop {
        let page = store.list_page(prefix, false, token).await?;
        objects.extend(page.objects);
        match page.next {
            Some(next) => token = Some(next),
            None => return Ok(objects),
        }
    }
}

/// Decodes a key S3 returned with `encoding-type=url` (`+` is a space, `%XX` a
/// byte); bytes that are not UTF-8 take their text form (`raw_bytes`).
pub fn decode_url_key(encoded: &str) -> Result<String, ProtocolError> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| ProtocolError::MalformedKey {
                        encoded: encoded.to_string(),
                    })?;
                out.push(hex);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(raw_bytes::text_from_bytes(out))
}

/// Server-side encryption an upload asks S3 for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encryption {
    /// SSE-S3 (`AES256`).
    S3Managed,
    /// SSE-KMS, with the account's default key unless one is named.
    Kms { key_id: Option<String> },
}

/// How an object is written.
#[derive(Clone, Debug, Default)]
pub struct PutOptions {
    pub encryption: Option<Encryption>,
}

/// A multipart upload in progress, as S3 named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadId(pub String);

/// One uploaded part: its number (from 1) and the ETag S3 gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartTag {
    pub number: u32,
    pub etag: ETag,
}

/// Write access to one bucket: the other direction of `ObjectStore`, for restoring
/// the mirror and uploading archives.
pub trait ObjectSink: Send + Sync + 'static {
    /// The bucket this sink writes.
    fn bucket(&self) -> &str;

    /// Writes a whole object in one request; returns its ETag.
    fn put(
        &self,
        key: Key,
        data: Bytes,
        options: PutOptions,
    ) -> BoxFuture<'_, Result<ETag, StoreError>>;

    /// Starts a multipart upload.
    fn create_multipart(
        &self,
        key: Key,
        options: PutOptions,
    ) -> BoxFuture<'_, Result<UploadId, StoreError>>;

    /// Uploads part `number` (from 1); returns the part's ETag.
    fn upload_part(
        &self,
        key: Key,
        upload: UploadId,
        number: u32,
        data: Bytes,
    ) -> BoxFuture<'_, Result<ETag, StoreError>>;

    /// Makes the object whole from its parts; returns its ETag.
    fn complete_multipart(
        &self,
        key: Key,
        upload: UploadId,
        parts: Vec<PartTag>,
    ) -> BoxFuture<'_, Result<ETag, StoreError>>;

    /// Drops an unfinished upload and the parts S3 holds for it.
    fn abort_multipart(&self, key: Key, upload: UploadId) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Deletes an object (no error if it is already gone).
    fn delete(&self, key: Key) -> BoxFuture<'_, Result<(), StoreError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_url_encoded_keys() {
        assert_eq!(decode_url_key("a+b%2Bc").unwrap(), "a b+c");
        assert_eq!(decode_url_key("%2E%2E/x").unwrap(), "../x");
        assert_eq!(decode_url_key("caf%C3%A9").unwrap(), "café");
        assert_eq!(decode_url_key("%0A").unwrap(), "\n");
        let malformed = |encoded: &str| ProtocolError::MalformedKey {
            encoded: encoded.to_string(),
        };
        assert_eq!(decode_url_key("%zz"), Err(malformed("%zz")));
        assert_eq!(decode_url_key("%4"), Err(malformed("%4")));
        let odd = decode_url_key("a%FFz").unwrap();
        assert!(!Key::new(odd.as_str()).unwrap().is_utf8());
        assert_eq!(raw_bytes::bytes_of(&odd).as_ref(), b"a\xffz");
        assert_eq!(Escaped(&odd).to_string(), "a\\xffz");
    }

    #[test]
    fn etags_are_quoted() {
        assert_eq!(ETag::new("abc").as_str(), "\"abc\"");
        assert_eq!(ETag::new("\"abc-2\"").as_str(), "\"abc-2\"");
        assert!(ETag::new("5d41402abc4b2a76b9719d911017c592").looks_like_md5());
        assert!(!ETag::new("\"5d41402abc4b2a76b9719d911017c592-2\"").looks_like_md5());
        assert!(!ETag::new("abc").looks_like_md5());
    }

    #[test]
    fn key_display_escapes_control_characters() {
        assert_eq!(Key::new("a\nb").unwrap().to_string(), "a\\nb");
        assert_eq!(Escaped("a\u{1b}[31m").to_string(), "a\\u{1b}[31m");
        assert_eq!(Escaped("").to_string(), "");
        assert_eq!(Key::new(""), Err(EmptyKey));
    }
}
