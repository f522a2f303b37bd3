//! Integration tests: each test starts a berth node in process on a loopback
//! port with its own temporary data directory and talks HTTP to it.

mod common;
mod raw;

mod auth;
mod bad_input;
mod base;
mod blobs;
mod cluster;
mod deliveries;
mod gc;
mod limits;
mod listings;
mod manifests;
mod metrics;
mod mirror;
mod mount;
mod permissions;
mod policies;
mod processes;
mod reads;
mod referrers;
mod replication;
mod restart;
mod reuse;
mod scale;
mod tls;
mod ui;
mod uploads;
mod upstream;
mod webhooks;
