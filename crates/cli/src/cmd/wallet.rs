//! `vouch wallet`: wallet keys, balances, faucet, transfers and stake.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::json;
use std::path::{Path, PathBuf};
use vouch_crypto::SigningKey;
use vouch_types::tx::Action;
use vouch_types::Hash32;

use super::common::sign;
use crate::client::Client;

#[derive(Subcommand, Debug)]
pub enum WalletCmd {
    /// Create a wallet key (and ask a dev node's faucet for funds).
    New {
        /// Replace an existing wallet key (its funds become unreachable).
        #[arg(long)]
        force: bool,
    },
    /// Print the wallet's address.
    Address,
    /// Balance, stake and nonce of the wallet (or any address).
    Balance { address: Option<Hash32> },
    /// Ask the node's dev faucet for funds.
    Faucet {
        #[arg(long)]
        amount: Option<u64>,
    },
    /// Send funds to another address.
    Send { to: Hash32, amount: u64 },
    /// Bond part of the balance as stake (what annotation votes and provider registration
    /// weigh).
    Stake { amount: u64 },
    /// Start unbonding stake; it returns to the balance after the unbonding period.
    Unbond { amount: u64 },
}

pub fn wallet_path(home: &Path) -> PathBuf {
    home.join("keys").join("wallet.key")
}

pub fn load_wallet(home: &Path) -> Result<SigningKey> {
    vouch_node::keys::load(&wallet_path(home))?.with_context(|| {
        format!(
            "no wallet at {}; create one with `vouch wallet new`",
            wallet_path(home).display()
        )
    })
}

pub fn wallet(home: &Path, node: &str, cmd: WalletCmd, json_out: bool) -> Result<()> {
    let client = Client::new(node);
    match cmd {
        WalletCmd::New { force } => {
            let path = wallet_path(home);
            if path.exists() {
                if !force {
                    bail!(
                        "a wallet already exists at {} (use --force to replace it)",
                        path.display()
                    );
                }
                std::fs::remove_file(&path)?;
            }
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            vouch_node::keys::create(&path, &key)?;
            if !json_out {
                println!("{}", key.public());
            }
            eprintln!("wallet key written to {}", path.display());
            let faucet = client.post("/v1/faucet", &json!({"address": key.public()}));
            match &faucet {
                Ok(v) => eprintln!(
                    "faucet sent {} (tx {})",
                    v["amount"],
                    v["id"].as_str().unwrap_or("")
                ),
                Err(e) => eprintln!("no faucet funds: {e:#}"),
            }
            if json_out {
                let faucet = match faucet {
                    Ok(v) => v,
                    Err(e) => json!({"error": format!("{e:#}")}),
                };
                println!(
                    "{}",
                    json!({"address": key.public(), "key_file": path, "faucet": faucet})
                );
            }
            Ok(())
        }
        WalletCmd::Address => {
            let a = load_wallet(home)?.public();
            if json_out {
                println!("{}", json!({"address": a}));
            } else {
                println!("{a}");
            }
            Ok(())
        }
        WalletCmd::Balance { address } => {
            let addr = match address {
                Some(a) => a,
                None => load_wallet(home)?.public(),
            };
            let v = client.get(&format!("/v1/accounts/{addr}"))?;
            if json_out {
                println!("{v}");
            } else {
                println!(
                    "address {addr}\nbalance {}\nstake   {}\nnonce   {}\nheight  {}",
                    v["balance"], v["stake"], v["nonce"], v["height"]
                );
            }
            Ok(())
        }
        WalletCmd::Faucet { amount } => {
            let key = load_wallet(home)?;
            let v = client.post(
                "/v1/faucet",
                &json!({"address": key.public(), "amount": amount}),
            )?;
            println!("{v}");
            Ok(())
        }
        WalletCmd::Send { to, amount } => {
            submit_one(home, &client, Action::Transfer { to, amount }, "transfer")
        }
        WalletCmd::Stake { amount } => submit_one(home, &client, Action::Stake { amount }, "stake"),
        WalletCmd::Unbond { amount } => {
            submit_one(home, &client, Action::Unbond { amount }, "unbond")
        }
    }
}

/// Signs `action` from the wallet, submits it, waits for its block, prints the result.
fn submit_one(home: &Path, client: &Client, action: Action, what: &str) -> Result<()> {
    let key = load_wallet(home)?;
    let status = client.get("/v1/status")?;
    let tx = sign(client, &status, &key, action)?;
    let v = client.post(
        "/v1/txs",
        &json!({"tx": hex::encode(tx.encode()), "wait": true}),
    )?;
    println!("{v}");
    if v["result"]["status"] != "committed" {
        bail!("{what} not committed: {}", v["result"]);
    }
    Ok(())
}
