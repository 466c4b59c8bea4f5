//! Fault rules for the test proxy: which requests (by method, key, listing, range,
//! and their order) get which fault (an S3 error, a reset, a short or stalled or
//! corrupted body, or the object changing while it is being served).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Code run by the proxy in the middle of a response (for example an upload of a
/// new version to the server), on a thread of its own.
pub type Hook = Arc<dyn Fn() + Send + Sync>;

/// What the proxy does to a request that a rule matches.
#[derive(Clone)]
pub enum Fault {
    /// Answers with this status and an S3-style XML error body; the server never sees the request.
    Error { status: u16, code: &'static str },
    /// Answers `403 InvalidObjectState` naming this storage class and access tier,
    /// as S3 answers a GET of an archived object; the server never sees the request.
    Archived {
        storage_class: &'static str,
        access_tier: Option<&'static str>,
    },
    /// Resets the connection (TCP RST) before any response byte.
    ResetBeforeHeaders,
    /// Sends nothing at all, keeping the connection open until the client gives up
    /// (or `limit` passes); the server never sees the request.
    StallBeforeHeaders { limit: Duration },
    /// Sends the head and this many body bytes, then resets the connection.
    ResetAfter(usize),
    /// Sends the head (with the full Content-Length) and this many body bytes, then closes.
    TruncateAfter(usize),
    /// Sends the head and this many body bytes, then sends nothing more, keeping the
    /// connection open until the client gives up (or `limit` passes).
    StallAfter { bytes: usize, limit: Duration },
    /// Sends the body slowly: `bytes` at a time, one pause of `every` between them.
    Drip { bytes: usize, every: Duration },
    /// Flips one bit of the body byte at this offset (clamped to the body) of a 2xx
    /// response; the checksum headers stay, so the client can notice.
    FlipByte(usize),
    /// `FlipByte`, and the `x-amz-checksum-*` headers are removed: only a check
    /// against the ETag can notice.
    FlipByteUnchecked(usize),
    /// Sends this many body bytes, runs the hook, then the rest of the (old) body.
    HookAfter(usize, Hook),
    /// Runs the hook, then forwards the request (e.g. the object changes just
    /// before this request reaches the server).
    HookBefore(Hook),
}

impl Fault {
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Error { .. } => "error",
            Fault::Archived { .. } => "archived",
            Fault::ResetBeforeHeaders => "reset-before-headers",
            Fault::StallBeforeHeaders { .. } => "stall-before-headers",
            Fault::ResetAfter(_) => "reset-mid-body",
            Fault::TruncateAfter(_) => "truncate",
            Fault::StallAfter { .. } => "stall",
            Fault::Drip { .. } => "drip",
            Fault::FlipByte(_) => "flip-byte",
            Fault::FlipByteUnchecked(_) => "flip-byte-unchecked",
            Fault::HookAfter(..) => "hook",
            Fault::HookBefore(_) => "hook-before",
        }
    }

    /// S3's `503 SlowDown`.
    pub fn slow_down() -> Fault {
        Fault::Error {
            status: 503,
            code: "SlowDown",
        }
    }

    /// `500 InternalError`.
    pub fn internal_error() -> Fault {
        Fault::Error {
            status: 500,
            code: "InternalError",
        }
    }

    /// `429 TooManyRequests`.
    pub fn too_many_requests() -> Fault {
        Fault::Error {
            status: 429,
            code: "TooManyRequests",
        }
    }

    /// `403 AccessDenied`.
    pub fn access_denied() -> Fault {
        Fault::Error {
            status: 403,
            code: "AccessDenied",
        }
    }

    /// The status, code and extra XML elements of an injected error answer.
    pub fn error_answer(&self) -> Option<(u16, &'static str, String)> {
        match self {
            Fault::Error { status, code } => Some((*status, *code, String::new())),
            Fault::Archived {
                storage_class,
                access_tier,
            } => {
                let mut extra = format!("<StorageClass>{storage_class}</StorageClass>");
                if let Some(tier) = access_tier {
                    extra.push_str(&format!("<AccessTier>{tier}</AccessTier>"));
                }
                Some((403, "InvalidObjectState", extra))
            }
            _ => None,
        }
    }
}

/// Which requests a rule is about.
#[derive(Clone, Debug)]
enum Target {
    /// The request target contains this text.
    Contains(String),
    /// An object request: the path (before any `?`) ends in `/<key>`.
    Key(String),
    /// A ListObjectsV2 request.
    Listing,
}

