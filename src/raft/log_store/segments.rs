//! The Raft log's own on-device format: an append-only, segmented log of CRC-framed records on
//! a [`BlockDevice`], and its recovery. Entries are opaque bytes here; the log store above
//! gives them meaning.
//!
//! **Layout.** The device starts with two superblock copies (one sector each), then fixed-size
//! segment slots. A superblock holds the log's small durable state (the vote and the purge
//! point, as bytes the layer above encodes), the segment size and the first live segment; the
//! two copies are written alternately with a rising sequence number, so a torn write of one
//! leaves the other. A segment starts with a header record naming its sequence number; entries
//! and truncation markers follow as records.
//!
//! **Records.** `magic | crc | len | kind | segment | prev | epoch | synced | superblock |
//! payload`. The CRC covers everything after it, so a record is valid only in the segment it
//! was written for (a reused slot's old records fail); `prev` chains each record to the CRC of
//! the one before it; `epoch` counts the log's opens, never goes back along the chain, and
//! rises at every open, so a record left over from a write a crash lost never joins what is
//! written after the crash, even byte for byte the same. `synced` is how far the log was
//! durable when the record was written, `superblock` the newest superblock known durable.
//!
//! **Writes.** An append writes its records in one go and syncs once (group commit). A
//! truncation appends a marker and syncs. A purge rewrites the superblock (synced) and frees
//! the slots of segments that hold only purged entries, for reuse.
//!
//! **Recovery** replays the live segments in order and stops at the first record that is not
//! valid or does not chain (a torn or lost write after the last sync). Everything after that
//! point is dropped, unless some valid record beyond it (in any slot) says the log was durable
//! past it, or any record says a newer superblock was durable than the newest valid copy: then
//! synced bytes were damaged, and the log refuses to open (fail-stop) instead of losing them.
//! What it cannot tell from a torn write is damage to the newest synced batch, or to the
//! newest superblock copy, when nothing was written after it. Every read checks its record's
//! CRC, so damaged bytes are never served.

use std::collections::{BTreeSet, VecDeque};

use crate::coverage::{self, Corner};
use crate::storage::DynDevice;

/// The device's sector: each superblock copy has one.
pub const SECTOR: u64 = 4096;
/// Where the first segment slot starts (after the two superblock copies).
const SEGMENTS_AT: u64 = 2 * SECTOR;
/// The default segment size.
pub const DEFAULT_SEGMENT_BYTES: u64 = 1 << 20;
/// The smallest segment size allowed.
pub const MIN_SEGMENT_BYTES: u64 = 512;
/// The largest segment size allowed (offsets within a segment fit 32 bits).
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;

const MAGIC: u32 = 0x474c_444f;
/// Bytes before a record's payload.
pub const HEADER: usize = 48;

const KIND_SEGMENT: u8 = 1;
const KIND_ENTRY: u8 = 2;
const KIND_TRUNCATE: u8 = 3;
const KIND_SUPER: u8 = 4;

/// Why the log failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The device failed.
    #[error("log device: {what}: {source}")]
    Io {
        /// What the log was doing.
        what: String,
        /// The device's error.
        source: std::io::Error,
    },
    /// The device holds bytes the log did not write there, or lost synced ones.
    #[error("log corrupt at {at}: {what}")]
    Corrupt {
        /// Where (segment, slot, offset).
        at: String,
        /// What is wrong.
        what: String,
    },
    /// A request the log cannot honour (an entry too large, an index out of order).
    #[error("{0}")]
    Invalid(String),
    /// An earlier write or sync failed; what reached the device is unknown until reopened.
    #[error("log stopped after an earlier error: {0}")]
    Stopped(String),
}

type Result<T> = std::result::Result<T, LogError>;

/// A position in the log: segment sequence number and offset within it, ordered.
fn pos(seq: u64, offset: u64) -> u64 {
    (seq << 32) | offset
}

