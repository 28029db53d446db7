//! Ledger transactions and blocks, with their canonical bounded encoding.
//!
//! Every transaction is signed by the account it spends from (ed25519, domain-separated,
//! bound to the chain id so a transaction cannot be replayed on another chain). The nonce
//! gives replay protection inside a chain. Decoding is bounded everywhere: a transaction
//! larger than [`MAX_TX_BYTES`] or with an over-long field is rejected before any
//! allocation proportional to a claimed length.

use crate::encoding::{DecodeError, Decoder, Encoder};
use crate::Hash32;
use serde::{Deserialize, Serialize};

/// An account address: the account's ed25519 public key.
pub type Address = Hash32;

/// Largest accepted encoded transaction.
pub const MAX_TX_BYTES: usize = 4096;
/// Largest number of transactions in one block.
pub const MAX_BLOCK_TXS: usize = 20_000;
/// Field limits (bytes or items).
pub const MAX_NAME: usize = 64;
pub const MAX_VERSION: usize = 32;
pub const MAX_LICENCE: usize = 64;
pub const MAX_SOURCE: usize = 256;
pub const MAX_ENDPOINT: usize = 256;
pub const MAX_MODELS_PER_PROVIDER: usize = 16;
/// Parents of one published model (a fine-tune has one, a merge several).
pub const MAX_PARENTS: usize = 8;
/// Training datasets named by one published model.
pub const MAX_DATASETS: usize = 32;
/// Item ids in one `add_data_items` transaction (a corpus is added in many).
pub const MAX_ITEMS_PER_TX: usize = 100;
/// Labels an annotation task offers.
pub const MAX_LABELS: usize = 16;
/// Bytes of one label.
pub const MAX_LABEL: usize = 32;
/// Annotators an annotation task waits for.
pub const MAX_ANNOTATORS: u32 = 64;

pub mod domain {
    pub const TX_SIGNATURE: &str = "vouch 2026 transaction signature v1";
    pub const TX_ID: &str = "vouch 2026 transaction id v1";
    pub const HEADER_ID: &str = "vouch 2026 block header id v1";
    pub const HEADER_SIGNATURE: &str = "vouch 2026 block header signature v1";
    pub const BLOCK_SEED: &str = "vouch 2026 block seed v1";
}

/// What a transaction does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// Move `amount` from the sender to `to`.
    Transfer { to: Address, amount: u64 },
    /// Bond `amount` of the sender's balance as stake.
    Stake { amount: u64 },
    /// Start unbonding `amount` of stake; it returns to the balance after the unbonding period.
    Unbond { amount: u64 },
    /// Register (or update) the sender as a provider.
    RegisterProvider {
        models: Vec<Hash32>,
        price_per_token: u64,
        capacity: u32,
        endpoint: String,
    },
    /// Register a model version; the sender becomes its author.
    RegisterModel {
        id: Hash32,
        name: String,
        version: String,
        parent: Option<Hash32>,
        licence: String,
        royalty_bps: u16,
    },
    /// Register a data item; the sender becomes its contributor.
    RegisterData {
        id: Hash32,
        source: String,
        licence: String,
    },
    /// Ask `provider` to run `model` on the input with hash `input_hash`; escrows `max_fee`.
    SubmitJob {
        model: Hash32,
        provider: Address,
        input_hash: Hash32,
        max_tokens: u32,
        max_fee: u64,
    },
    /// The provider commits the result of a job (hashes only).
    CommitResult {
        job: Hash32,
        receipt: Hash32,
        output_hash: Hash32,
        fingerprint: Hash32,
        prompt_tokens: u32,
        output_tokens: u32,
    },
    /// A validator's audit verdict on a committed job.
    AuditVerdict { job: Hash32, pass: bool },
    /// The provider contests a failed audit.
    Dispute { job: Hash32 },
    /// A validator's vote on a disputed job.
    ResolveDispute { job: Hash32, guilty: bool },
    /// Publish a model version with its full lineage: the models it derives from (none for
    /// a base model, one for a fine-tune, several for a merge) and the registered
    /// datasets it was trained on; the sender becomes its author.
    PublishModel {
        id: Hash32,
        name: String,
        version: String,
        parents: Vec<Hash32>,
        datasets: Vec<Hash32>,
        licence: String,
        royalty_bps: u16,
    },
    /// Add items (content ids) to a dataset the sender registered; an item nobody added
    /// before is credited to the sender, one already on the ledger is counted as a
    /// duplicate and credits its first contributor only.
    AddDataItems { dataset: Hash32, items: Vec<Hash32> },
    /// Open an annotation task over data items already on the ledger: each of
    /// `annotators` staked accounts labels every item with one of `labels`; the consensus
    /// label of an item is the one with the most stake behind it; `reward` (escrowed from
    /// the sender) is shared by the annotators who agreed with the consensus. Task id =
    /// transaction id.
    CreateTask {
        items: Vec<Hash32>,
        labels: Vec<String>,
        annotators: u32,
        reward: u64,
    },
    /// An annotator's labels for a task: one index into its `labels` per item, in order.
    SubmitLabels { task: Hash32, labels: Vec<u8> },
    /// Register a dataset of samples generated by `model` (synthetic data): its lineage
    /// points to the model; items are added with `AddDataItems`, and each sample's
    /// receipt (a job on this ledger) travels with the data.
    RegisterSynthetic {
        id: Hash32,
        model: Hash32,
        source: String,
        licence: String,
    },
}

