//! `MstShard`: conflict-free replication by Merkle Search Tree anti-entropy.
//!
//! Writes apply locally with a new HLC version and are acknowledged at once, so the shard
//! stays available under partition. Each replica keeps a Merkle Search Tree (the
//! `merkle-search-tree` crate) over `(id, hash of the stored entry)`. Every
//! `sync_interval_ms` a replica picks the next peer and reconciles with it in two messages:
//!
//! 1. `Ranges`: the peer returns its page ranges (start id, end id, page hash).
//! 2. The replica diffs both ways: the ranges where the peer has something it lacks (to
//!    pull) and where it has something the peer lacks (to push), then sends `Exchange` with
//!    the pull ranges and its entries in the push ranges. The peer merges what was pushed
//!    and answers with its entries in the pull ranges, which the replica merges.
//!
//! One `Exchange` carries at most `max_exchange` ranges and entries each way. When a round
//! has more, it pages: each further `Exchange` resumes after the last id the previous page
//! reached, in the pull and the push ranges alike, until both are exhausted. (A page that
//! started again from each range's first id would resend entries already equal and never
//! reach the rest of a large range.) A `max_exchange` of 0 counts as 1.
//!
//! Merging is last-writer-wins on the version (HLC, then node id), so every replica picks the
//! same winner; deletes are tombstones, which replicate and beat older writes. Identical
//! trees have identical root hashes, so equal roots mean equal states. All anti-entropy
//! bytes count as repair bytes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use merkle_search_tree::diff::{diff, OwnedPageRange, PageRangeSnapshot};
use merkle_search_tree::digest::PageDigest;
use merkle_search_tree::MerkleSearchTree;
use serde::{Deserialize, Serialize};

use super::factory::{peers, upgrade, AddressBook, NodeContext, Service};
use super::local::{lww_wins, LocalStore};
use super::txn::BufferedTxn;
use super::{
    HlcClock, ObjectEntry, ObjectId, Readiness, ReplicationType, Result, ShardError, ShardMetadata,
    ShardState, ShardStats, ShardTransaction, TxnOp, Version,
};
use crate::coverage::{self, Corner};
use crate::net::Transport;
use crate::storage::DynStorage;

/// Anti-entropy settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MstOptions {
    /// How often a replica reconciles with its next peer.
    pub sync_interval_ms: u64,
    /// How long one anti-entropy message may take.
    pub rpc_timeout_ms: u64,
    /// Most ranges and entries sent each way in one `Exchange`; a round with more pages
    /// through the rest.
    pub max_exchange: usize,
}

impl Default for MstOptions {
    fn default() -> Self {
        MstOptions {
            sync_interval_ms: 200,
            rpc_timeout_ms: 500,
            max_exchange: 4096,
        }
    }
}

/// One page of a tree on the wire: ids `start..=end` hash to `hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRange {
    /// First id.
    pub start: ObjectId,
    /// Last id.
    pub end: ObjectId,
    /// Page hash.
    pub hash: [u8; 16],
}

/// Anti-entropy requests.
#[derive(Debug, Serialize, Deserialize)]
pub enum MstRpc {
    /// Asks for the peer's page ranges.
    Ranges,
    /// Pushes entries and pulls the peer's entries in the given inclusive id ranges.
    Exchange {
        /// Ranges to send back.
        pull: Vec<(ObjectId, ObjectId)>,
        /// Entries to merge.
        push: Vec<(ObjectId, ObjectEntry)>,
    },
}

/// Anti-entropy replies.
#[derive(Debug, Serialize, Deserialize)]
pub enum MstReply {
    /// The page ranges.
    Ranges(Vec<WireRange>),
    /// Entries in the pulled ranges.
    Entries(Vec<(ObjectId, ObjectEntry)>),
}

type Tree = MerkleSearchTree<[u8; 8], Vec<u8>>;

/// A conflict-free replicated shard.
pub struct MstShard {
    meta: ShardMetadata,
    node: u64,
    local: LocalStore,
    tree: Mutex<Tree>,
    peers: Vec<u64>,
    addresses: AddressBook,
    transport: Option<Transport>,
    readiness: Readiness,
    repair_bytes: AtomicU64,
    next_peer: AtomicUsize,
    me: Weak<MstShard>,
    tasks: super::Tasks,
}

