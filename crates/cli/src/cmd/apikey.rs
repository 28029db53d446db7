//! `vouch apikey`: gateway API keys bound to wallets with spend limits (run on the
//! node's machine: it reads the node's admin token).

use anyhow::{Context, Result};
use clap::Subcommand;
use serde_json::json;
use std::path::{Path, PathBuf};
use vouch_types::tx::Action;
use vouch_types::Hash32;

use super::common::{hash_field, sign};
use super::wallet::load_wallet;
use crate::client::Client;

#[derive(Subcommand, Debug)]
pub enum ApiKeyCmd {
    /// Create an API key bound to a new wallet held by the gateway (printed once).
    Create {
        /// A name for the key (an agent, an app).
        name: String,
        /// Spend limit per period in base units (0 = none).
        #[arg(long, default_value_t = 0)]
        limit: u64,
        /// Length of the spend-limit period in seconds.
        #[arg(long, default_value_t = 86_400)]
        period_secs: u64,
        /// Fund the new wallet from this machine's wallet with this amount.
        #[arg(long)]
        fund: Option<u64>,
    },
    /// List keys (names, wallets, balances, limits; never the keys).
    List,
    /// Revoke a key by its id.
    Revoke { id: Hash32 },
}

pub fn apikey(home: &Path, node: &str, data: Option<PathBuf>, cmd: ApiKeyCmd) -> Result<()> {
    let data = data.unwrap_or_else(|| home.join("node"));
    let token = std::fs::read_to_string(data.join("admin.token")).with_context(|| {
        format!(
            "no admin token in {} (is this the node's machine?)",
            data.display()
        )
    })?;
    let client = Client::new(node).with_token(token.trim());
    match cmd {
        ApiKeyCmd::Create {
            name,
            limit,
            period_secs,
            fund,
        } => {
            // Funds are checked before the key exists: a key is never created and
            // printed only for its funding to fail for want of money.
            let funding = match fund {
                Some(amount) => {
                    let key = load_wallet(home)?;
                    let plain = Client::new(node);
                    let status = plain.get("/v1/status")?;
                    let acct = plain.get(&format!("/v1/accounts/{}", key.public()))?;
                    let balance = acct["balance"].as_u64().unwrap_or(0);
                    let fee = status["params"]["min_tx_fee"].as_u64().unwrap_or(0);
                    let need = amount.saturating_add(fee);
                    if balance < need {
                        anyhow::bail!(
                            "cannot fund the key with {amount}: wallet {} holds {balance}, \
                             and funding needs {need} (amount + fee); no key was created",
                            key.public()
                        );
                    }
                    Some((amount, key, plain, status))
                }
                None => None,
            };
            let mut v = client.post(
                "/admin/keys",
                &json!({"name": name, "limit": limit, "period_secs": period_secs}),
            )?;
            let mut failed = None;
            if let Some((amount, key, plain, status)) = funding {
                let to: Hash32 = hash_field(&v["wallet"], "wallet")?;
                let r =
                    sign(&plain, &status, &key, Action::Transfer { to, amount }).and_then(|tx| {
                        plain.post(
                            "/v1/txs",
                            &json!({"tx": hex::encode(tx.encode()), "wait": true}),
                        )
                    });
                match r {
                    Ok(r) => {
                        v["funded"] =
                            json!({"amount": amount, "tx": r["id"], "result": r["result"]})
                    }
                    Err(e) => {
                        v["funded"] = json!({"amount": amount, "error": format!("{e:#}")});
                        failed = Some(e);
                    }
                }
            }
            // One JSON document on stdout, funding included.
            println!("{}", serde_json::to_string_pretty(&v)?);
            match failed {
                Some(e) => Err(e.context("the key was created (above) but not funded")),
                None => Ok(()),
            }
        }
        ApiKeyCmd::List => {
            println!(
                "{}",
                serde_json::to_string_pretty(&client.get("/admin/keys")?)?
            );
            Ok(())
        }
        ApiKeyCmd::Revoke { id } => {
            println!(
                "{}",
                client.post(&format!("/admin/keys/{id}/revoke"), &json!({}))?
            );
            Ok(())
        }
    }
}