impl Action {
    pub fn tag(&self) -> u8 {
        match self {
            Action::Transfer { .. } => 0,
            Action::Stake { .. } => 1,
            Action::Unbond { .. } => 2,
            Action::RegisterProvider { .. } => 3,
            Action::RegisterModel { .. } => 4,
            Action::RegisterData { .. } => 5,
            Action::SubmitJob { .. } => 6,
            Action::CommitResult { .. } => 7,
            Action::AuditVerdict { .. } => 8,
            Action::Dispute { .. } => 9,
            Action::ResolveDispute { .. } => 10,
            Action::PublishModel { .. } => 11,
            Action::AddDataItems { .. } => 12,
            Action::CreateTask { .. } => 13,
            Action::SubmitLabels { .. } => 14,
            Action::RegisterSynthetic { .. } => 15,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Action::Transfer { .. } => "transfer",
            Action::Stake { .. } => "stake",
            Action::Unbond { .. } => "unbond",
            Action::RegisterProvider { .. } => "register_provider",
            Action::RegisterModel { .. } => "register_model",
            Action::RegisterData { .. } => "register_data",
            Action::SubmitJob { .. } => "submit_job",
            Action::CommitResult { .. } => "commit_result",
            Action::AuditVerdict { .. } => "audit_verdict",
            Action::Dispute { .. } => "dispute",
            Action::ResolveDispute { .. } => "resolve_dispute",
            Action::PublishModel { .. } => "publish_model",
            Action::AddDataItems { .. } => "add_data_items",
            Action::CreateTask { .. } => "create_task",
            Action::SubmitLabels { .. } => "submit_labels",
            Action::RegisterSynthetic { .. } => "register_synthetic",
        }
    }

