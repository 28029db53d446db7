//! Helpers shared by the commands: signing and submitting transactions to a node,
//! writing receipts, short printed forms.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::Path;
use vouch_crypto::SigningKey;
use vouch_types::tx::{Action, Tx};
use vouch_types::{Hash32, Receipt};

use crate::client::Client;

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn write_receipt(path: &Path, r: &Receipt) -> Result<()> {
    let json = serde_json::to_vec_pretty(r)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &json).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A hash the node sent as a hex string (`what` names it in the error).
pub fn hash_field(v: &Value, what: &str) -> Result<Hash32> {
    v.as_str()
        .with_context(|| format!("node status lacks {what}"))?
        .parse()
        .with_context(|| format!("node status: bad {what}"))
}

/// Signs `action` from `key` with its next nonce and the chain's minimum fee.
pub fn sign(client: &Client, status: &Value, key: &SigningKey, action: Action) -> Result<Tx> {
    let chain = hash_field(&status["chain"], "chain")?;
    let fee = status["params"]["min_tx_fee"]
        .as_u64()
        .context("node status lacks min_tx_fee")?;
    let acct = client.get(&format!("/v1/accounts/{}", key.public()))?;
    let nonce = acct["nonce"].as_u64().context("account lacks nonce")?;
    Ok(vouch_state::sign_tx(key, &chain, nonce, fee, action))
}

/// Signs a sequence of actions from `key` with consecutive nonces and submits them; waits
/// for the last one and returns every transaction id. Stops at the first refusal.
pub fn submit_all(client: &Client, key: &SigningKey, actions: Vec<Action>) -> Result<Vec<Hash32>> {
    let status = client.get("/v1/status")?;
    let chain: Hash32 = status["chain"]
        .as_str()
        .context("node status lacks chain")?
        .parse()
        .context("node status: bad chain id")?;
    let fee = status["params"]["min_tx_fee"]
        .as_u64()
        .context("node status lacks min_tx_fee")?;
    let acct = client.get(&format!("/v1/accounts/{}", key.public()))?;
    let nonce = acct["nonce"].as_u64().context("account lacks nonce")?;
    let n = actions.len();
    let mut ids = Vec::with_capacity(n);
    for (i, action) in actions.into_iter().enumerate() {
        let name = action.name();
        let tx: Tx = vouch_state::sign_tx(key, &chain, nonce + i as u64, fee, action);
        let v = client.post(
            "/v1/txs",
            &json!({"tx": hex::encode(tx.encode()), "wait": i + 1 == n}),
        )?;
        let id: Hash32 = v["id"]
            .as_str()
            .with_context(|| format!("{name}: node answered {v}"))?
            .parse()?;
        if i + 1 == n && v["result"]["status"] != "committed" {
            bail!("{name} not committed: {}", v["result"]);
        }
        ids.push(id);
    }
    // Earlier transactions of the sequence land in the same or earlier blocks; a rejection
    // of one of them (checked when its block was built) is reported here.
    for id in &ids {
        let v = client.get(&format!("/v1/txs/{id}"))?;
        if v["result"]["status"] != "committed" {
            bail!("transaction {id} not committed: {}", v["result"]);
        }
    }
    Ok(ids)
}

/// The first 12 characters of a hex id, or `?`.
pub fn short(v: &Value) -> String {
    v.as_str()
        .map_or_else(|| "?".into(), |s| s[..s.len().min(12)].to_string())
}
