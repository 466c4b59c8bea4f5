//! The build script's own tests (the layout of the release binary's code): a
//! build script is not a test target of its own, so it is compiled here as a
//! module and its `tests` run with the others.

#[allow(dead_code)]
#[path = "../build.rs"]
mod build_script;