    fn encode(&self, e: &mut Encoder) {
        e.u8(self.tag());
        match self {
            Action::Transfer { to, amount } => {
                e.fixed(to.as_bytes()).u64(*amount);
            }
            Action::Stake { amount } | Action::Unbond { amount } => {
                e.u64(*amount);
            }
            Action::RegisterProvider {
                models,
                price_per_token,
                capacity,
                endpoint,
            } => {
                e.u32(models.len() as u32);
                for m in models {
                    e.fixed(m.as_bytes());
                }
                e.u64(*price_per_token).u32(*capacity).str(endpoint);
            }
            Action::RegisterModel {
                id,
                name,
                version,
                parent,
                licence,
                royalty_bps,
            } => {
                e.fixed(id.as_bytes()).str(name).str(version);
                opt_hash(e, parent);
                e.str(licence).u32(u32::from(*royalty_bps));
            }
            Action::RegisterData {
                id,
                source,
                licence,
            } => {
                e.fixed(id.as_bytes()).str(source).str(licence);
            }
            Action::SubmitJob {
                model,
                provider,
                input_hash,
                max_tokens,
                max_fee,
            } => {
                e.fixed(model.as_bytes())
                    .fixed(provider.as_bytes())
                    .fixed(input_hash.as_bytes())
                    .u32(*max_tokens)
                    .u64(*max_fee);
            }
            Action::CommitResult {
                job,
                receipt,
                output_hash,
                fingerprint,
                prompt_tokens,
                output_tokens,
            } => {
                e.fixed(job.as_bytes())
                    .fixed(receipt.as_bytes())
                    .fixed(output_hash.as_bytes())
                    .fixed(fingerprint.as_bytes())
                    .u32(*prompt_tokens)
                    .u32(*output_tokens);
            }
            Action::AuditVerdict { job, pass } => {
                e.fixed(job.as_bytes()).u8(u8::from(*pass));
            }
            Action::Dispute { job } => {
                e.fixed(job.as_bytes());
            }
            Action::ResolveDispute { job, guilty } => {
                e.fixed(job.as_bytes()).u8(u8::from(*guilty));
            }
            Action::PublishModel {
                id,
                name,
                version,
                parents,
                datasets,
                licence,
                royalty_bps,
            } => {
                e.fixed(id.as_bytes()).str(name).str(version);
                hashes(e, parents);
                hashes(e, datasets);
                e.str(licence).u32(u32::from(*royalty_bps));
            }
            Action::AddDataItems { dataset, items } => {
                e.fixed(dataset.as_bytes());
                hashes(e, items);
            }
            Action::CreateTask {
                items,
                labels,
                annotators,
                reward,
            } => {
                hashes(e, items);
                e.u32(labels.len() as u32);
                for l in labels {
                    e.str(l);
                }
                e.u32(*annotators).u64(*reward);
            }
            Action::SubmitLabels { task, labels } => {
                e.fixed(task.as_bytes()).u32(labels.len() as u32);
                for l in labels {
                    e.u8(*l);
                }
            }
            Action::RegisterSynthetic {
                id,
                model,
                source,
                licence,
            } => {
                e.fixed(id.as_bytes())
                    .fixed(model.as_bytes())
                    .str(source)
                    .str(licence);
            }
        }
    }

    fn decode(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let h = |d: &mut Decoder<'_>| d.fixed::<32>().map(Hash32);
        Ok(match d.u8()? {
            0 => Action::Transfer {
                to: h(d)?,
                amount: d.u64()?,
            },
            1 => Action::Stake { amount: d.u64()? },
            2 => Action::Unbond { amount: d.u64()? },
            3 => {
                let n = d.u32()? as usize;
                if n > MAX_MODELS_PER_PROVIDER {
                    return Err(DecodeError::TooLong {
                        len: n,
                        limit: MAX_MODELS_PER_PROVIDER,
                    });
                }
                let models = (0..n).map(|_| h(d)).collect::<Result<_, _>>()?;
                Action::RegisterProvider {
                    models,
                    price_per_token: d.u64()?,
                    capacity: d.u32()?,
                    endpoint: d.str(MAX_ENDPOINT)?.to_string(),
                }
            }
            4 => {
                let id = h(d)?;
                let name = d.str(MAX_NAME)?.to_string();
                let version = d.str(MAX_VERSION)?.to_string();
                let parent = opt_hash_decode(d)?;
                let licence = d.str(MAX_LICENCE)?.to_string();
                let bps = d.u32()?;
                let royalty_bps =
                    u16::try_from(bps).map_err(|_| DecodeError::Invalid("royalty_bps"))?;
                Action::RegisterModel {
                    id,
                    name,
                    version,
                    parent,
                    licence,
                    royalty_bps,
                }
            }
            5 => Action::RegisterData {
                id: h(d)?,
                source: d.str(MAX_SOURCE)?.to_string(),
                licence: d.str(MAX_LICENCE)?.to_string(),
            },
            6 => Action::SubmitJob {
                model: h(d)?,
                provider: h(d)?,
                input_hash: h(d)?,
                max_tokens: d.u32()?,
                max_fee: d.u64()?,
            },
            7 => Action::CommitResult {
                job: h(d)?,
                receipt: h(d)?,
                output_hash: h(d)?,
                fingerprint: h(d)?,
                prompt_tokens: d.u32()?,
                output_tokens: d.u32()?,
            },
            8 => Action::AuditVerdict {
                job: h(d)?,
                pass: bool_decode(d)?,
            },
            9 => Action::Dispute { job: h(d)? },
            10 => Action::ResolveDispute {
                job: h(d)?,
                guilty: bool_decode(d)?,
            },
            11 => {
                let id = h(d)?;
                let name = d.str(MAX_NAME)?.to_string();
                let version = d.str(MAX_VERSION)?.to_string();
                let parents = hashes_decode(d, MAX_PARENTS)?;
                let datasets = hashes_decode(d, MAX_DATASETS)?;
                let licence = d.str(MAX_LICENCE)?.to_string();
                let royalty_bps =
                    u16::try_from(d.u32()?).map_err(|_| DecodeError::Invalid("royalty_bps"))?;
                Action::PublishModel {
                    id,
                    name,
                    version,
                    parents,
                    datasets,
                    licence,
                    royalty_bps,
                }
            }
            12 => Action::AddDataItems {
                dataset: h(d)?,
                items: hashes_decode(d, MAX_ITEMS_PER_TX)?,
            },
            13 => {
                let items = hashes_decode(d, MAX_ITEMS_PER_TX)?;
                let n = d.u32()? as usize;
                if n > MAX_LABELS {
                    return Err(DecodeError::TooLong {
                        len: n,
                        limit: MAX_LABELS,
                    });
                }
                let labels = (0..n)
                    .map(|_| d.str(MAX_LABEL).map(str::to_string))
                    .collect::<Result<_, _>>()?;
                Action::CreateTask {
                    items,
                    labels,
                    annotators: d.u32()?,
                    reward: d.u64()?,
                }
            }
            14 => {
                let task = h(d)?;
                let n = d.u32()? as usize;
                if n > MAX_ITEMS_PER_TX {
                    return Err(DecodeError::TooLong {
                        len: n,
                        limit: MAX_ITEMS_PER_TX,
                    });
                }
                let labels = (0..n).map(|_| d.u8()).collect::<Result<_, _>>()?;
                Action::SubmitLabels { task, labels }
            }
            15 => Action::RegisterSynthetic {
                id: h(d)?,
                model: h(d)?,
                source: d.str(MAX_SOURCE)?.to_string(),
                licence: d.str(MAX_LICENCE)?.to_string(),
            },
            _ => return Err(DecodeError::Invalid("unknown action tag")),
        })
    }
}