/// One rule: a set of requests, which of them (by order) get the fault, and the fault.
pub struct Rule {
    target: Target,
    method: Option<&'static str>,
    ranged: Option<bool>,
    /// Matching requests let through before the fault applies.
    skip: u32,
    /// Matching requests that get the fault after the skipped ones; `None` for all.
    times: Option<u32>,
    pub fault: Fault,
    hits: AtomicU32,
    /// Percent of the matching requests that get the fault (spread evenly).
    share: u32,
    /// Until when the rule applies, if not forever.
    until: Option<std::time::Instant>,
}

/// The parts of a request a rule looks at.
pub struct RequestInfo<'a> {
    pub method: &'a str,
    pub target: &'a str,
    pub range: Option<&'a str>,
}

impl Rule {
    fn new(target: Target, fault: Fault) -> Rule {
        Rule {
            target,
            method: None,
            ranged: None,
            skip: 0,
            times: None,
            fault,
            hits: AtomicU32::new(0),
            share: 100,
            until: None,
        }
    }

    /// Only `percent` of the picked requests, spread evenly (60: three in five).
    pub fn share(mut self, percent: u32) -> Rule {
        self.share = percent.min(100);
        self
    }

    /// Only for `how_long` from now, as S3 throttles for a while.
    pub fn during(mut self, how_long: Duration) -> Rule {
        self.until = Some(std::time::Instant::now() + how_long);
        self
    }

    /// Requests whose target contains `pattern`.
    pub fn matching(pattern: &str, fault: Fault) -> Rule {
        Rule::new(Target::Contains(pattern.to_string()), fault)
    }

    /// GETs of the object `key` (a plain key: no characters that need encoding).
    pub fn object(key: &str, fault: Fault) -> Rule {
        Rule::new(Target::Key(key.to_string()), fault).method("GET")
    }

    /// ListObjectsV2 requests.
    pub fn listing(fault: Fault) -> Rule {
        Rule::new(Target::Listing, fault).method("GET")
    }

    pub fn method(mut self, method: &'static str) -> Rule {
        self.method = Some(method);
        self
    }

    /// Only requests with (`true`) or without (`false`) a Range header.
    pub fn ranged(mut self, ranged: bool) -> Rule {
        self.ranged = Some(ranged);
        self
    }

    /// Only the `n`-th matching request (1-based).
    pub fn nth(mut self, n: u32) -> Rule {
        self.skip = n.saturating_sub(1);
        self.times = Some(1);
        self
    }

    /// Only the first `n` matching requests.
    pub fn first(mut self, n: u32) -> Rule {
        self.skip = 0;
        self.times = Some(n);
        self
    }

    /// Every matching request after the first `n`.
    pub fn after(mut self, n: u32) -> Rule {
        self.skip = n;
        self.times = None;
        self
    }

    fn matches(&self, request: &RequestInfo<'_>) -> bool {
        if self.method.is_some_and(|m| m != request.method) {
            return false;
        }
        if self.ranged.is_some_and(|r| r != request.range.is_some()) {
            return false;
        }
        let path = request.target.split('?').next().unwrap_or_default();
        match &self.target {
            Target::Contains(pattern) => request.target.contains(pattern.as_str()),
            Target::Key(key) => path.ends_with(&format!("/{key}")),
            Target::Listing => request.target.contains("list-type=2"),
        }
    }

    /// Counts `request` if it matches; returns the fault if this one gets it.
    pub fn apply(&self, request: &RequestInfo<'_>) -> Option<Fault> {
        if !self.matches(request) {
            return None;
        }
        if self
            .until
            .is_some_and(|until| std::time::Instant::now() >= until)
        {
            return None;
        }
        let n = self.hits.fetch_add(1, Ordering::SeqCst);
        let picked = |n: u32| n * self.share / 100;
        let hit = n >= self.skip
            && self.times.is_none_or(|t| n < self.skip + t)
            && picked(n + 1) > picked(n);
        hit.then(|| self.fault.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_pick_requests_by_kind_and_order() {
        let get = |target| RequestInfo {
            method: "GET",
            target,
            range: None,
        };
        let rule = Rule::object("a/b.bin", Fault::slow_down()).nth(2);
        assert!(
            rule.apply(&get("/bucket?list-type=2&prefix=a%2Fb.bin"))
                .is_none()
        );
        assert!(
            rule.apply(&get("/bucket/a/b.bin")).is_none(),
            "the first passes"
        );
        assert!(rule.apply(&get("/bucket/a/b.bin?x-id=GetObject")).is_some());
        assert!(
            rule.apply(&get("/bucket/a/b.bin")).is_none(),
            "only the second"
        );
        let listing = Rule::listing(Fault::internal_error()).first(1);
        assert!(listing.apply(&get("/bucket?list-type=2")).is_some());
        assert!(listing.apply(&get("/bucket?list-type=2")).is_none());
    }
}
