//! Persistence for one node: finalized blocks, state snapshots and lookup indexes, in redb.
//!
//! Each finalized block is written in a single redb write transaction with immediate
//! durability (fsync before `commit` returns): the block, its transaction and receipt
//! indexes, the block's events, and every few blocks a state snapshot. A transaction is
//! reported committed only after that returns, so a crash never loses a committed
//! transaction. On open the store loads the latest snapshot and re-applies the blocks after
//! it through the state machine, which re-checks every root against the headers: a damaged
//! file is refused with a clear error instead of producing a silently wrong state.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use vouch_state::{Applied, Event, Genesis, State};
use vouch_types::tx::{Block, Header};
use vouch_types::Hash32;

const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const TXS: TableDefinition<&[u8; 32], (u64, u32)> = TableDefinition::new("tx_index");
const RECEIPTS: TableDefinition<&[u8; 32], (u64, u32)> = TableDefinition::new("receipt_index");
const RECEIPT_BODIES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("receipt_bodies");
const JOBS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("job_history");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Gateway API keys by the hash of the key (never the key itself).
const API_KEYS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("api_keys");
/// Transactions this node signed or answered for and admitted to its mempool, not yet in
/// a block, in admission order: value = transaction id (32 bytes) ‖ encoded transaction.
/// Re-submitted at start, so a crash cannot lose the escrow or the result commit of an
/// answer a client already holds.
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");

/// How often (in blocks) a full state snapshot may be written.
pub const SNAPSHOT_EVERY: u64 = 32;

/// A snapshot is written only once the blocks committed since the last one add up to at
/// least this fraction (in percent) of the last snapshot's size. One snapshot is kept (the
/// key is overwritten), and this bounds the bytes snapshots write to a constant factor of
/// the bytes the blocks themselves write: a state grown large (registration spam) is not
/// rewritten in full every 32 blocks, so the file grows with the chain, not with
/// state size times block count. Replay at start stays bounded by the same amount.
pub const SNAPSHOT_MIN_BLOCK_BYTES_PCT: u64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the ledger database {path}: {reason} (if the file is damaged, move it away and resync or restore a backup)")]
    Open { path: PathBuf, reason: String },
    #[error("ledger database {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("ledger database {path} belongs to chain {found}, but the genesis file gives chain {expected}")]
    WrongChain {
        path: PathBuf,
        expected: Hash32,
        found: Hash32,
    },
    #[error("invalid genesis: {0}")]
    Genesis(String),
    #[error("database error: {0}")]
    Db(String),
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        StoreError::Db(e.to_string())
    }
}

macro_rules! db_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Db(redb::Error::from(e).to_string()) }
        }
    )*};
}
db_err!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// What the explorer and clients see about a job, kept after it leaves the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobHistory {
    pub job: Hash32,
    /// (height, event) in order.
    pub events: Vec<(u64, Event)>,
}

pub struct Store {
    db: Database,
    path: PathBuf,
    /// Bytes of blocks and events committed since the last snapshot.
    since_snapshot: std::sync::atomic::AtomicU64,
    /// Size of the last snapshot written.
    snapshot_len: std::sync::atomic::AtomicU64,
    /// Snapshots written by this process.
    snapshots: std::sync::atomic::AtomicU64,
    /// Next outbox key.
    outbox_seq: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.path.display())
    }
}

fn event_job(e: &Event) -> Option<Hash32> {
    match e {
        Event::JobSubmitted { job, .. }
        | Event::JobCommitted { job, .. }
        | Event::JobAudited { job, .. }
        | Event::JobDisputed { job }
        | Event::JobSettled { job, .. }
        | Event::JobExpired { job, .. }
        | Event::Slashed { job, .. } => Some(*job),
        Event::Unbonded { .. } | Event::DataItemsAdded { .. } | Event::TaskDecided { .. } => None,
    }
}

