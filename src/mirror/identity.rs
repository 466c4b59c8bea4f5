//! `mirror.json`: which source a mirror belongs to (the bucket, the endpoint, the
//! bucket owner's account when known), and whether a run may use it: a run against
//! another bucket is refused, one against another endpoint or owner only unless the
//! user says the bucket moved.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::MirrorError;
use crate::layout::STATE_DIR;
use crate::sys::beneath::Dir;

/// The file in the state directory.
pub const IDENTITY_FILE: &str = "mirror.json";

/// What `mirror.json` holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub bucket: String,
    /// The S3 endpoint, normalized; "" for AWS. `None` when not known yet (a
    /// mirror.json written before endpoints were recorded): the next run records its own.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The account id of the bucket's owner; `None` when not known.
    #[serde(default)]
    pub owner: Option<String>,
}

impl Identity {
    /// A mirror of `bucket` whose endpoint and owner are not known yet.
    pub fn of_bucket(bucket: &str) -> Identity {
        Identity {
            bucket: bucket.to_string(),
            endpoint: None,
            owner: None,
        }
    }
}

/// Where a run's requests go: the endpoint ("" for AWS) and the bucket owner it
/// was told to expect, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub endpoint: String,
    pub owner: Option<String>,
}

/// The part of the source a run disagrees on with the mirror.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceField {
    Endpoint,
    Owner,
}

impl fmt::Display for SourceField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceField::Endpoint => "endpoint",
            SourceField::Owner => "bucket owner",
        })
    }
}

/// A recorded or requested value as a refusal shows it: quoted, and the empty
/// endpoint named for what it means.
pub(super) struct Shown<'a>(pub(super) SourceField, pub(super) &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shown(SourceField::Endpoint, "") => f.write_str("\"\" (AWS)"),
            Shown(_, value) => write!(f, "{value:?}"),
        }
    }
}

/// What a mirror's state directory says it belongs to; `None` if it has not been
/// used for a bucket yet.
pub(super) fn read_identity(root: &Path, dir: &Dir) -> Result<Option<Identity>, MirrorError> {
    let rel = Path::new(STATE_DIR).join(IDENTITY_FILE);
    let path = root.join(&rel);
    let bytes = match dir.read(&rel) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(MirrorError::Io { path, err }),
    };
    match serde_json::from_slice::<Identity>(&bytes) {
        Ok(identity) => Ok(Some(identity)),
        Err(e) => Err(MirrorError::Io {
            path,
            err: io::Error::new(io::ErrorKind::InvalidData, e),
        }),
    }
}

/// A mirror's identity as recorded, and as this run will record it once S3 has
/// confirmed the bucket.
#[derive(Debug)]
pub(super) struct Claim {
    root: PathBuf,
    recorded: Option<Identity>,
    wanted: Identity,
}

impl Claim {
    /// Reads `mirror.json` of the mirror at `root`; another bucket's mirror is refused.
    pub(super) fn read(root: &Path, dir: &Dir, bucket: &str) -> Result<Claim, MirrorError> {
        let recorded = read_identity(root, dir)?;
        if let Some(existing) = &recorded
            && existing.bucket != bucket
        {
            return Err(MirrorError::WrongBucket {
                path: root.to_path_buf(),
                existing: existing.bucket.clone(),
                requested: bucket.to_string(),
            });
        }
        // Until a run names its source, claiming keeps what is recorded.
        let wanted = recorded
            .clone()
            .unwrap_or_else(|| Identity::of_bucket(bucket));
        Ok(Claim {
            root: root.to_path_buf(),
            recorded,
            wanted,
        })
    }

    /// Whether `mirror.json` names this bucket (the mirror has been used for it).
    pub(super) fn is_recorded(&self) -> bool {
        self.recorded.is_some()
    }

    /// The owner recorded for the bucket, if known.
    pub(super) fn recorded_owner(&self) -> Option<&str> {
        self.recorded.as_ref()?.owner.as_deref()
    }

    /// Refuses a run whose endpoint or owner differs from the recorded one, unless
    /// `allow_new`; what is not recorded yet is adopted. On success, `source` (with
    /// the recorded owner when the run names none) is what the claim records.
    pub(super) fn check(&mut self, source: &Source, allow_new: bool) -> Result<(), MirrorError> {
        if !allow_new && let Some(recorded) = &self.recorded {
            self.refuse_other(recorded, source)?;
        }
        let owner = source
            .owner
            .clone()
            .or_else(|| self.recorded_owner().map(str::to_string));
        self.wanted = Identity {
            bucket: self.wanted.bucket.clone(),
            endpoint: Some(source.endpoint.clone()),
            owner,
        };
        Ok(())
    }