fn opt_hash(e: &mut Encoder, v: &Option<Hash32>) {
    match v {
        None => {
            e.u8(0);
        }
        Some(h) => {
            e.u8(1).fixed(h.as_bytes());
        }
    }
}

fn opt_hash_decode(d: &mut Decoder<'_>) -> Result<Option<Hash32>, DecodeError> {
    match d.u8()? {
        0 => Ok(None),
        1 => Ok(Some(Hash32(d.fixed()?))),
        _ => Err(DecodeError::Invalid("option flag")),
    }
}

fn hashes(e: &mut Encoder, v: &[Hash32]) {
    e.u32(v.len() as u32);
    for h in v {
        e.fixed(h.as_bytes());
    }
}

fn hashes_decode(d: &mut Decoder<'_>, limit: usize) -> Result<Vec<Hash32>, DecodeError> {
    let n = d.u32()? as usize;
    if n > limit {
        return Err(DecodeError::TooLong { len: n, limit });
    }
    (0..n).map(|_| d.fixed::<32>().map(Hash32)).collect()
}

fn bool_decode(d: &mut Decoder<'_>) -> Result<bool, DecodeError> {
    match d.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::Invalid("bool")),
    }
}

/// A signed transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tx {
    pub from: Address,
    pub nonce: u64,
    /// Fee paid to the block proposer, in base units.
    pub fee: u64,
    pub action: Action,
    /// ed25519 signature over [`Tx::signing_bytes`] under [`domain::TX_SIGNATURE`].
    #[serde(with = "sig_hex")]
    pub signature: [u8; 64],
}

impl Tx {
    /// Canonical bytes of everything except the signature.
    fn body(&self, e: &mut Encoder) {
        e.fixed(self.from.as_bytes()).u64(self.nonce).u64(self.fee);
        self.action.encode(e);
    }

    /// What the sender signs: the chain id followed by the body, so a signature is valid
    /// on one chain only.
    pub fn signing_bytes(&self, chain: &Hash32) -> Vec<u8> {
        let mut e = Encoder::new();
        e.fixed(chain.as_bytes());
        self.body(&mut e);
        e.finish()
    }

