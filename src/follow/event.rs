//! S3 event notifications as a queue delivers them: S3's own format sent straight
//! to SQS, the same wrapped in an SNS envelope, and EventBridge's `Object Created`
//! / `Object Deleted` events. Pure parsing; what to do about an event is the
//! follower's.

use serde_json::Value;

use crate::store::{ETag, Key};
use crate::utc;

/// What happened to an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Created or overwritten; the ETag and size S3 announced, when it did.
    Created {
        etag: Option<ETag>,
        size: Option<u64>,
    },
    Removed,
}

/// One object event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub bucket: String,
    pub key: Key,
    pub change: Change,
    /// When it happened, in ms since the epoch (0 if the message did not say).
    pub time: u64,
    /// S3's ordering of events on one key (hex; longer is later), when given.
    pub sequencer: Option<String>,
}

/// What a message holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    /// Object events (a message may carry several).
    Events(Vec<Event>),
    /// S3's `s3:TestEvent`, sent when a notification is configured.
    Test,
}

/// Why a message cannot be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not an S3 event notification ({0})")]
    Unknown(&'static str),
    #[error("a record {0}")]
    BadRecord(&'static str),
}

/// Reads one message body.
pub fn parse(body: &str) -> Result<Message, ParseError> {
    let value: Value =
        serde_json::from_str(body).map_err(|e| ParseError::NotJson(e.to_string()))?;
    // SNS wraps the notification, as a JSON string, in `Message`.
    if value.get("Type").and_then(Value::as_str) == Some("Notification") {
        let inner = value
            .get("Message")
            .and_then(Value::as_str)
            .ok_or(ParseError::Unknown("an SNS envelope without a Message"))?;
        return parse(inner);
    }
    if value.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Message::Test);
    }
    if let Some(records) = value.get("Records") {
        let records = records
            .as_array()
            .ok_or(ParseError::Unknown("Records is not a list"))?;
        return records
            .iter()
            .map(notification_record)
            .collect::<Result<_, _>>()
            .map(Message::Events);
    }
    if value.get("source").and_then(Value::as_str) == Some("aws.s3") {
        return eventbridge(&value).map(|e| Message::Events(vec![e]));
    }
    Err(ParseError::Unknown("no Records, no EventBridge source"))
}

/// One record of S3's notification format. Keys come URL-encoded, `+` for a space.
fn notification_record(record: &Value) -> Result<Event, ParseError> {
    let name = str_at(record, &["eventName"]).ok_or(ParseError::BadRecord("has no eventName"))?;
    let s3 = record
        .get("s3")
        .ok_or(ParseError::BadRecord("has no s3 part"))?;
    let bucket = str_at(s3, &["bucket", "name"]).ok_or(ParseError::BadRecord("has no bucket"))?;
    let object = s3
        .get("object")
        .ok_or(ParseError::BadRecord("has no object"))?;
    let encoded = str_at(object, &["key"]).ok_or(ParseError::BadRecord("has no key"))?;
    let key = form_decode(encoded).ok_or(ParseError::BadRecord("has a badly encoded key"))?;
    let change = if name.starts_with("ObjectCreated:") {
        created(object, "eTag")
    } else if name.starts_with("ObjectRemoved:") {
        Change::Removed
    } else {
        return Err(ParseError::BadRecord(
            "is neither ObjectCreated nor ObjectRemoved",
        ));
    };
    Ok(Event {
        bucket: bucket.to_string(),
        key: Key::new(key).map_err(|_| ParseError::BadRecord("has an empty key"))?,
        change,
        time: str_at(record, &["eventTime"])
            .and_then(|t| utc::parse_rfc3339(t).ok())
            .unwrap_or(0),
        sequencer: str_at(object, &["sequencer"]).map(str::to_string),
    })
}

/// An EventBridge event from S3. Its keys are not URL-encoded.
fn eventbridge(value: &Value) -> Result<Event, ParseError> {
    let kind =
        str_at(value, &["detail-type"]).ok_or(ParseError::BadRecord("has no detail-type"))?;
    let detail = value
        .get("detail")
        .ok_or(ParseError::BadRecord("has no detail"))?;
    let bucket =
        str_at(detail, &["bucket", "name"]).ok_or(ParseError::BadRecord("has no bucket"))?;
    let object = detail
        .get("object")
        .ok_or(ParseError::BadRecord("has no object"))?;
    let key = str_at(object, &["key"]).ok_or(ParseError::BadRecord("has no key"))?;
    let change = match kind {
        "Object Created" => created(object, "etag"),
        "Object Deleted" => Change::Removed,
        _ => {
            return Err(ParseError::BadRecord(
                "is neither Object Created nor Object Deleted",
            ));
        }
    };
    Ok(Event {
        bucket: bucket.to_string(),
        key: Key::new(key).map_err(|_| ParseError::BadRecord("has an empty key"))?,
        change,
        time: str_at(value, &["time"])
            .and_then(|t| utc::parse_rfc3339(t).ok())
            .unwrap_or(0),
        sequencer: str_at(object, &["sequencer"]).map(str::to_string),
    })
}

/// A creation, with the ETag (quoted as S3 lists it) and size the event gives.
fn created(object: &Value, etag_field: &str) -> Change {
    let etag = str_at(object, &[etag_field])
        .filter(|e| !e.is_empty())
        .map(|e| match e.starts_with('"') {
            true => ETag::new(e),
            false => ETag::new(&format!("\"{e}\"")),
        });
    Change::Created {
        etag,
        size: object.get("size").and_then(Value::as_u64),
    }
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |v, field| v.get(field))?
        .as_str()
}