    fn refuse_other(&self, recorded: &Identity, source: &Source) -> Result<(), MirrorError> {
        let differs = |field, recorded: &Option<String>, requested: Option<&String>| match (
            recorded, requested,
        ) {
            (Some(recorded), Some(requested)) if recorded != requested => {
                Err(MirrorError::OtherSource {
                    path: self.root.clone(),
                    field,
                    recorded: recorded.clone(),
                    requested: requested.clone(),
                })
            }
            _ => Ok(()),
        };
        differs(
            SourceField::Endpoint,
            &recorded.endpoint,
            Some(&source.endpoint),
        )?;
        differs(SourceField::Owner, &recorded.owner, source.owner.as_ref())
    }

    /// The identity to write, if `mirror.json` does not say it already.
    pub(super) fn pending(&self) -> Option<&Identity> {
        (self.recorded.as_ref() != Some(&self.wanted)).then_some(&self.wanted)
    }

    /// `mirror.json` now says `identity`.
    pub(super) fn recorded_as(&mut self, identity: Identity) {
        self.recorded = Some(identity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(recorded: Option<Identity>) -> Claim {
        let wanted = recorded.clone().unwrap_or_else(|| Identity::of_bucket("b"));
        Claim {
            root: PathBuf::from("/m"),
            recorded,
            wanted,
        }
    }

    fn identity(endpoint: Option<&str>, owner: Option<&str>) -> Identity {
        Identity {
            bucket: "b".into(),
            endpoint: endpoint.map(str::to_string),
            owner: owner.map(str::to_string),
        }
    }

    fn source(endpoint: &str, owner: Option<&str>) -> Source {
        Source {
            endpoint: endpoint.into(),
            owner: owner.map(str::to_string),
        }
    }

    #[test]
    fn mirror_json_of_every_version_reads() {
        let old: Identity = serde_json::from_str(r#"{"bucket":"b"}"#).unwrap();
        assert_eq!(old, Identity::of_bucket("b"));
        let full = identity(Some(""), Some("123456789012"));
        let json = serde_json::to_string(&full).unwrap();
        assert_eq!(
            json,
            r#"{"bucket":"b","endpoint":"","owner":"123456789012"}"#
        );
        assert_eq!(serde_json::from_str::<Identity>(&json).unwrap(), full);
        let unknown_owner: Identity =
            serde_json::from_str(r#"{"bucket":"b","endpoint":"http://x","owner":null}"#).unwrap();
        assert_eq!(unknown_owner, identity(Some("http://x"), None));
    }

    #[test]
    fn a_new_mirror_records_the_runs_source() {
        let mut claim = claim(None);
        assert_eq!(claim.pending(), Some(&Identity::of_bucket("b")));
        claim.check(&source("", None), false).unwrap();
        assert_eq!(claim.pending(), Some(&identity(Some(""), None)));
        claim.recorded_as(identity(Some(""), None));
        assert_eq!(claim.pending(), None);
    }

    #[test]
    fn what_an_older_mirror_json_lacks_is_adopted() {
        let mut claim = claim(Some(Identity::of_bucket("b")));
        assert_eq!(
            claim.pending(),
            None,
            "nothing to write before a run names its source"
        );
        claim
            .check(&source("http://s3.local", Some("123456789012")), false)
            .unwrap();
        assert_eq!(
            claim.pending(),
            Some(&identity(Some("http://s3.local"), Some("123456789012")))
        );
    }

    #[test]
    fn another_endpoint_is_refused_unless_allowed() {
        let recorded = identity(Some("http://127.0.0.1:5000"), None);
        let err = claim(Some(recorded.clone()))
            .check(&source("", None), false)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "mirror /m was made from endpoint \"http://127.0.0.1:5000\" but this run uses \"\" (AWS); \
             pass --allow-new-source if the bucket really moved"
        );
        let mut allowed = claim(Some(recorded));
        allowed.check(&source("", None), true).unwrap();
        assert_eq!(allowed.pending(), Some(&identity(Some(""), None)));
    }

    #[test]
    fn another_owner_is_refused_unless_allowed_and_a_known_one_is_kept() {
        let recorded = identity(Some(""), Some("123456789012"));
        let err = claim(Some(recorded.clone()))
            .check(&source("", Some("210987654321")), false)
            .unwrap_err();
        assert!(
            matches!(
                &err,
                MirrorError::OtherSource {
                    field: SourceField::Owner,
                    ..
                }
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains("\"123456789012\"") && text.contains("\"210987654321\""));
        // A run that names no owner keeps the recorded one.
        let mut same = claim(Some(recorded.clone()));
        same.check(&source("", None), false).unwrap();
        assert_eq!(same.recorded_owner(), Some("123456789012"));
        assert_eq!(same.pending(), None);
        let mut moved = claim(Some(recorded));
        moved
            .check(&source("", Some("210987654321")), true)
            .unwrap();
        assert_eq!(
            moved.pending(),
            Some(&identity(Some(""), Some("210987654321")))
        );
    }
}
