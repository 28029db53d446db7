//! `vouch block`: blocks.

use anyhow::Result;
use clap::Subcommand;

use crate::client::Client;

#[derive(Subcommand, Debug)]
pub enum BlockCmd {
    /// Header, certificate, transactions and events of a block (`latest` for the head).
    Show { height: String },
}

pub fn block(node: &str, cmd: BlockCmd) -> Result<()> {
    let BlockCmd::Show { height } = cmd;
    let v = Client::new(node).get(&format!("/v1/blocks/{height}"))?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}