    /// The transaction id: hash of the chain id and the unsigned body. Two signatures over
    /// the same body give the same id, so an id names one intent, and the nonce makes it
    /// unique per account.
    pub fn id(&self, chain: &Hash32) -> Hash32 {
        Hash32::digest(domain::TX_ID, &[&self.signing_bytes(chain)])
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        self.body(&mut e);
        e.fixed(&self.signature);
        e.finish()
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        if b.len() > MAX_TX_BYTES {
            return Err(DecodeError::TooLong {
                len: b.len(),
                limit: MAX_TX_BYTES,
            });
        }
        let mut d = Decoder::new(b);
        let tx = Self::decode_from(&mut d)?;
        d.finish()?;
        Ok(tx)
    }

    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Tx {
            from: Hash32(d.fixed()?),
            nonce: d.u64()?,
            fee: d.u64()?,
            action: Action::decode(d)?,
            signature: d.fixed()?,
        })
    }
}

/// A block header. `state_root` is the root of the state after applying the block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub version: u32,
    pub chain: Hash32,
    pub height: u64,
    pub parent: Hash32,
    /// Block time in milliseconds since the Unix epoch, chosen by the proposer.
    pub time: u64,
    pub proposer: Address,
    pub tx_count: u32,
    pub tx_root: Hash32,
    /// Merkle root over the receipt ids committed in this block, in transaction order.
    pub receipt_root: Hash32,
    pub state_root: Hash32,
}

pub const HEADER_BYTES: usize = 4 + 32 + 8 + 32 + 8 + 32 + 4 + 32 * 3;

impl Header {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        self.encode_into(&mut e);
        e.finish()
    }

    fn encode_into(&self, e: &mut Encoder) {
        e.u32(self.version)
            .fixed(self.chain.as_bytes())
            .u64(self.height)
            .fixed(self.parent.as_bytes())
            .u64(self.time)
            .fixed(self.proposer.as_bytes())
            .u32(self.tx_count)
            .fixed(self.tx_root.as_bytes())
            .fixed(self.receipt_root.as_bytes())
            .fixed(self.state_root.as_bytes());
    }

    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        Ok(Header {
            version: d.u32()?,
            chain: Hash32(d.fixed()?),
            height: d.u64()?,
            parent: Hash32(d.fixed()?),
            time: d.u64()?,
            proposer: Hash32(d.fixed()?),
            tx_count: d.u32()?,
            tx_root: Hash32(d.fixed()?),
            receipt_root: Hash32(d.fixed()?),
            state_root: Hash32(d.fixed()?),
        })
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut d = Decoder::new(b);
        let h = Self::decode_from(&mut d)?;
        d.finish()?;
        Ok(h)
    }

    /// The block hash.
    pub fn id(&self) -> Hash32 {
        Hash32::digest(domain::HEADER_ID, &[&self.encode()])
    }

    /// Randomness for the block after this one: derived from the chain, unknown before
    /// this header is final, identical on every node.
    pub fn next_seed(&self) -> Hash32 {
        Hash32::digest(domain::BLOCK_SEED, &[self.id().as_bytes()])
    }
}

/// One validator's signature on a header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub validator: Address,
    #[serde(with = "sig_hex")]
    pub signature: [u8; 64],
}

/// Proof that a header is final: signatures of validators holding more than two thirds
/// of the voting power (one signature in single-validator mode).
///
/// Two kinds: without `simplex`, each vote signs the header id under
/// [`domain::HEADER_SIGNATURE`] (the single-validator engine). With `simplex`, the votes
/// are the BFT engine's own: each signs the engine's message for (`epoch`, `view`,
/// `parent` view, header id) under a namespace derived from the chain id, and the light
/// check rebuilds that message (see `vouch_verify::inclusion`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Certificate {
    pub votes: Vec<Vote>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simplex: Option<SimplexRound>,
}

/// Where in the BFT engine's sequence of views a block was certified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimplexRound {
    pub epoch: u64,
    pub view: u64,
    pub parent: u64,
    /// `finalize` votes, or `notarize` votes for a block made final by a finalized
    /// descendant (the engine finalizes ancestors implicitly).
    pub kind: VoteKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoteKind {
    Finalize,
    Notarize,
}

