//! Pipelines: parse RON files, resolve them into a plan of keyed stages, run what is missing.

pub mod stage;
