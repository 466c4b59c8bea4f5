//! Records the git commit the binary is built from, for `s3mirrorfs --version`:
//! `S3MIRRORFS_COMMIT` is the 12-digit short hash of HEAD, or "unknown" when the
//! source is not a git checkout of its own (a source tarball) or git is missing.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let commit = if own_repository() {
        // Rerun when HEAD moves: HEAD itself (a checkout), the branch it points
        // to (a commit) and packed-refs (where git keeps the refs it packed).
        // Only paths that exist: cargo reruns every build for one that does not.
        let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
        watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(git(&["rev-parse", "--git-path", &branch]));
        }
        for path in watched.into_iter().flatten() {
            if Path::new(&path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
        git(&["rev-parse", "--short=12", "--verify", "HEAD"])
            .filter(|hash| hash.len() == 12 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
    } else {
        None
    };
    let commit = commit.as_deref().unwrap_or("unknown");
    println!("cargo:rustc-env=S3MIRRORFS_COMMIT={commit}");
}

/// Whether the package's directory is the top of a git work tree: a source
/// tarball unpacked inside some other checkout must not claim its commit.
fn own_repository() -> bool {
    let (Some(top), Some(dir)) = (
        git(&["rev-parse", "--show-toplevel"]),
        std::env::var_os("CARGO_MANIFEST_DIR"),
    ) else {
        return false;
    };
    match (std::fs::canonicalize(top), std::fs::canonicalize(dir)) {
        (Ok(top), Ok(dir)) => top == dir,
        _ => false,
    }
}

/// One line of git's output, run in the package's directory (a build script's
/// working directory); None when git is missing or fails.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let line = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!line.is_empty()).then_some(line)
}