/// Turns received page ranges into the crate's form, rejecting malformed ones.
fn peer_snapshot(ranges: Vec<WireRange>) -> Result<PageRangeSnapshot<[u8; 8]>> {
    let mut out = Vec::with_capacity(ranges.len());
    for r in ranges {
        if r.start > r.end {
            return Err(ShardError::Corrupt(format!(
                "page range {}..={} runs backwards",
                r.start, r.end
            )));
        }
        out.push(OwnedPageRange::new(
            r.start.to_be_bytes(),
            r.end.to_be_bytes(),
            PageDigest::new(r.hash),
        ));
    }
    Ok(PageRangeSnapshot::from(out))
}

/// The tree over every stored entry, and the newest HLC among them.
async fn tree_of(local: &LocalStore) -> Result<(Tree, Option<super::Hlc>)> {
    let mut tree = Tree::default();
    let mut newest = None;
    local
        .walk(&[], |id, e| {
            newest = newest.max(Some(e.version.hlc));
            tree.upsert(id.to_be_bytes(), &e.encode());
            true
        })
        .await?;
    Ok((tree, newest))
}

fn id_of(k: &[u8; 8]) -> ObjectId {
    u64::from_be_bytes(*k)
}

/// Drops from `ranges` what one page of entries covered: the page was read from the first
/// `asked` ranges in order, at most `max` entries ([`MstShard::entries_in`]). A page that
/// is not full covered every asked range; a full one may have stopped inside the range that
/// holds its last id, which then resumes after that id. A full page whose last id lies in
/// none of the asked ranges is refused (the peer did not answer what was asked).
fn advance(
    ranges: &mut VecDeque<(ObjectId, ObjectId)>,
    asked: usize,
    page: &[(ObjectId, ObjectEntry)],
    max: usize,
) -> Result<()> {
    let last = match page.last() {
        Some((id, _)) if page.len() >= max => *id,
        _ => {
            ranges.drain(..asked.min(ranges.len()));
            return Ok(());
        }
    };
    let Some(i) = ranges
        .iter()
        .take(asked)
        .position(|&(s, e)| s <= last && last <= e)
    else {
        return Err(ShardError::Corrupt(format!(
            "entry {last} is outside the {asked} range(s) asked for"
        )));
    };
    ranges.drain(..i);
    match last.checked_add(1) {
        Some(next) if next <= ranges[0].1 => ranges[0].0 = next,
        _ => {
            ranges.pop_front();
        }
    }
    Ok(())
}

impl MstShard {
    /// Builds the shard (rebuilding its tree from storage) and binds its endpoint.
    pub async fn start(meta: ShardMetadata, ctx: NodeContext) -> Result<Arc<MstShard>> {
        let peers = peers(&meta, ctx.node);
        let transport = if peers.is_empty() {
            None
        } else {
            let addr = ctx.addresses.addr(ctx.node, Service::Replication)?;
            Some(
                Transport::bind(addr)
                    .await
                    .map_err(|e| ShardError::Unavailable(e.to_string()))?,
            )
        };
        let hlc = Arc::new(HlcClock::new(ctx.node, ctx.clock.clone()));
        let local = LocalStore::new(ctx.app.clone(), hlc);
        let (tree, newest) = tree_of(&local).await?;
        if let Some(h) = newest {
            coverage::hit_if(local.hlc.observe(h), Corner::HlcRecoveredAhead);
        }
        let shard = Arc::new_cyclic(|me| MstShard {
            meta,
            node: ctx.node,
            local,
            tree: Mutex::new(tree),
            peers,
            addresses: ctx.addresses.clone(),
            transport,
            readiness: Readiness::new(),
            repair_bytes: AtomicU64::new(0),
            next_peer: AtomicUsize::new(ctx.node as usize),
            me: me.clone(),
            tasks: Default::default(),
        });
        if let Some(t) = &shard.transport {
            let weak = Arc::downgrade(&shard);
            t.serve(move |req: MstRpc| {
                let shard = weak.upgrade();
                async move {
                    match shard {
                        Some(s) if s.readiness.is_ready() => s.serve(req).await,
                        _ => Err(ShardError::NotReady),
                    }
                }
            });
        }
        Ok(shard)
    }