/// What a record says about the log when it is written.
#[derive(Debug, Clone, Copy, Default)]
struct Stamp {
    /// The log's open count.
    epoch: u32,
    /// How far the log was durable.
    synced: u64,
    /// The newest superblock sequence number known durable.
    superblock: u64,
}

/// Appends one framed record to `out`; returns its CRC.
fn frame(out: &mut Vec<u8>, kind: u8, seg: u64, prev: u32, stamp: Stamp, payload: &[u8]) -> u32 {
    let start = out.len();
    out.reserve(HEADER + payload.len());
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[kind, 0, 0, 0]);
    out.extend_from_slice(&seg.to_le_bytes());
    out.extend_from_slice(&prev.to_le_bytes());
    out.extend_from_slice(&stamp.epoch.to_le_bytes());
    out.extend_from_slice(&stamp.synced.to_le_bytes());
    out.extend_from_slice(&stamp.superblock.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    crc
}

/// A record's header fields.
#[derive(Debug, Clone, Copy)]
struct Rec {
    kind: u8,
    len: usize,
    seg: u64,
    prev: u32,
    stamp: Stamp,
    crc: u32,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The record at `at` in `buf`, if it is whole and its CRC holds.
fn parse(buf: &[u8], at: usize) -> Option<(Rec, &[u8])> {
    let head = buf.get(at..at.checked_add(HEADER)?)?;
    if u32_at(head, 0) != MAGIC {
        return None;
    }
    let len = u32_at(head, 8) as usize;
    let end = (at + HEADER).checked_add(len)?;
    let whole = buf.get(at..end)?;
    let crc = u32_at(head, 4);
    if crc32fast::hash(&whole[8..]) != crc {
        return None;
    }
    let rec = Rec {
        kind: head[12],
        len,
        seg: u64_at(head, 16),
        prev: u32_at(head, 24),
        stamp: Stamp {
            epoch: u32_at(head, 28),
            synced: u64_at(head, 32),
            superblock: u64_at(head, 40),
        },
        crc,
    };
    Some((rec, &whole[HEADER..]))
}

/// The log's small durable state, in the superblock.
#[derive(Debug, Clone, Default, PartialEq)]
struct Superblock {
    seq: u64,
    segment_bytes: u64,
    first_segment: u64,
    epoch: u32,
    purged: Option<u64>,
    state: Vec<u8>,
}

/// Bytes of a superblock's payload before its state.
const SUPER_FIXED: usize = 37;

impl Superblock {
    fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(SUPER_FIXED + self.state.len());
        p.extend_from_slice(&self.seq.to_le_bytes());
        p.extend_from_slice(&self.segment_bytes.to_le_bytes());
        p.extend_from_slice(&self.first_segment.to_le_bytes());
        p.extend_from_slice(&self.epoch.to_le_bytes());
        p.push(u8::from(self.purged.is_some()));
        p.extend_from_slice(&self.purged.unwrap_or(0).to_le_bytes());
        p.extend_from_slice(&self.state);
        let mut out = Vec::with_capacity(HEADER + p.len());
        frame(&mut out, KIND_SUPER, 0, 0, Stamp::default(), &p);
        out
    }

    fn decode(sector: &[u8]) -> Option<Superblock> {
        let (rec, p) = parse(sector, 0)?;
        if rec.kind != KIND_SUPER || p.len() < SUPER_FIXED || p[28] > 1 {
            return None;
        }
        Some(Superblock {
            seq: u64_at(p, 0),
            segment_bytes: u64_at(p, 8),
            first_segment: u64_at(p, 16),
            epoch: u32_at(p, 24),
            purged: (p[28] == 1).then(|| u64_at(p, 29)),
            state: p[SUPER_FIXED..].to_vec(),
        })
    }
}

/// Where an entry's record is.
#[derive(Debug, Clone, Copy)]
struct Loc {
    seg: u64,
    slot: u64,
    offset: u64,
    len: usize,
}

/// A live segment.
#[derive(Debug, Clone, Copy)]
struct Seg {
    seq: u64,
    slot: u64,
}

/// Where the next record goes.
#[derive(Debug, Clone, Copy)]
struct Head {
    seg: Seg,
    offset: u64,
    prev: u32,
}

