//! Lineage queries over the model registry: a model's ancestors (the models it derives
//! from, transitively, with the datasets each was trained on) and its descendants
//! (fine-tunes and merges of it, transitively). Pure reads of the state.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use vouch_types::{Address, Hash32};

use crate::State;

/// One dataset a model names as training data, with its first contributor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetRef {
    pub id: Hash32,
    /// `None` if the dataset is not on the ledger (cannot happen for a published model).
    pub source: Option<String>,
    pub licence: Option<String>,
    pub contributor: Option<Address>,
    /// Items first added to the ledger by this dataset.
    pub credited: u64,
    /// For synthetic data: the model that generated it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_by: Option<Hash32>,
}

/// One model in a lineage view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineageNode {
    pub id: Hash32,
    pub name: String,
    pub version: String,
    pub author: Address,
    pub licence: String,
    pub royalty_bps: u16,
    pub registered_height: u64,
    /// Generations away from the queried model: 0 for itself, 1 for a parent or child.
    pub depth: u32,
    pub parents: Vec<Hash32>,
    pub datasets: Vec<DatasetRef>,
}

/// A model with everything it derives from and everything derived from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    pub model: LineageNode,
    /// Breadth first: parents, then grandparents, ...; each model once, at its nearest depth.
    pub ancestors: Vec<LineageNode>,
    /// Breadth first: children, then grandchildren, ...
    pub descendants: Vec<LineageNode>,
    /// Datasets this model generated (synthetic data registered on the ledger).
    #[serde(default)]
    pub generated: Vec<DatasetRef>,
}

impl State {
    fn lineage_node(&self, id: &Hash32, depth: u32) -> Option<LineageNode> {
        let m = self.models.get(id)?;
        Some(LineageNode {
            id: *id,
            name: m.name.clone(),
            version: m.version.clone(),
            author: m.author,
            licence: m.licence.clone(),
            royalty_bps: m.royalty_bps,
            registered_height: m.registered_height,
            depth,
            parents: m.parents(),
            datasets: m.datasets.iter().map(|d| self.dataset_ref(d)).collect(),
        })
    }

    fn dataset_ref(&self, d: &Hash32) -> DatasetRef {
        let data = self.data.get(d);
        DatasetRef {
            id: *d,
            source: data.map(|x| x.source.clone()),
            licence: data.map(|x| x.licence.clone()),
            contributor: data.map(|x| x.contributor),
            credited: data.map_or(0, |x| x.credited),
            generated_by: data.and_then(|x| x.generated_by),
        }
    }

    /// The lineage of `id`, or `None` if no such model is registered. Every model
    /// appears once even where the graph joins again (a merge of two fine-tunes of one base).
    pub fn lineage(&self, id: &Hash32) -> Option<Lineage> {
        let model = self.lineage_node(id, 0)?;
        let walk = |next: &dyn Fn(&Hash32) -> Vec<Hash32>| -> Vec<LineageNode> {
            let mut seen = BTreeSet::from([*id]);
            let mut queue = VecDeque::from([(*id, 0u32)]);
            let mut out = Vec::new();
            while let Some((m, depth)) = queue.pop_front() {
                for n in next(&m) {
                    if seen.insert(n) {
                        if let Some(node) = self.lineage_node(&n, depth + 1) {
                            out.push(node);
                        }
                        queue.push_back((n, depth + 1));
                    }
                }
            }
            out
        };
        let ancestors = walk(&|m| self.models.get(m).map(|x| x.parents()).unwrap_or_default());
        // Children by parent, built once per query (the registry is small next to jobs).
        let mut children: BTreeMap<Hash32, Vec<Hash32>> = BTreeMap::new();
        for (cid, c) in &self.models {
            for p in c.parents() {
                children.entry(p).or_default().push(*cid);
            }
        }
        let descendants = walk(&|m| children.get(m).cloned().unwrap_or_default());
        let generated = self
            .data
            .iter()
            .filter(|(_, d)| d.generated_by == Some(*id))
            .map(|(k, _)| self.dataset_ref(k))
            .collect();
        Some(Lineage {
            model,
            ancestors,
            descendants,
            generated,
        })
    }
}