    fn options(&self) -> &MstOptions {
        &self.meta.options.mst
    }

    /// Most ranges and entries one `Exchange` carries each way (at least one).
    fn max_exchange(&self) -> usize {
        self.options().max_exchange.max(1)
    }

    fn upsert(&self, stored: &[(ObjectId, ObjectEntry)]) {
        let mut t = self.tree.lock().unwrap_or_else(|e| e.into_inner());
        for (id, e) in stored {
            t.upsert(id.to_be_bytes(), &e.encode());
        }
    }

    /// Replaces the tree with one built from storage.
    async fn rebuild_tree(&self) -> Result<()> {
        let (tree, _) = tree_of(&self.local).await?;
        *self.tree.lock().unwrap_or_else(|e| e.into_inner()) = tree;
        Ok(())
    }

    /// This replica's page ranges.
    fn ranges(&self) -> PageRangeSnapshot<[u8; 8]> {
        let mut t = self.tree.lock().unwrap_or_else(|e| e.into_inner());
        t.root_hash();
        t.serialise_page_ranges()
            .map(PageRangeSnapshot::from)
            .unwrap_or_else(|| PageRangeSnapshot::from(Vec::<OwnedPageRange<[u8; 8]>>::new()))
    }

    /// The root hash of the tree.
    pub fn root_hash(&self) -> Vec<u8> {
        let mut t = self.tree.lock().unwrap_or_else(|e| e.into_inner());
        t.root_hash().as_bytes().to_vec()
    }

    async fn entries_in(
        &self,
        ranges: &[(ObjectId, ObjectId)],
    ) -> Result<Vec<(ObjectId, ObjectEntry)>> {
        let max = self.max_exchange();
        let mut out = Vec::new();
        for &(s, e) in ranges {
            if out.len() >= max {
                break;
            }
            out.extend(self.local.range(s, e, max - out.len()).await?);
        }
        Ok(out)
    }

    async fn merge(&self, entries: Vec<(ObjectId, ObjectEntry)>) -> Result<()> {
        self.local
            .merge(entries, lww_wins, &|stored| self.upsert(stored))
            .await
            .map(|_| ())
    }

    async fn serve(&self, req: MstRpc) -> Result<MstReply> {
        match req {
            MstRpc::Ranges => Ok(MstReply::Ranges(
                self.ranges()
                    .iter()
                    .map(|p| WireRange {
                        start: id_of(p.start()),
                        end: id_of(p.end()),
                        hash: *p.hash().as_bytes(),
                    })
                    .collect(),
            )),
            MstRpc::Exchange { pull, push } => {
                if pull.len() > self.max_exchange() {
                    return Err(ShardError::Invalid(format!(
                        "{} pull ranges, more than {}",
                        pull.len(),
                        self.max_exchange()
                    )));
                }
                self.merge(push).await?;
                Ok(MstReply::Entries(self.entries_in(&pull).await?))
            }
        }
    }

    async fn call(&self, peer: u64, req: MstRpc) -> Result<MstReply> {
        let transport = self.transport.as_ref().ok_or(ShardError::NotReady)?;
        let addr = self.addresses.addr(peer, Service::Replication)?;
        let timeout = Duration::from_millis(self.options().rpc_timeout_ms);
        let sent = bincode::serialized_size(&req).unwrap_or(0);
        self.repair_bytes.fetch_add(sent, Ordering::Relaxed);
        let reply: Result<MstReply> = transport
            .call_idempotent(addr, &req, timeout)
            .await
            .map_err(|e| ShardError::Unavailable(e.to_string()))?;
        if let Ok(r) = &reply {
            let got = bincode::serialized_size(r).unwrap_or(0);
            self.repair_bytes.fetch_add(got, Ordering::Relaxed);
        }
        reply
    }

