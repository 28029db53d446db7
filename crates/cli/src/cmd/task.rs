//! `vouch task`: annotation tasks: several staked annotators label the same items; the
//! stake-weighted majority decides, and those who agreed share the reward.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::json;
use std::path::{Path, PathBuf};
use vouch_types::tx::{Action, MAX_ITEMS_PER_TX};
use vouch_types::Hash32;

use super::common::submit_all;
use super::data::LocalData;
use super::wallet::load_wallet;
use crate::client::Client;

#[derive(Subcommand, Debug)]
pub enum TaskCmd {
    /// Open an annotation task over the items of a dataset in the data index (those on
    /// the ledger, at most 100); the reward is escrowed from the wallet.
    Create {
        #[arg(long)]
        dataset: Hash32,
        /// The labels annotators choose from, comma separated.
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        /// Annotators the task waits for.
        #[arg(long, default_value_t = 3)]
        annotators: u32,
        #[arg(long)]
        reward: u64,
        #[arg(long, env = "VOUCH_DATA_INDEX")]
        index: Option<PathBuf>,
    },
    /// Label every item of a task, in order (by label name or index); needs stake.
    Label {
        task: Hash32,
        #[arg(required = true)]
        labels: Vec<String>,
    },
    /// A task, its votes, and its consensus labels once decided.
    Show { task: Hash32 },
}

pub fn task(home: &Path, node: &str, cmd: TaskCmd, json_out: bool) -> Result<()> {
    let client = Client::new(node);
    let v = match cmd {
        TaskCmd::Create {
            dataset,
            labels,
            annotators,
            reward,
            index,
        } => {
            let local = LocalData::open(home, index.as_deref())?;
            let ids: Vec<Hash32> = local.items(&dataset)?.into_iter().map(|x| x.0).collect();
            let known = client.post("/v1/items/lookup", &json!({ "items": ids }))?;
            let known = known["known"].as_object().cloned().unwrap_or_default();
            let mut items: Vec<Hash32> = Vec::new();
            for id in ids {
                if known.contains_key(&id.to_string()) && !items.contains(&id) {
                    items.push(id);
                }
            }
            items.truncate(MAX_ITEMS_PER_TX);
            if items.is_empty() {
                bail!("none of dataset {dataset}'s items is on the ledger");
            }
            let key = load_wallet(home)?;
            let n = items.len();
            let txs = submit_all(
                &client,
                &key,
                vec![Action::CreateTask {
                    items,
                    labels,
                    annotators,
                    reward,
                }],
            )?;
            json!({"task": txs[0], "items": n, "annotators": annotators, "reward": reward})
        }
        TaskCmd::Label { task, labels } => {
            let t = client.get(&format!("/v1/tasks/{task}"))?;
            let names: Vec<String> = t["labels"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let picks = labels
                .iter()
                .map(|l| {
                    names
                        .iter()
                        .position(|n| n == l)
                        .or_else(|| l.parse::<usize>().ok().filter(|i| *i < names.len()))
                        .map(|i| i as u8)
                        .with_context(|| format!("{l:?} is not one of the task's labels {names:?}"))
                })
                .collect::<Result<Vec<u8>>>()?;
            let key = load_wallet(home)?;
            let txs = submit_all(
                &client,
                &key,
                vec![Action::SubmitLabels {
                    task,
                    labels: picks,
                }],
            )?;
            let t = client.get(&format!("/v1/tasks/{task}"))?;
            json!({"task": task, "tx": txs[0], "votes": t["votes"].as_array().map_or(0, Vec::len), "decided": t["decided"]})
        }
        TaskCmd::Show { task } => client.get(&format!("/v1/tasks/{task}"))?,
    };
    if json_out {
        println!("{v}");
    } else {
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(())
}
