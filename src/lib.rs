//! s3mirrorfs: an S3 bucket as a read-only filesystem, backed by a durable local mirror.
//!
//! Data flows one way: `s3` (the SDK) -> `store` (the object-store trait) ->
//! `fetch` + `mirror` (the durable copy) -> `prefetch`.

pub mod admin;
pub mod cli;
#[cfg(feature = "test-util")]
pub mod fault;
pub mod fetch;
pub mod follow;
pub mod fs;
pub mod fuse;
pub mod inventory;
pub mod layout;
pub mod mirror;
pub mod mount;
pub mod prefetch;
pub mod queue;
pub mod report;
pub mod s3;
pub mod spool;
pub mod sqs;
pub mod store;
pub mod sys;
#[cfg(test)]
mod testing;
pub mod utc;
