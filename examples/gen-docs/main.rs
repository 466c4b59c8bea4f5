//! Writes the manual pages and shell completions into a directory, for the
//! packages (scripts/release runs it):
//!   OUT/man/man1/s3mirrorfs.1, OUT/man/man1/s3mirrorfs-SUB.1, ...
//!   OUT/completions/s3mirrorfs.bash (bash), OUT/completions/_s3mirrorfs (zsh)
//! An example, not a binary of the package: clap_mangen and clap_complete are
//! dev-dependencies and never reach the shipped `s3mirrorfs`.
//!
//! Usage: cargo run --example gen-docs -- OUT

mod pages;

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: gen-docs OUT");
        std::process::exit(2);
    };
    let man = out.join("man/man1");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    for (name, text) in pages::man_pages() {
        std::fs::write(man.join(name), text)?;
    }
    for (shell, name) in pages::SHELLS {
        std::fs::write(completions.join(name), pages::completion(shell))?;
    }
    Ok(())
}
