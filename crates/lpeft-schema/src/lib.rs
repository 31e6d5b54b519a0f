//! File formats of lightpeft: what is written to disk and read back, as plain serde types.
//!
//! Invariant: this crate has no logic beyond serde and small constructors, and no
//! dependency on burn, the filesystem or the store. Semantics live in the crates that use it.

pub mod dataset;
pub mod manifest;
pub mod model;
pub mod pipeline;
pub mod plan;
pub mod results;
