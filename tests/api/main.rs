//! Black-box tests: each starts the real `gatehouse` binary on a free port with a temporary
//! data directory and policy directory, and talks HTTP to it. One test binary (see
//! `Cargo.toml`'s `[[test]]`), files by feature.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod attacks;
mod cli;
mod durability;
#[allow(dead_code)]
mod helpers;
mod hot_reload;
mod keys;
mod openapi;
mod operations;
mod plugin;
mod policies;
mod policy_tools;
mod refresh;
mod resources;
mod token;
mod traps;
mod users;
