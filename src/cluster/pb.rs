//! Code generated from `proto/peer.proto`.
#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("berth.peer.v1");
