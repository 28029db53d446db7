//! Vouch transport: what travels between nodes.
//!
//! - [`dispatch`]: the p2p job channel as an actor: hellos, job routing with failover,
//!   receipts and trace openings for auditors; its typed wire protocol ([`dispatch::Wire`]).
//! - [`simplex`]: the BFT consensus engine (commonware simplex via `vouch-bft`) over the
//!   authenticated p2p links.
//! - [`chain_follow`]: a node that follows a peer's chain over HTTP, checking every block.
//! - [`blob_store`]: the model files a node holds and serves, by BLAKE3 hash.
//! - [`pull`]: fetching a model from peers, every 256 KiB group verified before it is written.
//! - [`model_follow`]: pulling new versions of the models a node holds (`--follow-models`).

pub mod blob_store;
pub mod chain_follow;
pub mod dispatch;
pub mod model_follow;
pub mod pull;
pub mod simplex;

pub use chain_follow::FollowEngine;
pub use simplex::SimplexEngine;
