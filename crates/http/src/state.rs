//! What every handler shares: the node's chain and roles, and the gateway's budgets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use vouch_crypto::SigningKey;
use vouch_net::blob_store::BlobStore;
use vouch_net::dispatch::Dispatch;
use vouch_node::chain::Chain;
use vouch_node::keystore::Keystore;
use vouch_node::metrics::Metrics;
use vouch_node::provider::ProviderRole;
use vouch_types::Hash32;

use crate::error::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub chain: Arc<Chain>,
    pub provider: Option<Arc<ProviderRole>>,
    pub faucet: Option<Arc<SigningKey>>,
    /// Token for `/admin/*` (key management); `None` disables it.
    pub admin_token: Option<Arc<String>>,
    pub budgets: Arc<Budgets>,
    pub metrics: Arc<Metrics>,
    /// Job dispatch to other nodes' providers (multi-node networks only).
    pub dispatch: Option<Arc<Dispatch>>,
    /// Model files this node serves to peers.
    pub blobs: Option<Arc<BlobStore>>,
    /// This node's API address as peers reach it.
    pub public_api: Option<Arc<String>>,
    /// Seals the agent wallets' secrets at rest.
    pub keystore: Arc<Keystore>,
}

/// Serializes budget updates (read-modify-write of key records) and holds, per custodial
/// wallet, the spend reserved by requests whose escrow is not yet final, so concurrent
/// requests on one key cannot together promise more than the wallet holds.
#[derive(Default)]
pub struct Budgets(pub(crate) Mutex<HashMap<Hash32, u64>>);

pub fn parse_hash(s: &str, what: &str) -> Result<Hash32, ApiError> {
    s.parse()
        .map_err(|e| ApiError::bad_request(format!("{what} must be 64 hex characters: {e}")))
}
