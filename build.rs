//! Records the git commit the binary is built from, for `s3mirrorfs --version`:
//! `S3MIRRORFS_COMMIT` is the 12-digit short hash of HEAD, or "unknown" when the
//! source is not a git checkout of its own (a source tarball) or git is missing.
//!
//! Release builds for Linux also lay out first the functions a mount runs, as
//! listed in `packaging/code-order.txt` (written by `scripts/code-order`): a
//! linker script puts their sections in one run at the start of the code.

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
    order_code();
}

/// The functions a mount runs, one mangled name a line (`#` starts a comment).
const CODE_ORDER: &str = "packaging/code-order.txt";

/// Passes the linker the script `linker_script` makes of `CODE_ORDER`, for
/// release builds for Linux.
fn order_code() {
    println!("cargo:rerun-if-changed={CODE_ORDER}");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if !release || !linux {
        return;
    }
    let Ok(list) = std::fs::read_to_string(CODE_ORDER) else {
        return;
    };
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let path = out.join("code-order.ld");
    std::fs::write(&path, linker_script(&list)).expect("cannot write the linker script");
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", path.display());
}

/// A linker script that places the sections of the functions `list` names
/// before the rest of the code, in that order. The kernel maps code 64 KiB
/// around each page a program touches: laid out as compiled, the few thousand
/// functions a mount runs are spread over most of the binary's code, all of it
/// then resident. An INSERT script only adds to the linker's own layout; GNU ld,
/// lld and zig's linker all take it. A section is `.text.` and the function's
/// name, or `.text.unlikely.` and it for a function the compiler deems cold.
fn linker_script(list: &str) -> String {
    let names: Vec<&str> = list
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|name| plain(name))
        .collect();
    let mut script = String::from("/* The functions a mount runs, first: see build.rs. */\n");
    script.push_str("SECTIONS\n{\n  .text.ordered :\n  {\n");
    // A build like the one the list was made from finds each function by its exact
    // name, so the run holds just them; another build finds them with any hash,
    // after (a generic function's other instances have the same name).
    for name in &names {
        script.push_str(&format!("    *(.text.{name} .text.unlikely.{name})\n"));
    }
    let mut seen = std::collections::HashSet::new();
    for pattern in names.iter().filter_map(|name| any_build(name)) {
        if seen.insert(pattern.clone()) {
            script.push_str(&format!(
                "    *(.text.{pattern} .text.unlikely.{pattern})\n"
            ));
        }
    }
    script.push_str("  }\n}\nINSERT BEFORE .text;\n");
    script
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

/// Whether a linker script reads `name` as one name (mangled names are).
fn plain(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.$".contains(c))
}

/// A pattern matching `name` in any build, or None when the name carries
/// nothing that depends on the build. A legacy-mangled name ends in a hash
/// (`17h` and 16 hex digits before the closing `E`); a v0-mangled one (the
/// standard library's) names crates with a disambiguator (`Cs`, base-62 digits,
/// `_`); a pattern ending in `*` also matches a `.llvm.` suffix.
fn any_build(name: &str) -> Option<String> {
    // Link-time optimization may add `.llvm.` and a number to a local name.
    let name = name.split(".llvm.").next().unwrap_or(name);
    if let Some(stem) = name.strip_prefix("_ZN").and_then(|n| n.strip_suffix('E')) {
        let split = stem.len().checked_sub(19)?;
        let hash = stem.get(split..)?;
        let hashed = hash.starts_with("17h") && hash[3..].bytes().all(|b| b.is_ascii_hexdigit());
        return hashed.then(|| format!("_ZN{}17h*", &stem[..split]));
    }
    if !name.starts_with("_R") {
        return None;
    }
    let mut pattern = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(at) = rest.find("Cs") {
        let after = &rest[at + 2..];
        let digits = after.bytes().take_while(u8::is_ascii_alphanumeric).count();
        pattern.push_str(&rest[..at + 2]);
        if digits > 0 && after.as_bytes().get(digits) == Some(&b'_') {
            pattern.push_str("*_");
            rest = &after[digits + 1..];
        } else {
            rest = after;
        }
    }
    pattern.push_str(rest);
    (pattern != name).then_some(pattern)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_placed_exactly_first_then_in_any_build() {
        let list = "# comment\n\
            _ZN10s3mirrorfs2fs7Buffers4fill17h0123456789abcdefE\n\
            \n\
            _ZN10s3mirrorfs2fs7Buffers4fill17hfedcba9876543210E  # another instance\n\
            ZSTD_compressStream\n\
            _RNvMs4_NtCslNYArtu3iFV_5alloc7raw_vecNtB5_11RawVecInner11finish_growCsduwmD7cSIQq_5gimli\n\
            bad{name}\n";
        let script = linker_script(list);
        let lines: Vec<&str> = script.lines().filter(|l| l.starts_with("    *(")).collect();
        assert_eq!(
            lines,
            [
                "    *(.text._ZN10s3mirrorfs2fs7Buffers4fill17h0123456789abcdefE .text.unlikely._ZN10s3mirrorfs2fs7Buffers4fill17h0123456789abcdefE)",
                "    *(.text._ZN10s3mirrorfs2fs7Buffers4fill17hfedcba9876543210E .text.unlikely._ZN10s3mirrorfs2fs7Buffers4fill17hfedcba9876543210E)",
                "    *(.text.ZSTD_compressStream .text.unlikely.ZSTD_compressStream)",
                "    *(.text._RNvMs4_NtCslNYArtu3iFV_5alloc7raw_vecNtB5_11RawVecInner11finish_growCsduwmD7cSIQq_5gimli .text.unlikely._RNvMs4_NtCslNYArtu3iFV_5alloc7raw_vecNtB5_11RawVecInner11finish_growCsduwmD7cSIQq_5gimli)",
                // Both instances share one pattern.
                "    *(.text._ZN10s3mirrorfs2fs7Buffers4fill17h* .text.unlikely._ZN10s3mirrorfs2fs7Buffers4fill17h*)",
                "    *(.text._RNvMs4_NtCs*_5alloc7raw_vecNtB5_11RawVecInner11finish_growCs*_5gimli .text.unlikely._RNvMs4_NtCs*_5alloc7raw_vecNtB5_11RawVecInner11finish_growCs*_5gimli)",
            ]
        );
        assert!(script.contains(".text.ordered :"));
        assert!(script.trim_end().ends_with("INSERT BEFORE .text;"));
        assert!(
            !script.contains("bad"),
            "a name a script would misread is left out"
        );
    }

    #[test]
    fn only_what_depends_on_the_build_becomes_a_wildcard() {
        assert_eq!(any_build("ZSTD_compressStream"), None);
        assert_eq!(any_build("_ZN3foo3barE"), None, "no hash");
        assert_eq!(any_build("_ZN3foo3bar17hnothexnothexnothE"), None);
        assert_eq!(
            any_build("_ZN4core3fmt5write17h0123456789abcdefE.llvm.8812"),
            Some("_ZN4core3fmt5write17h*".to_string())
        );
        assert_eq!(
            any_build("_RNvCs1234_3std4main"),
            Some("_RNvCs*_3std4main".to_string())
        );
        assert_eq!(
            any_build("_RNvNtB2_3std4main"),
            None,
            "no crate disambiguator"
        );
    }
}