    /// One anti-entropy round with `peer`. Returns whether the two were already in sync.
    pub async fn sync_with(&self, peer: u64) -> Result<bool> {
        let MstReply::Ranges(theirs) = self.call(peer, MstRpc::Ranges).await? else {
            return Err(ShardError::Corrupt("expected page ranges".into()));
        };
        let theirs = peer_snapshot(theirs)?;
        let mine = self.ranges();
        let pull: Vec<(ObjectId, ObjectId)> = diff(mine.iter(), theirs.iter())
            .iter()
            .map(|d| (id_of(d.start()), id_of(d.end())))
            .collect();
        let push_ranges: Vec<(ObjectId, ObjectId)> = diff(theirs.iter(), mine.iter())
            .iter()
            .map(|d| (id_of(d.start()), id_of(d.end())))
            .collect();
        if pull.is_empty() && push_ranges.is_empty() {
            coverage::hit(Corner::MstInSync);
            return Ok(true);
        }
        let max = self.max_exchange();
        let (mut pull, mut push) = (VecDeque::from(pull), VecDeque::from(push_ranges));
        let mut exchanges = 0u32;
        while !pull.is_empty() || !push.is_empty() {
            let ask_push: Vec<_> = push.iter().take(max).copied().collect();
            let page = self.entries_in(&ask_push).await?;
            advance(&mut push, ask_push.len(), &page, max)?;
            let ask: Vec<_> = pull.iter().take(max).copied().collect();
            let asked = ask.len();
            let MstReply::Entries(got) = self
                .call(
                    peer,
                    MstRpc::Exchange {
                        pull: ask,
                        push: page,
                    },
                )
                .await?
            else {
                return Err(ShardError::Corrupt("expected entries".into()));
            };
            advance(&mut pull, asked, &got, max)?;
            self.merge(got).await?;
            exchanges += 1;
        }
        coverage::hit_if(exchanges > 1, Corner::MstExchangeCapped);
        Ok(false)
    }

    async fn write(
        &self,
        reads: &[(ObjectId, Option<ObjectEntry>)],
        writes: Vec<TxnOp>,
    ) -> Result<Version> {
        self.readiness.check()?;
        if crate::bugs::active(crate::bugs::Bug::MstNoTombstones) {
            return self.write_without_tombstones(reads, writes).await;
        }
        let (version, _) = self
            .local
            .write_local(reads, writes, |_, _| {}, &|stored| self.upsert(stored))
            .await?;
        Ok(version)
    }

    /// Planted bug `mst-no-tombstones`: a delete removes the object's row and rebuilds the
    /// tree from storage, leaving nothing to tell a peer that the object was deleted; the
    /// next anti-entropy round pulls the old value back.
    async fn write_without_tombstones(
        &self,
        reads: &[(ObjectId, Option<ObjectEntry>)],
        writes: Vec<TxnOp>,
    ) -> Result<Version> {
        let drop_tombstones = |batch: &mut crate::storage::WriteBatch,
                               stored: &[(ObjectId, ObjectEntry)]| {
            for (id, e) in stored {
                if e.tombstone {
                    batch.delete(super::object_key(*id));
                }
            }
        };
        let live = |stored: &[(ObjectId, ObjectEntry)]| {
            let kept: Vec<_> = stored
                .iter()
                .filter(|(_, e)| !e.tombstone)
                .cloned()
                .collect();
            self.upsert(&kept)
        };
        let (version, stored) = self
            .local
            .write_local(reads, writes, drop_tombstones, &live)
            .await?;
        if stored.iter().any(|(_, e)| e.tombstone) {
            self.rebuild_tree().await?;
        }
        Ok(version)
    }
}

#[async_trait]
impl ShardState for MstShard {
    fn meta(&self) -> &ShardMetadata {
        &self.meta
    }

    fn replication_type(&self) -> ReplicationType {
        ReplicationType::ConflictFree
    }

    fn storage(&self) -> &DynStorage {
        &self.local.storage
    }

    async fn initialize(&self) -> Result<()> {
        self.readiness.set(true);
        if self.peers.is_empty() {
            return Ok(());
        }
        let weak = self.me.clone();
        let every = Duration::from_millis(self.options().sync_interval_ms.max(1));
        let task = tokio::spawn(async move {
            loop {
                crate::rt::timers::sleep(every).await;
                let Some(shard) = weak.upgrade() else { return };
                if !shard.readiness.is_ready() {
                    return;
                }
                let i = shard.next_peer.fetch_add(1, Ordering::Relaxed);
                let peer = shard.peers[i % shard.peers.len()];
                if let Err(e) = shard.sync_with(peer).await {
                    tracing::debug!(node = shard.node, peer, "anti-entropy failed: {e}");
                }
            }
        });
        self.tasks.push(task);
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        self.readiness.set(false);
        self.tasks.abort_all();
        Ok(())
    }

