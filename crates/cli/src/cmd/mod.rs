//! The commands, one module each (`vouch <command>` is `cmd::<command>`), and the helpers
//! they share.

pub mod apikey;
pub mod block;
pub mod common;
pub mod data;
pub mod embed;
pub mod genesis;
pub mod infer;
pub mod model;
pub mod models;
pub mod node;
pub mod synth;
pub mod task;
pub mod tx;
pub mod up;
pub mod verify;
pub mod wallet;
