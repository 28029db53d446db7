//! The benchmarks, `vouch bench <name>`: one module each.

pub mod audit;
pub mod data;
pub mod engine;
pub mod gateway;
pub mod ledger;
pub mod network;
pub mod pull;
