//! The node core: the ledger with its mempool ([`chain`]), the boundary to consensus
//! engines and the single-validator engine ([`consensus`]), the provider and validator
//! roles ([`provider`], [`validator`]), keys and the agent-wallet keystore, metrics, and
//! the dev network's genesis ([`dev`]). No HTTP here: `vouch-net` carries jobs, blocks and
//! model files between nodes, `vouch-http` serves the API.

pub mod chain;
pub mod clock;
pub mod consensus;
pub mod dev;
pub mod engine;
pub mod error;
pub mod keys;
pub mod keystore;
pub mod metrics;
pub mod provider;
pub mod validator;

pub use chain::{Chain, TxStatus};
pub use consensus::{Engine, SoloEngine};
pub use dev::{dev_genesis, dev_params, DevKeys, UNIT};
pub use error::{ErrorKind, ServeError};
