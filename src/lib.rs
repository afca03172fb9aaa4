//! gatehouse: a server and library for JWT-secured HTTP APIs whose access rules are Rhai
//! scripts that operators edit on a live server.
//!
//! # Layout
//! - [`model`]: newtypes parsed at the edge (user names, roles, kinds, ids, actions). A leaf.
//! - [`config`]: settings from defaults, a TOML file, `GATEHOUSE_*` env and flags.
//! - [`store`]: the storage interface and its sled backend (the only module naming sled).
//! - [`auth`]: argon2id passwords, JWT issue and verification, the per-request check.
//! - [`policy`]: the Rhai engine, loader and watcher. Knows nothing of HTTP or storage.
//! - [`decisions`]: the decision log (JSON lines, rotated) and reading it back for replay.
//! - [`api`]: poem-openapi endpoints, problem+json errors, the OpenAPI document.
//! - [`plugin`]: the extension point: Rhai helpers, token claims and typed endpoints from other
//!   crates ([`Plugin`], [`serve`], [`DocumentStore`]).
//! - [`app`]: builds and runs a server from [`config::Settings`] and a plugin set.
//! - [`cli`]: the `gatehouse` command line ([`cli::main_with`] runs it with your plugins).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod decisions;
pub mod metrics;
pub mod model;
pub mod plugin;
pub mod policy;
pub mod store;
pub mod telemetry;

pub use app::Application;
pub use cli::serve;
pub use config::Settings;
pub use plugin::{DocumentStore, Plugin, Plugins};