/// The append-only log on a device.
#[derive(Debug)]
pub struct SegmentLog {
    dev: DynDevice,
    sb: Superblock,
    segments: VecDeque<Seg>,
    free: BTreeSet<u64>,
    slots: u64,
    locs: VecDeque<Loc>,
    first_index: u64,
    head: Option<Head>,
    durable: u64,
    /// The newest superblock sequence number a sync made durable.
    sb_durable: u64,
    stopped: Option<String>,
}

/// Records of one write, in one segment.
struct Batch {
    seg: Seg,
    offset: u64,
    bytes: Vec<u8>,
}

impl SegmentLog {
    /// Opens the log on `dev`, creating it (with segments of `segment_bytes`) on an empty
    /// device, recovering it otherwise (the segment size it was created with wins).
    pub fn open(dev: DynDevice, segment_bytes: u64) -> Result<Self> {
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&segment_bytes) {
            return Err(LogError::Invalid(format!(
                "log segment size {segment_bytes} is outside \
                 {MIN_SEGMENT_BYTES}..={MAX_SEGMENT_BYTES}"
            )));
        }
        let len = dev.len().map_err(|e| io("read the log's length", e))?;
        let mut copies = Vec::new();
        for i in 0..2u64 {
            let n = len.saturating_sub(i * SECTOR).min(SECTOR);
            let mut sector = vec![0u8; n as usize];
            if n > 0 {
                dev.read(i * SECTOR, &mut sector)
                    .map_err(|e| io(&format!("read superblock copy {i}"), e))?;
            }
            copies.extend(Superblock::decode(&sector).filter(|s| s.seq % 2 == i));
        }
        // Two copies are written alternately: one alone past the first write means the
        // other was torn or lost.
        coverage::hit_if(
            copies.len() == 1 && copies[0].seq > 0,
            Corner::LogSuperblockOneCopy,
        );
        let newest = copies.into_iter().max_by_key(|s| s.seq);
        let mut log = SegmentLog {
            dev,
            sb: Superblock::default(),
            segments: VecDeque::new(),
            free: BTreeSet::new(),
            slots: 0,
            locs: VecDeque::new(),
            first_index: 0,
            head: None,
            durable: 0,
            sb_durable: 0,
            stopped: None,
        };
        match newest {
            Some(sb) => {
                if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&sb.segment_bytes) {
                    return Err(corrupt(
                        "the superblock".into(),
                        format!("segment size {} is out of range", sb.segment_bytes),
                    ));
                }
                log.sb = sb;
                log.recover(len)?;
            }
            None if len > SEGMENTS_AT => {
                return Err(corrupt(
                    "the superblock".into(),
                    format!("neither copy is valid, yet the log holds {len} bytes"),
                ))
            }
            None => {
                // A new log (or one whose creation a crash cut short).
                log.sb = Superblock {
                    seq: 0,
                    segment_bytes,
                    first_segment: 1,
                    epoch: 1,
                    purged: None,
                    state: Vec::new(),
                };
                log.write_superblock(true)?;
            }
        }
        Ok(log)
    }

    fn slot_at(&self, slot: u64) -> u64 {
        SEGMENTS_AT + slot * self.sb.segment_bytes
    }

    fn check(&self) -> Result<()> {
        match &self.stopped {
            Some(why) => Err(LogError::Stopped(why.clone())),
            None => Ok(()),
        }
    }

    /// Runs a device operation; a failure stops the log.
    fn device<T>(
        &mut self,
        what: &str,
        op: impl FnOnce(&DynDevice) -> std::io::Result<T>,
    ) -> Result<T> {
        self.check()?;
        op(&self.dev).map_err(|e| {
            let err = io(what, e);
            self.stopped = Some(err.to_string());
            err
        })
    }

    /// Reads `len` bytes at `offset`, or fewer if the device ends first.
    fn read_upto(&self, offset: u64, len: u64, dev_len: u64) -> Result<Vec<u8>> {
        let n = dev_len.saturating_sub(offset).min(len);
        let mut buf = vec![0u8; n as usize];
        if n > 0 {
            self.dev
                .read(offset, &mut buf)
                .map_err(|e| io(&format!("read at {offset}"), e))?;
        }
        Ok(buf)
    }

    /// Rebuilds the in-memory index from the device (see the module's notes), then opens a
    /// new epoch.
    fn recover(&mut self, len: u64) -> Result<()> {
        let seg_bytes = self.sb.segment_bytes;
        let first_segment = self.sb.first_segment;
        self.slots = len.saturating_sub(SEGMENTS_AT).div_ceil(seg_bytes);
        let mut headers = Vec::new();
        // Slots with no valid segment header: free, but a damaged header may hide records.
        let mut headerless = Vec::new();
        for slot in 0..self.slots {
            let at = self.slot_at(slot);
            let head = self.read_upto(at, (HEADER + 8) as u64, len)?;
            match parse(&head, 0) {
                Some((rec, p))
                    if rec.kind == KIND_SEGMENT && rec.len == 8 && u64_at(p, 0) == seg_bytes =>
                {
                    if rec.seg >= first_segment {
                        headers.push((rec, slot));
                    } else {
                        // A purged segment's slot.
                        self.free.insert(slot);
                    }
                }
                _ => {
                    headerless.push(slot);
                    self.free.insert(slot);
                }
            }
        }
        headers.sort_by_key(|(rec, _)| rec.seg);
        if let Some(w) = headers.windows(2).find(|w| w[0].0.seg == w[1].0.seg) {
            return Err(corrupt(
                format!("slots {} and {}", w[0].1, w[1].1),
                format!("both hold segment {}", w[0].0.seg),
            ));
        }
        self.first_index = self.sb.purged.map_or(0, |p| p.saturating_add(1));
        // Replay the segments in order while each chains to the one before.
        let newest_epoch = self.sb.epoch;
        let chains = |epoch: &mut u32, r: &Rec| {
            let ok = (*epoch..=newest_epoch).contains(&r.stamp.epoch);
            if ok {
                *epoch = r.stamp.epoch;
            }
            ok
        };
        let mut epoch = 0u32;
        let mut superblock_claim = 0u64;
        let mut expected = first_segment;
        let mut last_body = Vec::new();
        let mut i = 0;
        while let Some(&(rec, slot)) = headers.get(i) {
            if rec.seg != expected
                || self.head.is_some_and(|h| h.prev != rec.prev)
                || !chains(&mut epoch, &rec)
            {
                break;
            }
            superblock_claim = superblock_claim.max(rec.stamp.superblock);
            let seg = Seg { seq: rec.seg, slot };
            let body = self.read_upto(self.slot_at(slot), seg_bytes, len)?;
            let mut off = HEADER + 8;
            let mut last = rec.crc;
            self.segments.push_back(seg);
            while let Some((r, payload)) = parse(&body, off)
                .filter(|(r, _)| r.seg == seg.seq && r.prev == last && chains(&mut epoch, r))
            {
                superblock_claim = superblock_claim.max(r.stamp.superblock);
                self.replay(r.kind, payload, seg, off as u64)
                    .map_err(|what| corrupt(at(seg, off as u64), what))?;
                last = r.crc;
                off += HEADER + r.len;
            }
            self.head = Some(Head {
                seg,
                offset: off as u64,
                prev: last,
            });
            last_body = body;
            expected = expected.saturating_add(1);
            i += 1;
        }
        // The log ends here. Whatever valid record lies beyond was written after the last
        // sync (a crash lost or tore what came before it), unless it says the log was
        // durable past this point: then synced bytes were damaged.
        let end = self
            .head
            .map_or(pos(first_segment, 0), |h| pos(h.seg.seq, h.offset));
        let damaged = |claim: u64, place: String| {
            corrupt(
                place,
                format!(
                    "the log ends at segment {} offset {}, but a record here says it was \
                     durable up to segment {} offset {}",
                    end >> 32,
                    end & 0xffff_ffff,
                    claim >> 32,
                    claim & 0xffff_ffff
                ),
            )
        };
        if let Some(h) = self.head {
            let rest = last_body.get(h.offset as usize..).unwrap_or_default();
            coverage::hit_if(
                rest.iter().take(HEADER).any(|&b| b != 0),
                Corner::LogRecoveryTornTail,
            );
            let c = claims(&last_body, h.offset as usize, |seq| seq == h.seg.seq);
            superblock_claim = superblock_claim.max(c.superblock);
            if let Some(claim) = c.synced.filter(|&c| c > end) {
                return Err(damaged(claim, at(h.seg, h.offset)));
            }
        }
        let later: Vec<(u64, Option<u64>)> = headers[i..]
            .iter()
            .map(|(rec, slot)| (*slot, Some(rec.seg)))
            .chain(headerless.iter().map(|slot| (*slot, None)))
            .collect();
        for (slot, seq) in later {
            let body = self.read_upto(self.slot_at(slot), seg_bytes, len)?;
            let c = claims(&body, 0, |s| {
                s >= first_segment && seq.is_none_or(|q| q == s)
            });
            superblock_claim = superblock_claim.max(c.superblock);
            if let Some(claim) = c.synced.filter(|&c| c > end) {
                return Err(damaged(claim, format!("slot {slot}")));
            }
            if seq.is_some() {
                coverage::hit(Corner::LogRecoveryDroppedSegment);
                // A segment written after the break is dropped: its header goes, so its
                // sequence number can be used again.
                let at = self.slot_at(slot);
                self.device("clear a dropped segment", |d| d.write(at, &[0u8; HEADER]))?;
                self.free.insert(slot);
            }
        }
        if superblock_claim > self.sb.seq {
            return Err(corrupt(
                "the superblock".into(),
                format!(
                    "its newest valid copy is number {}, but a record says number {} was \
                     durable",
                    self.sb.seq, superblock_claim
                ),
            ));
        }
        // What survived is durable from now on (a process crash leaves unsynced writes in
        // the OS cache; the superblock's sync makes them durable before new records count on
        // them), and what is written from now on belongs to a new epoch.
        self.durable = end;
        self.sb.epoch = self.sb.epoch.saturating_add(1);
        self.write_superblock(true)
    }

    /// Applies one replayed record to the index.
    fn replay(
        &mut self,
        kind: u8,
        payload: &[u8],
        seg: Seg,
        offset: u64,
    ) -> std::result::Result<(), String> {
        match kind {
            KIND_ENTRY => {
                if payload.len() < 8 {
                    return Err("an entry record too short for its index".into());
                }
                let index = u64_at(payload, 0);
                if self.sb.purged.is_some_and(|p| index <= p) {
                    return Ok(());
                }
                let next = self.next_index();
                if self.locs.is_empty() {
                    self.first_index = index;
                } else if index != next {
                    return Err(format!("entry {index} where entry {next} belongs"));
                }
                self.locs.push_back(Loc {
                    seg: seg.seq,
                    slot: seg.slot,
                    offset,
                    len: payload.len(),
                });
                Ok(())
            }
            KIND_TRUNCATE => {
                if payload.len() != 8 {
                    return Err("a truncation record of the wrong size".into());
                }
                self.drop_from(u64_at(payload, 0));
                Ok(())
            }
            other => Err(format!("a record of unknown kind {other}")),
        }
    }

    fn drop_from(&mut self, from: u64) {
        let keep = from.saturating_sub(self.first_index) as usize;
        self.locs.truncate(keep);
    }

    /// The index the next appended entry must have.
    pub fn next_index(&self) -> u64 {
        self.first_index.saturating_add(self.locs.len() as u64)
    }

    /// The last entry's index, if the log holds any.
    pub fn last_index(&self) -> Option<u64> {
        (!self.locs.is_empty()).then(|| self.next_index() - 1)
    }

    /// The first entry's index, if the log holds any.
    pub fn first_index(&self) -> Option<u64> {
        (!self.locs.is_empty()).then_some(self.first_index)
    }

    /// The index entries were purged up to.
    pub fn purged(&self) -> Option<u64> {
        self.sb.purged
    }

    /// The small state kept in the superblock.
    pub fn state(&self) -> &[u8] {
        &self.sb.state
    }

    /// Bytes the device holds (for figures).
    pub fn device_len(&self) -> u64 {
        self.dev.len().unwrap_or(0)
    }

    /// Latency the device charged since the last call.
    pub fn take_latency(&self) -> std::time::Duration {
        self.dev.take_latency()
    }

    fn write_superblock(&mut self, sync: bool) -> Result<()> {
        self.sb.seq += 1;
        let bytes = self.sb.encode();
        if bytes.len() as u64 > SECTOR {
            self.sb.seq -= 1;
            return Err(LogError::Invalid(format!(
                "the log's state ({} bytes) does not fit a sector",
                self.sb.state.len()
            )));
        }
        let at = (self.sb.seq % 2) * SECTOR;
        self.device("write the superblock", |d| d.write(at, &bytes))?;
        if sync {
            self.device("sync the superblock", |d| d.sync())?;
            self.sb_durable = self.sb.seq;
        }
        Ok(())
    }

    /// What a record written now says about the log.
    fn stamp(&self) -> Stamp {
        Stamp {
            epoch: self.sb.epoch,
            synced: self.durable,
            superblock: self.sb_durable,
        }
    }

    /// Replaces the state kept in the superblock; durable before it returns if `sync`.
    pub fn set_state(&mut self, state: Vec<u8>, sync: bool) -> Result<()> {
        self.check()?;
        let old = std::mem::replace(&mut self.sb.state, state);
        let r = self.write_superblock(sync);
        if r.is_err() {
            self.sb.state = old;
        }
        r
    }

    /// Starts a batch at the head (opening the first segment if there is none).
    fn batch(&mut self) -> Result<Batch> {
        if self.head.is_none() {
            self.new_segment(None)?;
        }
        let h = self.head.expect("a head");
        Ok(Batch {
            seg: h.seg,
            offset: h.offset,
            bytes: Vec::new(),
        })
    }

    /// Allocates the next segment and writes its header (unsynced); `pending` (the current
    /// segment's unwritten records) is written first.
    fn new_segment(&mut self, pending: Option<&Batch>) -> Result<()> {
        if let Some(b) = pending {
            self.write_batch(b)?;
        }
        let seq = self
            .head
            .map_or(self.sb.first_segment, |h| h.seg.seq.saturating_add(1));
        let slot = match self.free.pop_first() {
            Some(s) => s,
            None => {
                self.slots += 1;
                self.slots - 1
            }
        };
        coverage::hit_if(self.head.is_some(), Corner::LogSegmentRolled);
        let prev = self.head.map_or(0, |h| h.prev);
        let mut bytes = Vec::with_capacity(HEADER + 8);
        let crc = frame(
            &mut bytes,
            KIND_SEGMENT,
            seq,
            prev,
            self.stamp(),
            &self.sb.segment_bytes.to_le_bytes(),
        );
        let at = self.slot_at(slot);
        self.device("write a segment header", |d| d.write(at, &bytes))?;
        let seg = Seg { seq, slot };
        self.segments.push_back(seg);
        self.head = Some(Head {
            seg,
            offset: bytes.len() as u64,
            prev: crc,
        });
        Ok(())
    }

    fn write_batch(&mut self, b: &Batch) -> Result<()> {
        if b.bytes.is_empty() {
            return Ok(());
        }
        let at = self.slot_at(b.seg.slot) + b.offset;
        self.device("append records", |d| d.write(at, &b.bytes))
    }

    /// Adds one record to the batch, moving to a new segment when it does not fit; returns
    /// where the record goes.
    fn put(&mut self, b: &mut Batch, kind: u8, payload: &[u8]) -> Result<Loc> {
        let need = (HEADER + payload.len()) as u64;
        if let Err(e) = self.fits(payload.len()) {
            // Callers check first; records before this one already moved the head.
            self.stopped = Some(e.to_string());
            return Err(e);
        }
        let h = self.head.expect("a batch has a head");
        if h.offset + need > self.sb.segment_bytes {
            self.new_segment(Some(b))?;
            *b = self.batch()?;
        }
        let h = self.head.expect("a batch has a head");
        let crc = frame(&mut b.bytes, kind, h.seg.seq, h.prev, self.stamp(), payload);
        self.head = Some(Head {
            seg: h.seg,
            offset: h.offset + need,
            prev: crc,
        });
        Ok(Loc {
            seg: h.seg.seq,
            slot: h.seg.slot,
            offset: h.offset,
            len: payload.len(),
        })
    }

    /// Writes the batch and, if `sync`, makes the log durable up to its end.
    fn finish(&mut self, b: Batch, sync: bool) -> Result<()> {
        self.write_batch(&b)?;
        if sync {
            self.device("sync the log", |d| d.sync())?;
            self.durable = self.head.map_or(0, |h| pos(h.seg.seq, h.offset));
            self.sb_durable = self.sb.seq;
        }
        Ok(())
    }

    /// Whether a record with a payload of `len` bytes fits an empty segment.
    fn fits(&self, len: usize) -> Result<()> {
        let need = (HEADER as u64).saturating_add(len as u64);
        let room = self.sb.segment_bytes - (HEADER + 8) as u64;
        if need > room {
            return Err(LogError::Invalid(format!(
                "a log record of {need} bytes does not fit a segment of {} bytes",
                self.sb.segment_bytes
            )));
        }
        Ok(())
    }

    /// Appends entries (index, bytes) in one write and, if `sync`, one sync. The indexes must
    /// be consecutive; the first may continue the log, start an empty one, or replace the
    /// entries from its index on (a truncation marker goes first, in the same write).
    /// Entries at or below the purge point are covered by it and not stored.
    pub fn append(&mut self, entries: &[(u64, &[u8])], sync: bool) -> Result<()> {
        self.check()?;
        let floor = self.sb.purged.map_or(0, |p| p.saturating_add(1));
        let entries = &entries[entries.partition_point(|(i, _)| *i < floor)..];
        let Some(&(first, _)) = entries.first() else {
            return Ok(());
        };
        if let Some(w) = entries
            .windows(2)
            .find(|w| w[0].0.checked_add(1) != Some(w[1].0))
        {
            return Err(LogError::Invalid(format!(
                "append of entry {} after entry {}: indexes must be consecutive",
                w[1].0, w[0].0
            )));
        }
        let next = self.next_index();
        let replaces = !self.locs.is_empty() && first < next;
        if !self.locs.is_empty() && !replaces && first != next {
            return Err(LogError::Invalid(format!(
                "append of entry {first} where entry {next} belongs"
            )));
        }
        for (_, bytes) in entries {
            self.fits(8 + bytes.len())?;
        }
        let mut b = self.batch()?;
        if replaces {
            self.put(&mut b, KIND_TRUNCATE, &first.to_le_bytes())?;
        }
        let mut payload = Vec::new();
        let mut locs = Vec::with_capacity(entries.len());
        for (index, bytes) in entries {
            payload.clear();
            payload.extend_from_slice(&index.to_le_bytes());
            payload.extend_from_slice(bytes);
            locs.push(self.put(&mut b, KIND_ENTRY, &payload)?);
        }
        self.finish(b, sync)?;
        if replaces {
            self.drop_from(first);
        }
        if self.locs.is_empty() {
            self.first_index = first;
        }
        self.locs.extend(locs);
        Ok(())
    }

    /// Removes the entries at and after `from`: a marker record, synced.
    pub fn truncate(&mut self, from: u64) -> Result<()> {
        self.check()?;
        let mut b = self.batch()?;
        self.put(&mut b, KIND_TRUNCATE, &from.to_le_bytes())?;
        self.finish(b, true)?;
        self.drop_from(from);
        Ok(())
    }

    /// Purges the entries up to `upto` and saves `state` with the purge point, durably; the
    /// slots of segments left with no live entry are reused.
    pub fn purge(&mut self, upto: u64, state: Vec<u8>) -> Result<()> {
        self.check()?;
        if self.sb.purged.is_some_and(|p| p >= upto) {
            return self.set_state(state, true);
        }
        let gone = upto
            .saturating_add(1)
            .saturating_sub(self.first_index)
            .min(self.locs.len() as u64);
        let first_needed = self
            .locs
            .get(gone as usize)
            .map(|l| l.seg)
            .or(self.head.map(|h| h.seg.seq))
            .unwrap_or(self.sb.first_segment);
        let old = self.sb.clone();
        self.sb.purged = Some(upto);
        self.sb.first_segment = first_needed;
        self.sb.state = state;
        if let Err(e) = self.write_superblock(true) {
            self.sb = Superblock {
                seq: self.sb.seq,
                ..old
            };
            return Err(e);
        }
        self.locs.drain(..gone as usize);
        self.first_index = if self.locs.is_empty() {
            upto.saturating_add(1).max(self.first_index + gone)
        } else {
            self.first_index + gone
        };
        while self.segments.front().is_some_and(|s| s.seq < first_needed) {
            let s = self.segments.pop_front().expect("a segment");
            coverage::hit(Corner::LogSegmentFreed);
            self.free.insert(s.slot);
        }
        Ok(())
    }

    /// The bytes of entry `index`, checked against their record's CRC.
    pub fn read(&self, index: u64) -> Result<Vec<u8>> {
        self.check()?;
        let loc = index
            .checked_sub(self.first_index)
            .and_then(|i| self.locs.get(i as usize))
            .copied()
            .ok_or_else(|| LogError::Invalid(format!("entry {index} is not in the log")))?;
        let seg = Seg {
            seq: loc.seg,
            slot: loc.slot,
        };
        let mut buf = vec![0u8; HEADER + loc.len];
        self.dev
            .read(self.slot_at(loc.slot) + loc.offset, &mut buf)
            .map_err(|e| io(&format!("read entry {index} at {}", at(seg, loc.offset)), e))?;
        match parse(&buf, 0) {
            Some((r, p)) if r.seg == loc.seg && r.kind == KIND_ENTRY && u64_at(p, 0) == index => {
                Ok(p[8..].to_vec())
            }
            _ => Err(corrupt(
                at(seg, loc.offset),
                format!("entry {index} does not match its checksum"),
            )),
        }
    }
}