/// Decodes `application/x-www-form-urlencoded` text: `+` is a space, `%XX` a byte;
/// `None` if an escape is cut short; bytes that are not UTF-8 take their text
/// form (`store::raw_bytes`).
pub fn form_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(crate::store::raw_bytes::text_from_bytes(out))
}

/// Whether sequencer `a` is later than `b` (S3: compare as hex numbers, the
/// shorter one padded with zeros on the right).
pub fn later(a: &str, b: &str) -> bool {
    let width = a.len().max(b.len());
    let pad = |s: &str| format!("{s:0<width$}").to_ascii_uppercase();
    pad(a) > pad(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, key: &str) -> String {
        format!(
            r#"{{"eventVersion":"2.1","eventSource":"aws:s3","eventTime":"2026-12-03T10:00:00.250Z",
            "eventName":"{name}","s3":{{"bucket":{{"name":"pics"}},
            "object":{{"key":"{key}","size":5,"eTag":"b1946ac92492d2347c6235b4d2611184","sequencer":"0055AED6DCD90281E5"}}}}}}"#
        )
    }

    fn notification(records: &[String]) -> String {
        format!(r#"{{"Records":[{}]}}"#, records.join(","))
    }

    fn events(body: &str) -> Vec<Event> {
        match parse(body).unwrap() {
            Message::Events(events) => events,
            Message::Test => panic!("a test event"),
        }
    }

    #[test]
    fn s3_notifications_decode_keys_and_carry_etag_size_time_and_order() {
        let body = notification(&[
            record("ObjectCreated:Put", "my+photos/caf%C3%A9+%2B%25.jpg"),
            record("ObjectRemoved:Delete", "a%2Fb"),
        ]);
        let got = events(&body);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].key.as_str(), "my photos/caf\u{e9} +%.jpg");
        assert_eq!(got[0].bucket, "pics");
        assert_eq!(
            got[0].change,
            Change::Created {
                etag: Some(ETag::new("\"b1946ac92492d2347c6235b4d2611184\"")),
                size: Some(5)
            }
        );
        assert_eq!(
            got[0].time,
            utc::parse_rfc3339("2026-12-03T10:00:00.250Z").unwrap()
        );
        assert_eq!(got[0].sequencer.as_deref(), Some("0055AED6DCD90281E5"));
        assert_eq!(
            (got[1].key.as_str(), &got[1].change),
            ("a/b", &Change::Removed)
        );
    }

    #[test]
    fn sns_envelopes_test_events_and_eventbridge_events_are_understood() {
        let inner = notification(&[record("ObjectCreated:CompleteMultipartUpload", "k")]);
        let sns = serde_json::json!({"Type": "Notification", "Message": inner}).to_string();
        assert_eq!(events(&sns)[0].key.as_str(), "k");
        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"pics"}"#;
        assert_eq!(parse(test), Ok(Message::Test));
        let bridge = serde_json::json!({
            "version": "0", "detail-type": "Object Created", "source": "aws.s3",
            "time": "2026-12-03T10:00:00Z",
            "detail": {"bucket": {"name": "pics"},
                       "object": {"key": "a b+c%20.jpg", "size": 7, "etag": "abc-2", "sequencer": "01"}}
        })
        .to_string();
        let got = events(&bridge);
        assert_eq!(
            got[0].key.as_str(),
            "a b+c%20.jpg",
            "EventBridge keys are verbatim"
        );
        assert_eq!(
            got[0].change,
            Change::Created {
                etag: Some(ETag::new("\"abc-2\"")),
                size: Some(7)
            }
        );
        let deleted = bridge.replace("Object Created", "Object Deleted");
        assert_eq!(events(&deleted)[0].change, Change::Removed);
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        for body in [
            "",
            "not json",
            "[]",
            "{}",
            r#"{"Records":"x"}"#,
            r#"{"Records":[{}]}"#,
            r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":""}}}]}"#,
            r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"%zz"}}}]}"#,
            r#"{"Records":[{"eventName":"ObjectRestore:Post","s3":{"bucket":{"name":"b"},"object":{"key":"k"}}}]}"#,
            r#"{"Type":"Notification","Message":{"nested":"object"}}"#,
            r#"{"source":"aws.s3","detail-type":"Object Restore Completed","detail":{"bucket":{"name":"b"},"object":{"key":"k"}}}"#,
        ] {
            assert!(parse(body).is_err(), "{body:?}");
        }
    }

    #[test]
    fn a_key_that_is_not_utf8_keeps_its_bytes() {
        let body = r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"a+%C3z%FF","size":1,"eTag":"x"}}}]}"#;
        let got = events(body);
        assert!(!got[0].key.is_utf8());
        let bytes = crate::store::raw_bytes::bytes_of(got[0].key.as_str()).into_owned();
        assert_eq!(bytes, b"a \xc3z\xff");
    }

    #[test]
    fn sequencers_compare_as_padded_hex() {
        assert!(later("0055AED6DCD90281E6", "0055AED6DCD90281E5"));
        assert!(
            !later("0055AED6DCD90281E500", "0055AED6DCD90281E5"),
            "trailing zeros"
        );
        assert!(later("0055AED6DCD90281E501", "0055AED6DCD90281E5"));
        assert!(!later("01", "01"));
        assert!(later("0b", "0A"));
    }
}
