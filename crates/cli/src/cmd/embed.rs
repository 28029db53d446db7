//! `vouch embed`: embed text with an embedding model, optionally with a signed receipt.

use anyhow::{bail, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use vouch_inference::models::{self, ModelKind};
use vouch_inference::Embedder;
use vouch_verify::attest;

use super::common::{now_unix, write_receipt};
use crate::keys;

#[derive(Args, Debug)]
pub struct EmbedArgs {
    #[arg(long, default_value = "minilm-l6")]
    model: String,
    /// Text to embed.
    text: String,
    /// Write a signed receipt carrying the embedding here.
    #[arg(long)]
    receipt: Option<PathBuf>,
}

pub fn embed(home: &Path, a: EmbedArgs) -> Result<()> {
    let spec = models::find(&a.model)?;
    if spec.kind != ModelKind::BertEmbedding {
        bail!("{} is not an embedding model (try minilm-l6)", spec.name);
    }
    let model = Embedder::load(spec, home)?;
    match &a.receipt {
        Some(p) => {
            let key = keys::load_or_create(home)?;
            let r = attest::embed(&model, &key, &a.text, now_unix())?;
            println!(
                "{}",
                serde_json::to_string(&r.embedding.as_ref().map(|e| &e.values))?
            );
            write_receipt(p, &r)?;
            eprintln!(
                "[{} dims, model {}, receipt {} -> {}]",
                model.dim(),
                r.model.short(),
                r.id().short(),
                p.display()
            );
        }
        None => println!("{}", serde_json::to_string(&model.embed(&a.text)?)?),
    }
    Ok(())
}