fn io(what: &str, source: std::io::Error) -> LogError {
    LogError::Io {
        what: what.to_string(),
        source,
    }
}

fn corrupt(at: String, what: String) -> LogError {
    coverage::hit(Corner::LogDamageFound);
    LogError::Corrupt { at, what }
}

fn at(seg: Seg, offset: u64) -> String {
    format!("segment {} (slot {}) offset {offset}", seg.seq, seg.slot)
}

/// What valid records claim about the log.
struct Claims {
    /// The furthest durable point claimed by a record of an accepted segment.
    synced: Option<u64>,
    /// The newest superblock any valid record says was durable.
    superblock: u64,
}

/// The claims of every valid record at or after `from` in `body` (records of segments
/// `seg_ok` accepts count for `synced`).
fn claims(body: &[u8], from: usize, seg_ok: impl Fn(u64) -> bool) -> Claims {
    let magic = MAGIC.to_le_bytes();
    let mut c = Claims {
        synced: None,
        superblock: 0,
    };
    let mut at = from;
    while at + HEADER <= body.len() {
        if body[at..at + 4] == magic {
            if let Some((r, _)) = parse(body, at).filter(|(r, _)| r.kind != KIND_SUPER) {
                c.superblock = c.superblock.max(r.stamp.superblock);
                if seg_ok(r.seg) {
                    c.synced = c.synced.max(Some(r.stamp.synced));
                }
            }
        }
        at += 1;
    }
    c
}