    fn watch_readiness(&self) -> tokio::sync::watch::Receiver<bool> {
        self.readiness.watch()
    }

    async fn get(&self, id: ObjectId) -> Result<Option<ObjectEntry>> {
        self.readiness.check()?;
        self.local.get(id).await
    }

    async fn count(&self) -> Result<u64> {
        self.readiness.check()?;
        self.local.count().await
    }

    async fn scan(&self, prefix: &[u8], limit: usize) -> Result<Vec<(ObjectId, ObjectEntry)>> {
        self.readiness.check()?;
        self.local.scan(prefix, limit).await
    }

    async fn begin_transaction(&self) -> Result<Box<dyn ShardTransaction>> {
        self.readiness.check()?;
        Ok(Box::new(BufferedTxn::new(upgrade(&self.me)?)))
    }

    async fn commit_transaction(
        &self,
        reads: Vec<(ObjectId, Option<ObjectEntry>)>,
        writes: Vec<TxnOp>,
    ) -> Result<Version> {
        self.write(&reads, writes).await
    }

    async fn create_snapshot(&self) -> Result<String> {
        super::snapshot_local(&self.local.storage).await
    }

    async fn restore_from_snapshot(&self, snapshot_id: &str) -> Result<()> {
        super::restore_local(&self.local.storage, snapshot_id).await?;
        // The tree must describe the restored state.
        self.rebuild_tree().await
    }

    async fn compact_storage(&self) -> Result<()> {
        super::release_older_snapshots(&self.local.storage).await
    }

    fn stats(&self) -> ShardStats {
        ShardStats {
            repair_bytes: self.repair_bytes.load(Ordering::Relaxed),
            root_hash: Some(self.root_hash()),
        }
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(ids: &[ObjectId]) -> Vec<(ObjectId, ObjectEntry)> {
        ids.iter().map(|&i| (i, ObjectEntry::default())).collect()
    }

    #[test]
    fn a_full_page_resumes_after_its_last_id_and_a_short_one_ends_its_ranges() {
        let mut r = VecDeque::from(vec![(0, 9), (20, 29), (40, 49)]);
        // Full (3 of 3), stopped inside the first range: it resumes at 5.
        advance(&mut r, 2, &page(&[1, 3, 4]), 3).unwrap();
        assert_eq!(r, [(5, 9), (20, 29), (40, 49)]);
        // Full, stopped inside the second range: the first is done.
        advance(&mut r, 2, &page(&[7, 9, 21]), 3).unwrap();
        assert_eq!(r, [(22, 29), (40, 49)]);
        // Full, ending on a range's last id: that range is done.
        advance(&mut r, 2, &page(&[23, 28, 29]), 3).unwrap();
        assert_eq!(r, [(40, 49)]);
        // Not full: every asked range is done, even one the page did not reach.
        let mut r = VecDeque::from(vec![(0, 9), (20, 29), (40, 49)]);
        advance(&mut r, 2, &page(&[4]), 3).unwrap();
        assert_eq!(r, [(40, 49)]);
        advance(&mut r, 1, &[], 3).unwrap();
        assert!(r.is_empty());
        // The top of the id space ends its range.
        let mut r = VecDeque::from(vec![(u64::MAX - 1, u64::MAX)]);
        advance(&mut r, 1, &page(&[u64::MAX]), 1).unwrap();
        assert!(r.is_empty());
    }

    #[test]
    fn a_page_outside_the_asked_ranges_is_refused() {
        let mut r = VecDeque::from(vec![(0, 9), (20, 29)]);
        // 25 lies in the second range, which was not asked for.
        let e = advance(&mut r, 1, &page(&[1, 25]), 2).unwrap_err();
        assert!(
            e.to_string().contains("entry 25 is outside the 1 range(s)"),
            "{e}"
        );
        assert_eq!(r.len(), 2, "nothing is dropped on a refused page");
    }
}
