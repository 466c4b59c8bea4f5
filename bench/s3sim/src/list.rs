//! ListObjectsV2 and ListObjects (V1): a page costs a few binary searches plus its own
//! entries, whatever the size of the bucket.

use crate::data::{Bucket, Meta};
use crate::enc::{self, xml};

pub const MAX_KEYS: usize = 1000;

/// Where a page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum From {
    /// The first key after this one (start-after, marker).
    After(String),
    /// The first key after everything under this common prefix (V2 continuation tokens).
    PastPrefix(String),
}

#[derive(Debug, Clone)]
pub struct Query {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub from: Option<From>,
    pub max_keys: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Key(u64),
    Prefix(String),
}

#[derive(Debug)]
pub struct Page {
    pub entries: Vec<Entry>,
    pub truncated: bool,
}

/// The first position with a key that is neither before `cp` nor under it.
fn past_prefix(b: &Bucket, cp: &str) -> u64 {
    b.seek(|k| k < cp || k.starts_with(cp))
}

pub fn list(b: &Bucket, q: &Query) -> Page {
    let p = q.prefix.as_str();
    if q.max_keys == 0 {
        return Page {
            entries: Vec::new(),
            truncated: false,
        };
    }
    let mut pos = b.seek(|k| k < p);
    match &q.from {
        Some(From::After(a)) => pos = pos.max(b.seek(|k| k <= a.as_str())),
        Some(From::PastPrefix(cp)) => pos = pos.max(past_prefix(b, cp)),
        None => {}
    }
    let mut entries = Vec::new();
    let delim = q.delimiter.as_deref().filter(|d| !d.is_empty());
    while pos < b.len() {
        let key = b.key(pos);
        if !key.starts_with(p) {
            break;
        }
        let cp = delim.and_then(|d| {
            key[p.len()..]
                .find(d)
                .map(|j| key[..p.len() + j + d.len()].to_string())
        });
        match cp {
            // A marker equal to a common prefix is where the previous V1 page ended.
            Some(cp) if matches!(&q.from, Some(From::After(a)) if *a == cp) => {
                pos = past_prefix(b, &cp);
                continue;
            }
            _ if entries.len() == q.max_keys => break,
            Some(cp) => {
                pos = past_prefix(b, &cp);
                entries.push(Entry::Prefix(cp));
            }
            None => {
                entries.push(Entry::Key(pos));
                pos += 1;
            }
        }
    }
    let truncated = pos < b.len() && b.key(pos).starts_with(p);
    Page { entries, truncated }
}

/// A V2 continuation token: where the next page starts, hex so it is opaque and URL-safe.
pub fn token(e: &Entry, b: &Bucket) -> String {
    match e {
        Entry::Key(pos) => format!("k{}", enc::hex(b.key(*pos).as_bytes())),
        Entry::Prefix(cp) => format!("p{}", enc::hex(cp.as_bytes())),
    }
}

pub fn parse_token(t: &str) -> Option<From> {
    let s = String::from_utf8(enc::unhex(t.get(1..)?)?).ok()?;
    match t.as_bytes().first()? {
        b'k' => Some(From::After(s)),
        b'p' => Some(From::PastPrefix(s)),
        _ => None,
    }
}

/// The request's parameters as a response echoes them.
pub struct Echo {
    pub v2: bool,
    pub url: bool,
    pub start_after: Option<String>,
    pub token: Option<String>,
    pub marker: Option<String>,
    pub max_keys: usize,
}

