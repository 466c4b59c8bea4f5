//! Keys that are not valid UTF-8. S3 keys are meant to be UTF-8, but an
//! S3-compatible server may hold any bytes. Such a key keeps its valid parts as
//! they are, and each byte that is not valid UTF-8 becomes one character of the
//! last 128 code points of Unicode's Supplementary Private Use Area-B
//! (U+10FF80 + (byte - 0x80)), which no script uses. The mapping is reversible, so
//! the key is still read from S3 byte for byte (the request carries the original
//! bytes), while everything past the store boundary handles it as text.

use std::borrow::Cow;

/// The code point that stands for byte 0x80; bytes 0x80..=0xFF map above it.
const BASE: u32 = 0x10_FF80;

/// The byte that `c` stands for, when it stands for one.
pub fn raw_byte(c: char) -> Option<u8> {
    let code = u32::from(c);
    (code >= BASE).then(|| (code - BASE + 0x80) as u8)
}

/// The text form of a key's bytes: the bytes themselves when they are UTF-8
/// and hold none of the 128 code points that stand for bytes. A real one of
/// those (valid UTF-8, but rare: the end of a private use area) is written as
/// the stand-ins of its own four bytes, so the text always maps back to the
/// key's exact bytes.
pub fn text_from_bytes(bytes: Vec<u8>) -> String {
    let text = match String::from_utf8(bytes) {
        Ok(text) if !has_raw_bytes(&text) => return text,
        Ok(text) => text.into_bytes(),
        Err(e) => e.into_bytes(),
    };
    let mut out = String::with_capacity(text.len() + 8);
    let push_byte = |out: &mut String, b: u8| {
        // Only bytes of multi-byte sequences come here: always in 0x80..=0xFF.
        let c = char::from_u32(BASE + u32::from(b) - 0x80).expect("a valid code point");
        out.push(c);
    };
    for chunk in text.utf8_chunks() {
        for c in chunk.valid().chars() {
            if raw_byte(c).is_some() {
                for &b in c.encode_utf8(&mut [0; 4]).as_bytes() {
                    push_byte(&mut out, b);
                }
            } else {
                out.push(c);
            }
        }
        for &b in chunk.invalid() {
            push_byte(&mut out, b);
        }
    }
    out
}

/// Whether `text` stands for a key that is not UTF-8.
pub fn has_raw_bytes(text: &str) -> bool {
    text.chars().any(|c| raw_byte(c).is_some())
}

/// The key's bytes as S3 holds them.
pub fn bytes_of(text: &str) -> Cow<'_, [u8]> {
    if !has_raw_bytes(text) {
        return Cow::Borrowed(text.as_bytes());
    }
    let mut bytes = Vec::with_capacity(text.len());
    for c in text.chars() {
        match raw_byte(c) {
            Some(b) => bytes.push(b),
            None => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    Cow::Owned(bytes)
}

/// Rewrites a request URI that an HTTP client built from the text form of a key
/// (each character percent-encoded as its UTF-8 bytes) so that it carries the
/// key's own bytes instead. Only the characters that stand for raw bytes change;
/// they never occur in a bucket name, a host or a query the client adds.
pub fn rewrite_uri(uri: &str, key_text: &str) -> String {
    let mut uri = uri.to_string();
    let mut done = Vec::new();
    for c in key_text.chars() {
        let Some(b) = raw_byte(c) else { continue };
        if done.contains(&b) {
            continue;
        }
        done.push(b);
        let mut utf8 = [0; 4];
        let encoded: String = c
            .encode_utf8(&mut utf8)
            .bytes()
            .map(|x| format!("%{x:02X}"))
            .collect();
        let raw = format!("%{b:02X}");
        uri = uri.replace(&encoded, &raw);
        uri = uri.replace(&encoded.to_lowercase(), &raw);
    }
    uri
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_keys_are_unchanged() {
        let text = text_from_bytes("café/ä b.jpg".as_bytes().to_vec());
        assert_eq!(text, "café/ä b.jpg");
        assert!(!has_raw_bytes(&text));
        assert!(matches!(bytes_of(&text), Cow::Borrowed(_)));
    }

    #[test]
    fn invalid_bytes_round_trip() {
        for raw in [
            b"a\xffz".to_vec(),
            b"\x80".to_vec(),
            b"caf\xe9/\xc3\xa9\xc3".to_vec(),
            (0x80..=0xffu8).collect::<Vec<_>>(),
        ] {
            let text = text_from_bytes(raw.clone());
            assert!(has_raw_bytes(&text), "{raw:?}");
            assert_eq!(bytes_of(&text).as_ref(), raw.as_slice());
        }
        // The valid parts stay readable.
        assert!(text_from_bytes(b"caf\xe9/\xc3\xa9".to_vec()).ends_with("/\u{e9}"));
    }

    #[test]
    fn a_real_stand_in_character_keeps_its_own_bytes() {
        // Valid UTF-8 holding the code points that stand for bytes 0x80 and 0xFF.
        for key in ["a\u{10FF80}z", "x/\u{10FFFF}", "\u{10FF80}\u{10FFFF}"] {
            let text = text_from_bytes(key.as_bytes().to_vec());
            assert!(has_raw_bytes(&text), "{key:?}");
            assert_eq!(bytes_of(&text).as_ref(), key.as_bytes(), "{key:?}");
        }
        // Every other character of the private use areas is kept as it is.
        let other = "a\u{10FF7F}\u{F0000}";
        assert_eq!(text_from_bytes(other.as_bytes().to_vec()), other);
    }

    proptest::proptest! {
        /// Any bytes at all: text and back gives the same bytes, and two keys
        /// never share a text form.
        #[test]
        fn any_bytes_round_trip(raw in proptest::collection::vec(proptest::num::u8::ANY, 0..40)) {
            let text = text_from_bytes(raw.clone());
            let back = bytes_of(&text).into_owned();
            proptest::prop_assert_eq!(back, raw);
        }
    }

    #[test]
    fn different_bytes_give_different_text() {
        let texts: std::collections::HashSet<String> = (0x80..=0xffu8)
            .map(|b| text_from_bytes(vec![b'k', b]))
            .collect();
        assert_eq!(texts.len(), 128);
    }

    #[test]
    fn uris_carry_the_raw_bytes() {
        let text = text_from_bytes(b"dir/a\xffz\xff.jpg".to_vec());
        // U+10FFFF in UTF-8 is F4 8F BF BF.
        let built = "http://127.0.0.1:9000/bkt/dir/a%F4%8F%BF%BFz%f4%8f%bf%bf.jpg?x-id=GetObject";
        assert_eq!(
            rewrite_uri(built, &text),
            "http://127.0.0.1:9000/bkt/dir/a%FFz%FF.jpg?x-id=GetObject"
        );
    }
}
