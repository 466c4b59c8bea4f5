//! The manual pages and completions the packages ship match the binary: every
//! option and argument that `s3mirrorfs [SUB] --help` shows is in that command's
//! page and in the completions, every command has a page with its exit status
//! and files, and `--version` names the commit the binary was built from.

#[path = "../examples/gen-docs/pages.rs"]
mod pages;

use std::collections::BTreeMap;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_s3mirrorfs");

fn run(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run s3mirrorfs");
    assert!(out.status.success(), "s3mirrorfs {args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8 help")
}

/// The page's text without roff's escapes and font changes, as a reader sees it.
fn plain(roff: &[u8]) -> String {
    let text = String::from_utf8(roff.to_vec()).expect("utf-8 page");
    ["\\fB", "\\fI", "\\fR", "\\fP", "\\&"]
        .iter()
        .fold(text, |t, escape| t.replace(escape, ""))
        .replace("\\-", "-")
        .replace("\\*(Aq", "'")
}

/// The subcommands `s3mirrorfs --help` lists, without `help`.
fn subcommands() -> Vec<String> {
    let help = run(&["--help"]);
    let listed = help
        .split("Commands:\n")
        .nth(1)
        .expect("a Commands: section")
        .split("\n\n")
        .next()
        .unwrap();
    listed
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// Every option (`-q`, `--quiet`) and argument (`<BUCKET[/PREFIX]>`) in a
/// `--help` text: the first words of each entry under Options: and Arguments:.
fn help_items(help: &str) -> Vec<String> {
    let mut items = Vec::new();
    for line in help.lines() {
        let line = line.trim_start();
        for word in line.split_whitespace() {
            let word = word.trim_end_matches(',').trim_end_matches("...");
            if word.starts_with('-') && word.len() > 1 {
                items.push(word.to_string());
            } else if word.starts_with('<') && word.ends_with('>') && line.starts_with('<') {
                items.push(word.to_string());
                break;
            } else if word.starts_with('<') && word.ends_with('>') {
                // A value name after an option (`--mirror-dir <DIR>`).
            } else {
                break;
            }
        }
    }
    items
}

fn pages_by_name() -> BTreeMap<String, String> {
    pages::man_pages()
        .into_iter()
        .map(|(name, roff)| (name, plain(&roff)))
        .collect()
}

#[test]
fn every_command_has_a_page_and_no_page_is_of_an_unknown_command() {
    let mut expected: Vec<String> = subcommands()
        .iter()
        .map(|s| format!("s3mirrorfs-{s}.1"))
        .collect();
    expected.push("s3mirrorfs.1".into());
    expected.sort();
    let names: Vec<String> = pages_by_name().into_keys().collect();
    assert_eq!(names, expected);
    assert!(expected.len() >= 9, "{expected:?}");
}

#[test]
fn every_option_and_argument_of_help_is_in_the_page() {
    let pages = pages_by_name();
    let mut commands: Vec<(String, Vec<&str>)> = vec![("s3mirrorfs.1".into(), vec![])];
    let subs = subcommands();
    commands.extend(
        subs.iter()
            .map(|s| (format!("s3mirrorfs-{s}.1"), vec![s.as_str()])),
    );
    for (page, args) in commands {
        let help = run(&[args.as_slice(), &["--help"]].concat());
        let items = help_items(&help);
        assert!(
            items.iter().any(|i| i == "--help"),
            "{page}: nothing parsed from {help}"
        );
        let text = &pages[&page];
        for item in &items {
            assert!(
                text.contains(item.as_str()),
                "{page} lacks {item} (from `--help`)"
            );
        }
        // The one-line description is the same.
        let about = help.lines().next().unwrap();
        assert!(text.contains(about), "{page} lacks {about:?}");
    }
    // A few that must be there, so a parser that finds nothing cannot pass.
    let prefetch = help_items(&run(&["prefetch", "--help"]));
    for item in [
        "--mirror-dir",
        "--restore-archived",
        "-q",
        "--quiet",
        "<BUCKET[/PREFIX]>",
        "-v",
    ] {
        assert!(
            prefetch.iter().any(|i| i == item),
            "{item} not parsed from prefetch --help: {prefetch:?}"
        );
    }
}

#[test]
fn every_page_has_exit_status_files_and_the_version() {
    let version = run(&["--version"]);
    let version = version
        .trim()
        .strip_prefix("s3mirrorfs ")
        .expect("s3mirrorfs VERSION");
    assert_eq!(version, s3mirrorfs::cli::VERSION);
    for (name, text) in pages_by_name() {
        for heading in [
            ".SH NAME",
            ".SH SYNOPSIS",
            ".SH OPTIONS",
            ".SH \"EXIT STATUS\"",
            ".SH FILES",
            ".SH \"SEE ALSO\"",
        ] {
            assert!(text.contains(heading), "{name} lacks {heading}");
        }
        let exit = text.split(".SH \"EXIT STATUS\"").nth(1).unwrap();
        let exit = exit.split(".SH ").next().unwrap();
        for code in ["0", "1", "2"] {
            assert!(
                exit.contains(&format!(".TP\n{code}\n")),
                "{name}: exit status {code} not described"
            );
        }
        for path in [
            "/etc/s3mirrorfs.env",
            ".s3mirrorfs/",
            "/home/user/myS3backup",
            "/usr/lib/systemd/system",
        ] {
            assert!(text.contains(path), "{name}: FILES lacks {path}");
        }
        assert!(
            text.contains(&format!(".SH VERSION\n{version}\n")),
            "{name}: not version {version}"
        );
    }
}

#[test]
fn the_version_names_the_commit_it_was_built_from() {
    let version = run(&["--version"]);
    let commit = version
        .trim()
        .strip_suffix(')')
        .and_then(|v| v.split(" (commit ").nth(1))
        .unwrap_or_else(|| panic!("no commit in {version:?}"));
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    // As build.rs decides: only a checkout whose top is this package counts.
    let manifest_dir = std::fs::canonicalize(env!("CARGO_MANIFEST_DIR")).unwrap();
    let own = git(&["rev-parse", "--show-toplevel"])
        .and_then(|top| std::fs::canonicalize(top).ok())
        .is_some_and(|top| top == manifest_dir);
    let head = if own {
        git(&["rev-parse", "--short=12", "HEAD"])
    } else {
        None
    };
    match head {
        Some(head) => assert_eq!(commit, head, "built from a git checkout: its HEAD"),
        None => assert_eq!(commit, "unknown"),
    }
    assert!(
        version.starts_with(&format!("s3mirrorfs {} ", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
}

#[test]
fn the_pages_render_without_warnings() {
    // man-db's man (what the packages' users read the pages with); its checks
    // catch broken roff that the text comparisons above would not.
    if Command::new("man").arg("--version").output().is_err() {
        eprintln!("skipped: no man on this machine");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, roff) in pages::man_pages() {
        let path = dir.path().join(&name);
        std::fs::write(&path, roff).unwrap();
        let out = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&path)
            .env("MANWIDTH", "80")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{name}: {stderr}"
        );
        // Bold and underline are overstruck (X BACKSPACE X) when not on a terminal.
        let mut text = String::new();
        for c in String::from_utf8_lossy(&out.stdout).chars() {
            if c == '\u{8}' {
                text.pop();
            } else {
                text.push(c);
            }
        }
        assert!(
            text.contains("EXIT STATUS") && text.contains("FILES"),
            "{name}: {text}"
        );
    }
}

#[test]
fn the_completions_offer_every_command_and_option() {
    let scripts: BTreeMap<&str, String> = pages::SHELLS
        .iter()
        .map(|(shell, file)| (*file, String::from_utf8(pages::completion(*shell)).unwrap()))
        .collect();
    let (bash, zsh) = (&scripts["s3mirrorfs.bash"], &scripts["_s3mirrorfs"]);
    assert!(
        zsh.starts_with("#compdef s3mirrorfs"),
        "{}",
        &zsh[..80.min(zsh.len())]
    );
    assert!(
        bash.contains("complete -F _s3mirrorfs"),
        "bash completion registers no function"
    );
    for sub in subcommands() {
        let help = run(&[&sub, "--help"]);
        for item in help_items(&help).iter().filter(|i| i.starts_with("--")) {
            assert!(
                bash.contains(item.as_str()),
                "bash completion of {sub} lacks {item}"
            );
            assert!(
                zsh.contains(item.as_str()),
                "zsh completion of {sub} lacks {item}"
            );
        }
        assert!(
            bash.contains(&format!("s3mirrorfs,{sub})")),
            "bash completion lacks {sub}"
        );
        assert!(
            zsh.contains(&format!("({sub})")),
            "zsh completion lacks {sub}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("s3mirrorfs.bash");
    std::fs::write(&script, bash).unwrap();
    let check = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}