impl Store {
    /// Opens (or creates) the store at `path` for the chain of `genesis` and returns it
    /// with the current state, rebuilt and checked.
    pub fn open(path: &Path, genesis: &Genesis) -> Result<(Store, State), StoreError> {
        // redb treats some kinds of on-disk damage as unreachable and panics; a damaged
        // file must give an error at start, so the panic is turned into one.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Self::open_inner(path, genesis)
        })) {
            Ok(r) => r,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown damage".into());
                Err(StoreError::Corrupt {
                    path: path.to_path_buf(),
                    reason: msg,
                })
            }
        }
    }

    fn open_inner(path: &Path, genesis: &Genesis) -> Result<(Store, State), StoreError> {
        let genesis_state = genesis
            .state()
            .map_err(|e| StoreError::Genesis(e.to_string()))?;
        let open_err = |reason: String| StoreError::Open {
            path: path.to_path_buf(),
            reason,
        };
        let corrupt = |reason: String| StoreError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let db = if path.exists() {
            Database::open(path).map_err(|e| open_err(e.to_string()))?
        } else {
            Database::create(path).map_err(|e| open_err(e.to_string()))?
        };
        let store = Store {
            db,
            path: path.to_path_buf(),
            since_snapshot: Default::default(),
            snapshot_len: Default::default(),
            snapshots: Default::default(),
            outbox_seq: Default::default(),
        };
        // Create tables and record the chain id on first open.
        {
            let w = store.db.begin_write()?;
            {
                w.open_table(BLOCKS)?;
                w.open_table(EVENTS)?;
                w.open_table(TXS)?;
                w.open_table(RECEIPTS)?;
                w.open_table(RECEIPT_BODIES)?;
                w.open_table(JOBS)?;
                w.open_table(API_KEYS)?;
                let outbox = w.open_table(OUTBOX)?;
                let next = outbox.last()?.map_or(0, |(k, _)| k.value() + 1);
                store
                    .outbox_seq
                    .store(next, std::sync::atomic::Ordering::SeqCst);
                drop(outbox);
                let mut meta = w.open_table(META)?;
                let existing = meta.get("chain")?.map(|v| v.value().to_vec());
                match existing {
                    None => {
                        meta.insert("chain", genesis_state.chain.as_bytes().as_slice())?;
                    }
                    Some(bytes) => {
                        let found: [u8; 32] = bytes
                            .as_slice()
                            .try_into()
                            .map_err(|_| corrupt("chain id record has the wrong length".into()))?;
                        if found != genesis_state.chain.0 {
                            return Err(StoreError::WrongChain {
                                path: path.to_path_buf(),
                                expected: genesis_state.chain,
                                found: Hash32(found),
                            });
                        }
                    }
                }
            }
            w.commit()?;
        }
        let state = store.rebuild(genesis_state)?;
        let snap_len = {
            let r = store.db.begin_read()?;
            let meta = r.open_table(META)?;
            let len = meta.get("snapshot")?.map_or(0, |v| v.value().len() as u64);
            len
        };
        store
            .snapshot_len
            .store(snap_len, std::sync::atomic::Ordering::Relaxed);
        Ok((store, state))
    }

    fn corrupt(&self, reason: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            reason,
        }
    }

    /// Latest snapshot, then every block after it through the state machine.
    fn rebuild(&self, genesis: State) -> Result<State, StoreError> {
        let r = self.db.begin_read()?;
        let meta = r.open_table(META)?;
        let mut state = match meta.get("snapshot")? {
            None => genesis,
            Some(v) => {
                let s: State = serde_json::from_slice(v.value())
                    .map_err(|e| self.corrupt(format!("state snapshot does not decode: {e}")))?;
                if s.chain != genesis.chain {
                    return Err(self.corrupt("state snapshot is for another chain".into()));
                }
                s
            }
        };
        let blocks = r.open_table(BLOCKS)?;
        let head = blocks.last()?.map(|(k, _)| k.value()).unwrap_or(0);
        if state.height > head {
            return Err(self.corrupt(format!(
                "snapshot is at height {} but the last block is {head}",
                state.height
            )));
        }
        if state.height > 0 {
            let b = self
                .block(state.height)?
                .ok_or_else(|| self.corrupt(format!("block {} is missing", state.height)))?;
            if b.header.state_root != state.root() || b.header.id() != state.last_block {
                return Err(self.corrupt(format!(
                    "state snapshot does not match block {}",
                    state.height
                )));
            }
        }
        // Every stored block must decode and link to its parent, whether or not it is
        // replayed: damage anywhere in the chain is found at start.
        let mut parent: Option<Hash32> = None;
        for (i, entry) in blocks.iter()?.enumerate() {
            let (k, v) = entry?;
            let b = Block::decode(v.value())
                .map_err(|e| self.corrupt(format!("block {} does not decode: {e}", k.value())))?;
            if b.header.height != k.value() || b.header.height != i as u64 + 1 {
                return Err(self.corrupt(format!(
                    "block at key {} has height {}",
                    k.value(),
                    b.header.height
                )));
            }
            if let Some(p) = parent {
                if b.header.parent != p {
                    return Err(
                        self.corrupt(format!("block {} does not link to its parent", k.value()))
                    );
                }
            }
            parent = Some(b.header.id());
        }
        for h in state.height + 1..=head {
            let b = self
                .block(h)?
                .ok_or_else(|| self.corrupt(format!("block {h} is missing")))?;
            state
                .apply_block(&b, false)
                .map_err(|e| self.corrupt(format!("block {h} does not replay: {e}")))?;
        }
        if blocks.len()? != head {
            return Err(self.corrupt(format!(
                "{} blocks stored but the last is at height {head}",
                blocks.len()?
            )));
        }
        Ok(state)
    }

    /// Persists a finalized block durably. `state` is the state after it.
    pub fn commit(
        &self,
        block: &Block,
        applied: &Applied,
        state: &State,
    ) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        let height = block.header.height;
        let chain = block.header.chain;
        let w = self.db.begin_write()?;
        let mut written = 0u64;
        let mut snap_len = None;
        {
            let encoded = block.encode();
            let block_len = encoded.len() as u64;
            let mut blocks = w.open_table(BLOCKS)?;
            blocks.insert(height, encoded.as_slice())?;
            let mut txs = w.open_table(TXS)?;
            for (i, tx) in block.txs.iter().enumerate() {
                txs.insert(tx.id(&chain).as_bytes(), (height, i as u32))?;
            }
            let mut receipts = w.open_table(RECEIPTS)?;
            for (i, r) in applied.receipts.iter().enumerate() {
                receipts.insert(r.as_bytes(), (height, i as u32))?;
            }
            let mut events = w.open_table(EVENTS)?;
            let ev = serde_json::to_vec(&applied.events).expect("events serialize");
            events.insert(height, ev.as_slice())?;
            written += block_len + ev.len() as u64;
            let mut jobs = w.open_table(JOBS)?;
            for e in &applied.events {
                let Some(job) = event_job(e) else { continue };
                let mut hist = match jobs.get(job.as_bytes())? {
                    Some(v) => serde_json::from_slice(v.value())
                        .map_err(|err| self.corrupt(format!("job history: {err}")))?,
                    None => JobHistory {
                        job,
                        events: Vec::new(),
                    },
                };
                hist.events.push((height, e.clone()));
                let bytes = serde_json::to_vec(&hist).expect("history serializes");
                jobs.insert(job.as_bytes(), bytes.as_slice())?;
            }
            // Outbox entries this block commits are done.
            let mut outbox = w.open_table(OUTBOX)?;
            if !outbox.is_empty()? {
                let ids: std::collections::HashSet<Hash32> =
                    block.txs.iter().map(|t| t.id(&chain)).collect();
                let mut done = Vec::new();
                for e in outbox.iter()? {
                    let (k, v) = e?;
                    let v = v.value();
                    if v.len() >= 32 && ids.contains(&Hash32(v[..32].try_into().expect("32"))) {
                        done.push(k.value());
                    }
                }
                for k in done {
                    outbox.remove(k)?;
                }
            }
            drop(outbox);
            let since = self.since_snapshot.load(Ordering::Relaxed) + written;
            let due =
                self.snapshot_len.load(Ordering::Relaxed) * SNAPSHOT_MIN_BLOCK_BYTES_PCT / 100;
            if height.is_multiple_of(SNAPSHOT_EVERY) && since >= due {
                let mut meta = w.open_table(META)?;
                let snap = serde_json::to_vec(state).expect("state serializes");
                meta.insert("snapshot", snap.as_slice())?;
                snap_len = Some(snap.len() as u64);
            }
        }
        w.commit()?;
        match snap_len {
            Some(n) => self.snapshot_written(n),
            None => {
                self.since_snapshot.fetch_add(written, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn snapshot_written(&self, len: u64) {
        use std::sync::atomic::Ordering;
        self.snapshot_len.store(len, Ordering::Relaxed);
        self.since_snapshot.store(0, Ordering::Relaxed);
        self.snapshots.fetch_add(1, Ordering::Relaxed);
    }

    /// State snapshots this process has written (at block commits and on shutdown).
    pub fn snapshots_written(&self) -> u64 {
        self.snapshots.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Writes a snapshot of `state` now (on clean shutdown, so the next start is fast).
    pub fn snapshot(&self, state: &State) -> Result<(), StoreError> {
        let w = self.db.begin_write()?;
        let len;
        {
            let mut meta = w.open_table(META)?;
            let snap = serde_json::to_vec(state).expect("state serializes");
            meta.insert("snapshot", snap.as_slice())?;
            len = snap.len() as u64;
        }
        w.commit()?;
        self.snapshot_written(len);
        Ok(())
    }

    pub fn block(&self, height: u64) -> Result<Option<Block>, StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(BLOCKS)?;
        let Some(v) = t.get(height)? else {
            return Ok(None);
        };
        Block::decode(v.value())
            .map(Some)
            .map_err(|e| self.corrupt(format!("block {height} does not decode: {e}")))
    }

    pub fn head(&self) -> Result<Option<Header>, StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(BLOCKS)?;
        let Some((k, v)) = t.last()? else {
            return Ok(None);
        };
        Block::decode(v.value())
            .map(|b| Some(b.header))
            .map_err(|e| self.corrupt(format!("block {} does not decode: {e}", k.value())))
    }

    pub fn events(&self, height: u64) -> Result<Vec<Event>, StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(EVENTS)?;
        match t.get(height)? {
            None => Ok(Vec::new()),
            Some(v) => serde_json::from_slice(v.value())
                .map_err(|e| self.corrupt(format!("events of block {height}: {e}"))),
        }
    }

    /// (height, index in block) of a committed transaction.
    pub fn tx_location(&self, id: &Hash32) -> Result<Option<(u64, u32)>, StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(TXS)?;
        Ok(t.get(id.as_bytes())?.map(|v| v.value()))
    }

    /// (height, leaf index in the block's receipt tree) of a committed receipt.
    pub fn receipt_location(&self, id: &Hash32) -> Result<Option<(u64, u32)>, StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(RECEIPTS)?;
        Ok(t.get(id.as_bytes())?.map(|v| v.value()))
    }

    /// Keeps a full receipt (the provider's copy, served to clients and auditors).
    ///
    /// Written without its own fsync: the next block commit makes it durable, and the
    /// transaction committing this receipt's hashes can only be in that block or a later
    /// one, so a receipt named by a durable block is always on disk (writes to the
    /// database are durable in order). A provider calls [`Store::sync`] before it hands
    /// the receipt to anyone.
    pub fn put_receipt(&self, id: &Hash32, json: &[u8]) -> Result<(), StoreError> {
        let mut w = self.db.begin_write()?;
        w.set_durability(redb::Durability::None)
            .map_err(|e| StoreError::Db(e.to_string()))?;
        {
            let mut t = w.open_table(RECEIPT_BODIES)?;
            t.insert(id.as_bytes(), json)?;
        }
        w.commit()?;
        Ok(())
    }

    pub fn receipt(&self, id: &Hash32) -> Result<Option<Vec<u8>>, StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(RECEIPT_BODIES)?;
        Ok(t.get(id.as_bytes())?.map(|v| v.value().to_vec()))
    }

    pub fn job_history(&self, job: &Hash32) -> Result<Option<JobHistory>, StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(JOBS)?;
        match t.get(job.as_bytes())? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(v.value())
                .map(Some)
                .map_err(|e| self.corrupt(format!("job history: {e}"))),
        }
    }

    /// Appends a transaction to the outbox, without its own fsync: callers that hand out
    /// something depending on it call [`Store::sync`] first. Appended in admission
    /// order (under the mempool's lock), so what survives a crash is a prefix of what was
    /// admitted, and each sender's nonces in it have no gaps.
    pub fn outbox_push(&self, id: &Hash32, tx: &[u8]) -> Result<(), StoreError> {
        let seq = self
            .outbox_seq
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut w = self.db.begin_write()?;
        w.set_durability(redb::Durability::None)
            .map_err(|e| StoreError::Db(e.to_string()))?;
        {
            let mut t = w.open_table(OUTBOX)?;
            let mut v = Vec::with_capacity(32 + tx.len());
            v.extend_from_slice(id.as_bytes());
            v.extend_from_slice(tx);
            t.insert(seq, v.as_slice())?;
        }
        w.commit()?;
        Ok(())
    }

    /// The outbox in admission order: (key, transaction id, encoded transaction).
    pub fn outbox(&self) -> Result<Vec<(u64, Hash32, Vec<u8>)>, StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(OUTBOX)?;
        let mut out = Vec::new();
        for e in t.iter()? {
            let (k, v) = e?;
            let v = v.value();
            if v.len() < 32 {
                return Err(self.corrupt(format!("outbox entry {} is truncated", k.value())));
            }
            out.push((
                k.value(),
                Hash32(v[..32].try_into().expect("32")),
                v[32..].to_vec(),
            ));
        }
        Ok(out)
    }

    /// Removes outbox entries (committed, or refused for good).
    pub fn outbox_remove(&self, keys: &[u64]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut w = self.db.begin_write()?;
        w.set_durability(redb::Durability::None)
            .map_err(|e| StoreError::Db(e.to_string()))?;
        {
            let mut t = w.open_table(OUTBOX)?;
            for k in keys {
                t.remove(*k)?;
            }
        }
        w.commit()?;
        Ok(())
    }

    /// Removes the outbox entries of transactions that will never commit (rejected when
    /// a block was built, or dropped from the mempool): they are not revived at start.
    pub fn outbox_forget(&self, ids: &std::collections::HashSet<Hash32>) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let keys: Vec<u64> = self
            .outbox()?
            .into_iter()
            .filter(|(_, id, _)| ids.contains(id))
            .map(|(k, _, _)| k)
            .collect();
        self.outbox_remove(&keys)
    }

    /// Makes every earlier write durable (one fsync): receipts, outbox entries and spend
    /// updates written without their own.
    pub fn sync(&self) -> Result<(), StoreError> {
        let w = self.db.begin_write()?;
        {
            let mut meta = w.open_table(META)?;
            let n = meta
                .get("syncs")?
                .and_then(|v| <[u8; 8]>::try_from(v.value()).ok())
                .map_or(0, u64::from_le_bytes);
            meta.insert("syncs", (n + 1).to_le_bytes().as_slice())?;
        }
        w.commit()?;
        Ok(())
    }

    /// Stores a gateway API key record under the hash of the key, durably.
    pub fn put_api_key(&self, key_hash: &Hash32, record: &[u8]) -> Result<(), StoreError> {
        self.write_api_key(key_hash, record, redb::Durability::Immediate)
    }

    /// Stores a key record's spend update without its own fsync; the next block commit
    /// makes it durable, and the escrow a request pays can only commit in that block or
    /// later, so no durable spend is ever missing from a durable key record.
    pub fn put_api_key_deferred(&self, key_hash: &Hash32, record: &[u8]) -> Result<(), StoreError> {
        self.write_api_key(key_hash, record, redb::Durability::None)
    }

    fn write_api_key(
        &self,
        key_hash: &Hash32,
        record: &[u8],
        durability: redb::Durability,
    ) -> Result<(), StoreError> {
        let mut w = self.db.begin_write()?;
        w.set_durability(durability)
            .map_err(|e| StoreError::Db(e.to_string()))?;
        {
            let mut t = w.open_table(API_KEYS)?;
            t.insert(key_hash.as_bytes(), record)?;
        }
        w.commit()?;
        Ok(())
    }

    pub fn api_key(&self, key_hash: &Hash32) -> Result<Option<Vec<u8>>, StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(API_KEYS)?;
        Ok(t.get(key_hash.as_bytes())?.map(|v| v.value().to_vec()))
    }

    pub fn api_keys(&self) -> Result<Vec<(Hash32, Vec<u8>)>, StoreError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(API_KEYS)?;
        let mut out = Vec::new();
        for e in t.iter()? {
            let (k, v) = e?;
            out.push((Hash32(*k.value()), v.value().to_vec()));
        }
        Ok(out)
    }
}
