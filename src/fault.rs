//! A test hook for crash points inside a commit, compiled only with the
//! `test-util` feature (never into a shipped binary): with
//! `S3MIRRORFS_FAULT_POINT=<point>:<key>` in the environment, the process kills
//! itself (SIGKILL, as `kill -9` or a power cut would end it) when it reaches
//! `<point>` while committing `<key>`. The variable is read once; without it a
//! point costs one comparison. Points: `after-history-link` (the copy being
//! replaced is hard-linked into history, its journal line not yet written),
//! `before-rename` (bytes, record and fsync done, the old copy kept, the temp
//! file not yet renamed) and `after-rename` (renamed, the directory not yet fsynced).

use std::sync::OnceLock;

/// The environment variable that arms a fault point.
pub const FAULT_POINT_VAR: &str = "S3MIRRORFS_FAULT_POINT";
/// The points a commit passes, in order.
pub const POINTS: [&str; 3] = ["after-history-link", "before-rename", "after-rename"];

static ARMED: OnceLock<Option<(String, String)>> = OnceLock::new();

fn armed() -> &'static Option<(String, String)> {
    ARMED.get_or_init(|| {
        let value = std::env::var(FAULT_POINT_VAR).ok()?;
        parse(&value)
    })
}

/// Splits `<point>:<key>`; an unknown point arms nothing.
fn parse(value: &str) -> Option<(String, String)> {
    let (point, key) = value.split_once(':')?;
    POINTS
        .contains(&point)
        .then(|| (point.to_string(), key.to_string()))
}

/// Dies here if the hook is armed for `point` and `key`.
pub fn point(point: &str, key: &str) {
    if let Some((p, k)) = armed()
        && p == point
        && k == key
    {
        tracing::warn!(point, key, "fault point reached; killing the process");
        crate::sys::kill_self();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_name_a_known_point_and_a_key() {
        assert_eq!(
            parse("before-rename:a/b:c"),
            Some(("before-rename".into(), "a/b:c".into()))
        );
        assert_eq!(
            parse("after-rename:k"),
            Some(("after-rename".into(), "k".into()))
        );
        assert_eq!(parse("elsewhere:k"), None);
        assert_eq!(parse("before-rename"), None);
    }
}
