//! Archived objects in the project's own terms: an object's storage class,
//! whether a GET can read it now or it must be restored first, and what a
//! restore request asks for.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An object's storage class, as S3 names it in listings and answers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum StorageClass {
    #[default]
    Standard,
    StandardIa,
    OnezoneIa,
    IntelligentTiering,
    GlacierIr,
    /// S3 Glacier Flexible Retrieval.
    Glacier,
    DeepArchive,
    /// Any class this tool has no name for (`REDUCED_REDUNDANCY`, `EXPRESS_ONEZONE`, ...).
    Other(String),
}

impl StorageClass {
    /// The class S3 calls `name`; an absent class is `STANDARD`.
    pub fn parse(name: &str) -> StorageClass {
        match name {
            "" | "STANDARD" => StorageClass::Standard,
            "STANDARD_IA" => StorageClass::StandardIa,
            "ONEZONE_IA" => StorageClass::OnezoneIa,
            "INTELLIGENT_TIERING" => StorageClass::IntelligentTiering,
            "GLACIER_IR" => StorageClass::GlacierIr,
            "GLACIER" => StorageClass::Glacier,
            "DEEP_ARCHIVE" => StorageClass::DeepArchive,
            other => StorageClass::Other(other.to_string()),
        }
    }

    /// The name S3 uses.
    pub fn as_str(&self) -> &str {
        match self {
            StorageClass::Standard => "STANDARD",
            StorageClass::StandardIa => "STANDARD_IA",
            StorageClass::OnezoneIa => "ONEZONE_IA",
            StorageClass::IntelligentTiering => "INTELLIGENT_TIERING",
            StorageClass::GlacierIr => "GLACIER_IR",
            StorageClass::Glacier => "GLACIER",
            StorageClass::DeepArchive => "DEEP_ARCHIVE",
            StorageClass::Other(name) => name,
        }
    }

    /// Whether a GET of an object of this class fails until the object is
    /// restored, whatever its access tier: Glacier Flexible Retrieval and Deep
    /// Archive. (Intelligent-Tiering objects in an archive tier fail too, but a
    /// listing does not show the tier: only the GET tells.)
    pub fn needs_restore(&self) -> bool {
        matches!(self, StorageClass::Glacier | StorageClass::DeepArchive)
    }

    pub fn is_standard(&self) -> bool {
        *self == StorageClass::Standard
    }

    /// The class in one byte, for records held by the million in memory;
    /// `None` for `Other`, whose name needs room of its own.
    pub const fn as_byte(&self) -> Option<u8> {
        Some(match self {
            StorageClass::Standard => 0,
            StorageClass::StandardIa => 1,
            StorageClass::OnezoneIa => 2,
            StorageClass::IntelligentTiering => 3,
            StorageClass::GlacierIr => 4,
            StorageClass::Glacier => 5,
            StorageClass::DeepArchive => 6,
            StorageClass::Other(_) => return None,
        })
    }

    /// The class `as_byte` gave `byte` for; `None` for a byte it never gives.
    pub const fn from_byte(byte: u8) -> Option<StorageClass> {
        Some(match byte {
            0 => StorageClass::Standard,
            1 => StorageClass::StandardIa,
            2 => StorageClass::OnezoneIa,
            3 => StorageClass::IntelligentTiering,
            4 => StorageClass::GlacierIr,
            5 => StorageClass::Glacier,
            6 => StorageClass::DeepArchive,
            _ => return None,
        })
    }
}

impl From<String> for StorageClass {
    fn from(name: String) -> StorageClass {
        StorageClass::parse(&name)
    }
}

impl From<StorageClass> for String {
    fn from(class: StorageClass) -> String {
        class.as_str().to_string()
    }
}

impl fmt::Display for StorageClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A class named by S3 can be any text; show it like a key.
        super::Escaped(self.as_str()).fmt(f)
    }
}

/// Whether an archived object can be read now, as a listing's `RestoreStatus`
/// or a HEAD's `x-amz-restore` says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RestoreState {
    /// No restore was asked for (or the listing did not say).
    #[default]
    NotRestored,
    /// A restore is on its way; a GET still fails.
    InProgress,
    /// A GET can read it: a restored copy is there, or there was nothing to restore.
    Restored,
}

impl RestoreState {
    /// Parses S3's `x-amz-restore` header (`ongoing-request="true"`, or
    /// `ongoing-request="false", expiry-date="..."` once the copy is there).
    pub fn from_header(value: &str) -> RestoreState {
        let ongoing = value
            .split(',')
            .filter_map(|part| part.split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("ongoing-request"))
            .map(|(_, v)| v.trim().trim_matches('"').to_ascii_lowercase());
        match ongoing.as_deref() {
            Some("true") => RestoreState::InProgress,
            Some("false") => RestoreState::Restored,
            // A header S3 would not send: take it for no restore, so a GET is not tried.
            _ => RestoreState::NotRestored,
        }
    }
}

/// How fast, and at what price, S3 restores an archived object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RetrievalTier {
    /// The cheapest: hours (up to 12 for Glacier, 48 for Deep Archive).
    #[default]
    Bulk,
    Standard,
    /// Minutes, for Glacier Flexible Retrieval and the Intelligent-Tiering Archive tier only.
    Expedited,
}

