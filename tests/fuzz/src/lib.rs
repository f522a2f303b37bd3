//! berth's pure OCI module, compiled on its own for fuzzing. It is the very
//! source file of the registry, not a copy, so the fuzzers test what ships.

#[path = "../../../src/oci/mod.rs"]
pub mod oci;