pub const MAX_VOTES: usize = 256;
/// Set in the encoded vote count when a [`SimplexRound`] follows the votes (blocks of the
/// single-validator engine encode exactly as before).
const SIMPLEX_FLAG: u32 = 1 << 31;

impl Certificate {
    fn encode_into(&self, e: &mut Encoder) {
        let flag = if self.simplex.is_some() {
            SIMPLEX_FLAG
        } else {
            0
        };
        e.u32(self.votes.len() as u32 | flag);
        for v in &self.votes {
            e.fixed(v.validator.as_bytes()).fixed(&v.signature);
        }
        if let Some(r) = &self.simplex {
            e.u64(r.epoch).u64(r.view).u64(r.parent).u8(match r.kind {
                VoteKind::Finalize => 0,
                VoteKind::Notarize => 1,
            });
        }
    }
    fn decode_from(d: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let raw = d.u32()?;
        let n = (raw & !SIMPLEX_FLAG) as usize;
        if n > MAX_VOTES {
            return Err(DecodeError::TooLong {
                len: n,
                limit: MAX_VOTES,
            });
        }
        let votes = (0..n)
            .map(|_| {
                Ok(Vote {
                    validator: Hash32(d.fixed()?),
                    signature: d.fixed()?,
                })
            })
            .collect::<Result<_, DecodeError>>()?;
        let simplex = if raw & SIMPLEX_FLAG != 0 {
            let (epoch, view, parent) = (d.u64()?, d.u64()?, d.u64()?);
            let kind = match d.u8()? {
                0 => VoteKind::Finalize,
                1 => VoteKind::Notarize,
                _ => return Err(DecodeError::Invalid("vote kind")),
            };
            Some(SimplexRound {
                epoch,
                view,
                parent,
                kind,
            })
        } else {
            None
        };
        Ok(Certificate { votes, simplex })
    }
}

/// A finalized block: header, transactions, and the finality certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub header: Header,
    pub txs: Vec<Tx>,
    pub certificate: Certificate,
}

impl Block {
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        self.header.encode_into(&mut e);
        e.u32(self.txs.len() as u32);
        for tx in &self.txs {
            e.bytes(&tx.encode());
        }
        self.certificate.encode_into(&mut e);
        e.finish()
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut d = Decoder::new(b);
        let header = Header::decode_from(&mut d)?;
        let n = d.u32()? as usize;
        if n > MAX_BLOCK_TXS {
            return Err(DecodeError::TooLong {
                len: n,
                limit: MAX_BLOCK_TXS,
            });
        }
        let mut txs = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            txs.push(Tx::decode(d.bytes(MAX_TX_BYTES)?)?);
        }
        let certificate = Certificate::decode_from(&mut d)?;
        d.finish()?;
        if header.tx_count as usize != txs.len() {
            return Err(DecodeError::Invalid(
                "tx_count does not match the transactions",
            ));
        }
        Ok(Block {
            header,
            txs,
            certificate,
        })
    }
}