impl RetrievalTier {
    pub fn as_str(self) -> &'static str {
        match self {
            RetrievalTier::Bulk => "Bulk",
            RetrievalTier::Standard => "Standard",
            RetrievalTier::Expedited => "Expedited",
        }
    }

    /// The tier to ask for an object of `class`: Deep Archive offers no
    /// Expedited retrieval, so it gets Standard instead.
    pub fn for_class(self, class: &StorageClass) -> RetrievalTier {
        match (self, class) {
            (RetrievalTier::Expedited, StorageClass::DeepArchive) => RetrievalTier::Standard,
            (tier, _) => tier,
        }
    }
}

/// A RestoreObject request for one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreRequest {
    /// Days the restored copy stays readable. Intelligent-Tiering takes none (its
    /// object moves back to the Frequent Access tier), so it is not sent for it.
    pub days: u32,
    pub tier: RetrievalTier,
    /// The object's class, as the listing says.
    pub storage_class: StorageClass,
}

/// What S3 answered a restore request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreAnswer {
    /// The restore was started (or a restored copy was already there).
    Requested,
    /// Another restore of the object is on its way (`RestoreAlreadyInProgress`).
    InProgress,
    /// The object is not archived (`ObjectAlreadyInActiveTierError`): a GET reads it.
    NotArchived,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_keep_their_names() {
        for name in [
            "STANDARD",
            "STANDARD_IA",
            "ONEZONE_IA",
            "INTELLIGENT_TIERING",
            "GLACIER_IR",
            "GLACIER",
            "DEEP_ARCHIVE",
            "REDUCED_REDUNDANCY",
        ] {
            assert_eq!(StorageClass::parse(name).as_str(), name);
        }
        assert_eq!(StorageClass::parse(""), StorageClass::Standard);
        assert_eq!(
            StorageClass::parse("EXPRESS_ONEZONE"),
            StorageClass::Other("EXPRESS_ONEZONE".into())
        );
        let json = serde_json::to_string(&StorageClass::DeepArchive).unwrap();
        assert_eq!(json, "\"DEEP_ARCHIVE\"");
        let back: StorageClass = serde_json::from_str(&json).unwrap();
        assert_eq!(back, StorageClass::DeepArchive);
        assert_eq!(StorageClass::Other("A\nB".into()).to_string(), "A\\nB");
    }

    #[test]
    fn every_named_class_survives_a_round_trip_through_one_byte() {
        let every = [
            StorageClass::Standard,
            StorageClass::StandardIa,
            StorageClass::OnezoneIa,
            StorageClass::IntelligentTiering,
            StorageClass::GlacierIr,
            StorageClass::Glacier,
            StorageClass::DeepArchive,
            StorageClass::Other("REDUCED_REDUNDANCY".into()),
        ];
        // A class added to the enum and not to the list above stops the build here.
        for class in &every {
            match class {
                StorageClass::Standard
                | StorageClass::StandardIa
                | StorageClass::OnezoneIa
                | StorageClass::IntelligentTiering
                | StorageClass::GlacierIr
                | StorageClass::Glacier
                | StorageClass::DeepArchive
                | StorageClass::Other(_) => {}
            }
        }
        let mut bytes = Vec::new();
        for class in every {
            match (&class, class.as_byte()) {
                (StorageClass::Other(_), byte) => assert_eq!(byte, None),
                (_, None) => panic!("{class} has no byte"),
                (_, Some(byte)) => {
                    assert_eq!(StorageClass::from_byte(byte), Some(class.clone()));
                    bytes.push(byte);
                }
            }
        }
        bytes.sort_unstable();
        bytes.dedup();
        assert_eq!(bytes.len(), 7, "two classes share a byte");
        // Every byte either names a class that gives it back or none at all.
        let named = (0..=u8::MAX)
            .filter(|&byte| match StorageClass::from_byte(byte) {
                Some(class) => {
                    assert_eq!(class.as_byte(), Some(byte));
                    true
                }
                None => false,
            })
            .count();
        assert_eq!(named, bytes.len());
    }

    #[test]
    fn only_glacier_and_deep_archive_always_need_a_restore() {
        let needs: Vec<&str> = [
            "STANDARD",
            "STANDARD_IA",
            "ONEZONE_IA",
            "INTELLIGENT_TIERING",
            "GLACIER_IR",
            "GLACIER",
            "DEEP_ARCHIVE",
            "OUTPOSTS",
        ]
        .into_iter()
        .filter(|name| StorageClass::parse(name).needs_restore())
        .collect();
        assert_eq!(needs, ["GLACIER", "DEEP_ARCHIVE"]);
    }

    #[test]
    fn the_restore_header_says_whether_the_copy_is_there() {
        assert_eq!(
            RestoreState::from_header("ongoing-request=\"true\""),
            RestoreState::InProgress
        );
        assert_eq!(
            RestoreState::from_header(
                "ongoing-request=\"false\", expiry-date=\"Fri, 21 Dec 2012 00:00:00 GMT\""
            ),
            RestoreState::Restored
        );
        assert_eq!(
            RestoreState::from_header("Ongoing-Request=\"FALSE\""),
            RestoreState::Restored
        );
        assert_eq!(
            RestoreState::from_header("garbage"),
            RestoreState::NotRestored
        );
    }

    #[test]
    fn deep_archive_has_no_expedited_tier() {
        let expedited = RetrievalTier::Expedited;
        assert_eq!(
            expedited.for_class(&StorageClass::DeepArchive),
            RetrievalTier::Standard
        );
        assert_eq!(expedited.for_class(&StorageClass::Glacier), expedited);
        assert_eq!(
            RetrievalTier::Bulk.for_class(&StorageClass::DeepArchive),
            RetrievalTier::Bulk
        );
        assert_eq!(RetrievalTier::default(), RetrievalTier::Bulk);
    }
}
