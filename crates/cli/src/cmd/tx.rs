//! `vouch tx`: transaction status.

use anyhow::Result;
use clap::Subcommand;
use vouch_types::Hash32;

use crate::client::Client;

#[derive(Subcommand, Debug)]
pub enum TxCmd {
    /// Whether a transaction is pending, committed (where) or rejected (why).
    Status { id: Hash32 },
}

pub fn tx(node: &str, cmd: TxCmd) -> Result<()> {
    let TxCmd::Status { id } = cmd;
    let v = Client::new(node).get(&format!("/v1/txs/{id}"))?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}
