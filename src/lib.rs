//! berth: a container image registry that runs as a replicated cluster.
//!
//! Layers point one way: [`api`] (HTTP) and [`ui`] (the web pages) call
//! [`registry`] (the operations a
//! client asks for), which calls [`meta`] (the replicated state machine) and
//! [`storage`] (this node's bytes). [`oci`] holds the pure types every layer
//! shares, and [`db`] owns the RocksDB layout.

pub mod api;
pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod db;
pub mod events;
pub mod gc;
pub mod logging;
pub mod memory;
pub mod meta;
pub mod metrics;
pub mod oci;
pub mod registry;
pub mod replication;
pub mod server;
pub mod storage;
pub mod tls;
pub mod ui;