mod sig_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 64];
        hex::decode_to_slice(&s, &mut out)
            .map_err(|_| serde::de::Error::custom("signature must be 128 hex characters"))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u8) -> Hash32 {
        Hash32([n; 32])
    }

    pub(crate) fn all_actions() -> Vec<Action> {
        vec![
            Action::Transfer {
                to: h(1),
                amount: 5,
            },
            Action::Stake { amount: 7 },
            Action::Unbond { amount: 8 },
            Action::RegisterProvider {
                models: vec![h(2), h(3)],
                price_per_token: 3,
                capacity: 4,
                endpoint: "http://x".into(),
            },
            Action::RegisterModel {
                id: h(4),
                name: "m".into(),
                version: "1".into(),
                parent: Some(h(5)),
                licence: "apache-2.0".into(),
                royalty_bps: 250,
            },
            Action::RegisterData {
                id: h(6),
                source: "s".into(),
                licence: "cc-by-4.0".into(),
            },
            Action::PublishModel {
                id: h(40),
                name: "merge".into(),
                version: "2.0".into(),
                parents: vec![h(41), h(42)],
                datasets: vec![h(43)],
                licence: "apache-2.0".into(),
                royalty_bps: 100,
            },
            Action::AddDataItems {
                dataset: h(44),
                items: vec![h(45), h(46), h(47)],
            },
            Action::CreateTask {
                items: vec![h(48), h(49)],
                labels: vec!["positive".into(), "negative".into()],
                annotators: 3,
                reward: 9_000,
            },
            Action::SubmitLabels {
                task: h(50),
                labels: vec![1, 0],
            },
            Action::RegisterSynthetic {
                id: h(51),
                model: h(52),
                source: "synth".into(),
                licence: "apache-2.0".into(),
            },
            Action::SubmitJob {
                model: h(7),
                provider: h(8),
                input_hash: h(9),
                max_tokens: 10,
                max_fee: 11,
            },
            Action::CommitResult {
                job: h(12),
                receipt: h(13),
                output_hash: h(14),
                fingerprint: h(15),
                prompt_tokens: 16,
                output_tokens: 17,
            },
            Action::AuditVerdict {
                job: h(18),
                pass: false,
            },
            Action::Dispute { job: h(19) },
            Action::ResolveDispute {
                job: h(20),
                guilty: true,
            },
        ]
    }

    #[test]
    fn every_action_round_trips_in_binary_and_json() {
        for (i, action) in all_actions().into_iter().enumerate() {
            let tx = Tx {
                from: h(99),
                nonce: i as u64,
                fee: 1,
                action,
                signature: [i as u8; 64],
            };
            let b = tx.encode();
            assert_eq!(Tx::decode(&b).unwrap(), tx);
            let j = serde_json::to_string(&tx).unwrap();
            assert_eq!(serde_json::from_str::<Tx>(&j).unwrap(), tx);
            // Every strict prefix is an error, never a panic or a different value.
            for cut in 0..b.len() {
                assert!(Tx::decode(&b[..cut]).is_err());
            }
            let mut longer = b.clone();
            longer.push(0);
            assert!(Tx::decode(&longer).is_err());
        }
    }

    #[test]
    fn ids_depend_on_chain_and_body_not_signature() {
        let mut tx = Tx {
            from: h(1),
            nonce: 0,
            fee: 1,
            action: Action::Stake { amount: 1 },
            signature: [0; 64],
        };
        let id = tx.id(&h(50));
        assert_ne!(id, tx.id(&h(51)));
        tx.signature = [1; 64];
        assert_eq!(id, tx.id(&h(50)));
        tx.nonce = 1;
        assert_ne!(id, tx.id(&h(50)));
    }

    #[test]
    fn block_round_trip_and_count_check() {
        let header = Header {
            version: 1,
            chain: h(1),
            height: 3,
            parent: h(2),
            time: 4,
            proposer: h(5),
            tx_count: 1,
            tx_root: h(6),
            receipt_root: h(7),
            state_root: h(8),
        };
        assert_eq!(header.encode().len(), HEADER_BYTES);
        let block = Block {
            header: header.clone(),
            txs: vec![Tx {
                from: h(9),
                nonce: 1,
                fee: 2,
                action: Action::Stake { amount: 3 },
                signature: [4; 64],
            }],
            certificate: Certificate {
                simplex: None,
                votes: vec![Vote {
                    validator: h(5),
                    signature: [6; 64],
                }],
            },
        };
        let b = block.encode();
        assert_eq!(Block::decode(&b).unwrap(), block);
        let mut bad = block.clone();
        bad.header.tx_count = 2;
        assert!(Block::decode(&bad.encode()).is_err());
        assert_eq!(Header::decode(&header.encode()).unwrap(), header);
        // A BFT certificate round-trips; the single-validator form encodes as before
        // (vote count, then votes).
        let mut bft = block.clone();
        bft.certificate.simplex = Some(SimplexRound {
            epoch: 0,
            view: 9,
            parent: 7,
            kind: VoteKind::Notarize,
        });
        let e = bft.encode();
        assert_eq!(Block::decode(&e).unwrap(), bft);
        assert_eq!(e.len(), b.len() + 25);
        let mut bad_kind = e.clone();
        *bad_kind.last_mut().unwrap() = 2;
        assert!(Block::decode(&bad_kind).is_err());
        assert!(Block::decode(&e[..e.len() - 1]).is_err());
    }
}