pub fn xml_page(b: &Bucket, q: &Query, page: &Page, echo: &Echo) -> String {
    let e = |s: &str| {
        if echo.url {
            xml(&enc::url_key(s))
        } else {
            xml(s)
        }
    };
    let mut metas: Vec<Option<Meta>> = Vec::with_capacity(page.entries.len());
    for entry in &page.entries {
        metas.push(match entry {
            Entry::Key(pos) => Some(b.meta(*pos)),
            Entry::Prefix(_) => None,
        });
    }
    let mut x = String::with_capacity(200 + page.entries.len() * 250);
    x.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    x.push_str(&format!(
        "<Name>{}</Name><Prefix>{}</Prefix>",
        xml(&b.name),
        e(&q.prefix)
    ));
    if echo.v2 {
        if let Some(s) = &echo.start_after {
            x.push_str(&format!("<StartAfter>{}</StartAfter>", e(s)));
        }
        if let Some(t) = &echo.token {
            x.push_str(&format!(
                "<ContinuationToken>{}</ContinuationToken>",
                xml(t)
            ));
        }
        if page.truncated
            && let Some(last) = page.entries.last()
        {
            x.push_str(&format!(
                "<NextContinuationToken>{}</NextContinuationToken>",
                token(last, b)
            ));
        }
        x.push_str(&format!("<KeyCount>{}</KeyCount>", page.entries.len()));
    } else {
        x.push_str(&format!(
            "<Marker>{}</Marker>",
            e(echo.marker.as_deref().unwrap_or(""))
        ));
        if page.truncated
            && let Some(last) = page.entries.last()
        {
            let next = match (last, &metas[metas.len() - 1]) {
                (Entry::Prefix(cp), _) => cp.clone(),
                (Entry::Key(_), Some(m)) => m.key.clone(),
                (Entry::Key(pos), None) => b.key(*pos),
            };
            x.push_str(&format!("<NextMarker>{}</NextMarker>", e(&next)));
        }
    }
    x.push_str(&format!("<MaxKeys>{}</MaxKeys>", echo.max_keys));
    if let Some(d) = &q.delimiter {
        x.push_str(&format!("<Delimiter>{}</Delimiter>", e(d)));
    }
    if echo.url {
        x.push_str("<EncodingType>url</EncodingType>");
    }
    x.push_str(&format!("<IsTruncated>{}</IsTruncated>", page.truncated));
    for m in metas.iter().flatten() {
        x.push_str(&format!(
            "<Contents><Key>{}</Key><LastModified>{}</LastModified><ETag>&quot;{}&quot;</ETag><Size>{}</Size><StorageClass>STANDARD</StorageClass></Contents>",
            e(&m.key),
            enc::iso8601(m.modified),
            enc::hex(&m.md5),
            m.size
        ));
    }
    for entry in &page.entries {
        if let Entry::Prefix(cp) = entry {
            x.push_str(&format!(
                "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>",
                e(cp)
            ));
        }
    }
    x.push_str("</ListBucketResult>");
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{KeySet, odd_objects};

    fn bucket() -> Bucket {
        let mut b = Bucket::new("b");
        // a/d0/k00..a/d2/k29 (3 directories of 10), a/top0..a/top2, c/f0..c/f4
        b.add_set(KeySet::parse("30:0:10:a/d{d:1}/k{i:2}").unwrap());
        b.add_set(KeySet::parse("3:0:0:a/top{i:1}").unwrap());
        b.add_set(KeySet::parse("5:0:0:c/f{i:1}").unwrap());
        b.add_stored(odd_objects("odd/"));
        b.seal().unwrap();
        b
    }

    fn names(b: &Bucket, p: &Page) -> Vec<String> {
        p.entries
            .iter()
            .map(|e| match e {
                Entry::Key(pos) => b.key(*pos),
                Entry::Prefix(cp) => cp.clone(),
            })
            .collect()
    }

    fn q(prefix: &str, delim: Option<&str>, from: Option<From>, max: usize) -> Query {
        Query {
            prefix: prefix.into(),
            delimiter: delim.map(Into::into),
            from,
            max_keys: max,
        }
    }

    /// Every entry of a listing, page by page, as a V2 client follows the tokens.
    fn all_v2(b: &Bucket, prefix: &str, delim: Option<&str>, max: usize) -> (Vec<String>, usize) {
        let mut from = None;
        let mut out = Vec::new();
        let mut pages = 0;
        loop {
            let page = list(b, &q(prefix, delim, from, max));
            pages += 1;
            out.extend(names(b, &page));
            if !page.truncated {
                return (out, pages);
            }
            from = parse_token(&token(page.entries.last().unwrap(), b));
        }
    }

    #[test]
    fn pages_across_delimiter_groups_lose_and_repeat_nothing() {
        let b = bucket();
        let (all, pages) = all_v2(&b, "", Some("/"), 1);
        assert_eq!(all, ["a/", "c/", "odd/"]);
        assert_eq!(pages, 3);
        let (all, _) = all_v2(&b, "a/", Some("/"), 2);
        assert_eq!(
            all,
            ["a/d0/", "a/d1/", "a/d2/", "a/top0", "a/top1", "a/top2"]
        );
        for max in 1..8 {
            let (all, _) = all_v2(&b, "a/", None, max);
            assert_eq!(all.len(), 33, "max-keys {max}");
            let (all, _) = all_v2(&b, "a/d1/", Some("/"), max);
            assert_eq!(all.len(), 10);
            assert_eq!(all[0], "a/d1/k10");
        }
    }

    #[test]
    fn truncation_is_exact_at_the_end_of_a_prefix() {
        let b = bucket();
        let page = list(&b, &q("c/", None, None, 5));
        assert_eq!(page.entries.len(), 5);
        assert!(!page.truncated);
        let page = list(&b, &q("a/", Some("/"), None, 5));
        assert!(page.truncated);
    }

    #[test]
    fn start_after_between_and_on_keys() {
        let b = bucket();
        let after = |s: &str| Some(From::After(s.into()));
        // between two keys (a/d1/k15 < "a/d1/k155" < a/d1/k16)
        let page = list(&b, &q("a/d1/", None, after("a/d1/k155"), 2));
        assert_eq!(names(&b, &page), ["a/d1/k16", "a/d1/k17"]);
        // on a key
        let page = list(&b, &q("a/", None, after("a/d2/k29"), 100));
        assert_eq!(names(&b, &page), ["a/top0", "a/top1", "a/top2"]);
        // before the prefix, and past it
        let page = list(&b, &q("c/", None, after("a"), 100));
        assert_eq!(page.entries.len(), 5);
        let page = list(&b, &q("c/", None, after("d"), 100));
        assert!(page.entries.is_empty() && !page.truncated);
        // a V1 marker that is a common prefix skips that group; one inside a group does not
        let page = list(&b, &q("a/", Some("/"), after("a/d1/"), 100));
        assert_eq!(names(&b, &page)[0], "a/d2/");
        let page = list(&b, &q("a/", Some("/"), after("a/d1/k13"), 100));
        assert_eq!(names(&b, &page)[0], "a/d1/");
    }

    #[test]
    fn url_encoding_of_odd_keys_and_prefixes() {
        let b = bucket();
        let query = q("odd/", Some("/"), None, 1000);
        let page = list(&b, &query);
        let echo = Echo {
            v2: true,
            url: true,
            start_after: None,
            token: None,
            marker: None,
            max_keys: 1000,
        };
        let x = xml_page(&b, &query, &page, &echo);
        assert!(x.contains("<Key>odd/with+space.txt</Key>"), "{x}");
        assert!(x.contains("<Key>odd/plus%2Bsign.txt</Key>"));
        assert!(x.contains("<Key>odd/percent%2541.txt</Key>"));
        assert!(x.contains("<Prefix>odd/dir+with+space/</Prefix>"));
        assert!(x.contains("<Prefix>odd/%C3%BCn%C3%AFc%C3%B6d%C3%A9/</Prefix>"));
        assert!(x.contains("<KeyCount>11</KeyCount>"));
        assert!(x.contains("<EncodingType>url</EncodingType>"));
        let plain = xml_page(&b, &query, &page, &Echo { url: false, ..echo });
        assert!(plain.contains("<Key>odd/amp&amp;lt&lt;gt&gt;quote&quot;apos&apos;.txt</Key>"));
    }

    #[test]
    fn zero_max_keys_and_bad_tokens() {
        let b = bucket();
        let page = list(&b, &q("", None, None, 0));
        assert!(page.entries.is_empty() && !page.truncated);
        assert_eq!(parse_token("zz"), None);
        assert_eq!(parse_token("k61"), Some(From::After("a".into())));
    }
}
