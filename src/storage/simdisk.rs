//! `SimDisk`: a simulated block device for redb (it implements redb's `StorageBackend`).
//!
//! It keeps two images: the *durable* image, as of the last successful sync, and the *live*
//! image that reads see (durable plus unsynced writes). A disk belongs to a node and outlives
//! that node's restarts: a process crash keeps the live image (the OS page cache survives),
//! a power loss rolls back to the durable image according to a [`PowerLossMode`].
//!
//! Faults it injects, each drawn from the disk's own RNG (seeded from the simulation) at the
//! per-node rates of [`DiskFaults`]:
//! - **power loss** — drop every unsynced write, or a random subset of the unsynced 4 KiB
//!   sectors, or tear sectors (a random prefix of a sector reaches the platter). Recoverable:
//!   redb's commit protocol only trusts synced state, so it reopens at its last durable commit.
//! - **torn writes** — part of a sector persisted ([`PowerLossMode::TornSectors`]).
//!   Recoverable for the same reason.
//! - **bit flips on write** — a bit of the written range is flipped in the stored image.
//!   Not recoverable: the storage layer must *detect* it (value checksums, redb's own checks)
//!   and stop, never serve the flipped bytes.
//! - **bit flips on read** — a bit of the returned buffer is flipped; the image is intact.
//!   Detected the same way; a retry after restart reads correct bytes.
//! - **I/O errors** on read, write or sync — returned as `std::io::Error`. redb latches after
//!   a failed write or sync; the node must stop (fail-stop) and restart from its disk.
//! - **misdirected writes** — a write lands a few sectors away from where it was aimed: the
//!   sectors it meant to change keep their old bytes (a lost write) and the sectors it hit
//!   hold bytes meant for elsewhere. Detected, never served (see below); once synced, not
//!   recoverable until the sectors are written whole again.
//! - **misdirected reads** — a read returns the bytes of sectors a few sectors away; the image
//!   is intact. Detected; a retry after restart reads correct bytes.
//! - **latency** — each operation charges a random delay, collected with
//!   [`SimDisk::take_latency`] and slept by the async storage layer in simulated time.
//! - **lying sync** — `sync_data` reports success without persisting: a planted bug that the
//!   crash tests must catch, not a fault real disks are allowed to have.
//!
//! **Sector integrity.** The device stores end-to-end protection with every sector, as T10
//! protection information does: the address the sector was written for and its write
//! generation, which the storage stack keeps apart from the data (as ZFS and btrfs keep block
//! checksums in the metadata that points at the block). Every read checks them and fails with
//! an I/O error naming the sector when a sector holds bytes meant for another address, misses
//! its last write, or was read from the wrong address. redb checks its own page checksums only
//! when a database opens; this check is what makes a misdirected page fail-stop while it runs.
//! The model records only sectors whose protection disagrees; a correctly written sector costs
//! nothing. Power loss never creates a disagreement: what survives of a sector is written with
//! its protection, as a drive writes a sector and its protection information together.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::coverage::{self, Corner};

/// Sector size of the simulated device: the unit of partial persistence on power loss.
pub const SECTOR_BYTES: u64 = 4096;

/// Fault rates of one disk. Rates are probabilities per operation in `[0, 1]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiskFaults {
    /// A read fails with an I/O error.
    pub read_error_rate: f64,
    /// A write fails with an I/O error (nothing is written).
    pub write_error_rate: f64,
    /// A sync fails with an I/O error (nothing is made durable).
    pub sync_error_rate: f64,
    /// A read returns its bytes with one bit flipped.
    pub read_bitflip_rate: f64,
    /// A write stores its bytes with one bit flipped.
    pub write_bitflip_rate: f64,
    /// Smallest latency charged per operation, in microseconds.
    pub latency_us_min: u64,
    /// Largest latency charged per operation, in microseconds.
    pub latency_us_max: u64,
    /// A write lands 1 to 8 sectors away from its offset (see the module documentation).
    pub misdirected_write_rate: f64,
    /// A read returns the bytes 1 to 8 sectors away from its offset.
    pub misdirected_read_rate: f64,
    /// Sync reports success but persists nothing (a planted bug, for checking the checks).
    pub sync_lies: bool,
    /// Reads skip the sector integrity check and serve misdirected bytes (a control, for
    /// checking that the tests of misdirected I/O can fail).
    pub integrity_unchecked: bool,
}

impl DiskFaults {
    /// A perfect disk.
    pub fn none() -> Self {
        Self::default()
    }

    /// The error, bit-flip and misdirection rates, by field name.
    fn rates(&self) -> [(&'static str, f64); 7] {
        [
            ("read_error_rate", self.read_error_rate),
            ("write_error_rate", self.write_error_rate),
            ("sync_error_rate", self.sync_error_rate),
            ("read_bitflip_rate", self.read_bitflip_rate),
            ("write_bitflip_rate", self.write_bitflip_rate),
            ("misdirected_write_rate", self.misdirected_write_rate),
            ("misdirected_read_rate", self.misdirected_read_rate),
        ]
    }

    /// Whether any error, bit-flip or misdirection rate is above 0 (a node may fail-stop).
    pub fn has_errors(&self) -> bool {
        self.rates().iter().any(|(_, r)| *r > 0.0)
    }

    /// Checks that rates are probabilities and the latency range is ordered.
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in self.rates() {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} = {rate} is not a probability in [0, 1]"));
            }
        }
        if self.latency_us_min > self.latency_us_max {
            return Err(format!(
                "latency_us_min = {} exceeds latency_us_max = {}",
                self.latency_us_min, self.latency_us_max
            ));
        }
        Ok(())
    }
}

/// What a power loss does to the writes since the last sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerLossMode {
    /// Every unsynced write is lost.
    DropAll,
    /// Each unsynced sector independently survives or is lost.
    RandomSectors,
    /// Each unsynced sector survives, is lost, or survives only as a random prefix (torn).
    TornSectors,
}

impl PowerLossMode {
    /// All modes, in a fixed order.
    pub const ALL: [PowerLossMode; 3] = [
        PowerLossMode::DropAll,
        PowerLossMode::RandomSectors,
        PowerLossMode::TornSectors,
    ];
}

/// Counters of what the disk did and injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStats {
    /// Reads served (including failed ones).
    pub reads: u64,
    /// Writes received (including failed ones).
    pub writes: u64,
    /// Syncs received (including failed and lying ones).
    pub syncs: u64,
    /// I/O errors injected.
    pub io_errors: u64,
    /// Bits flipped on read or write.
    pub bit_flips: u64,
    /// Power losses suffered.
    pub power_losses: u64,
    /// Unsynced sectors lost (wholly or partly) to power losses.
    pub sectors_lost: u64,
    /// Writes and reads misdirected.
    pub misdirected: u64,
    /// Reads refused because a sector's protection disagreed.
    pub integrity_errors: u64,
    /// Bytes of the durable image.
    pub durable_bytes: u64,
}

/// A sector whose protection information disagrees with what the stack expects there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Misplaced {
    /// It holds bytes a misdirected write meant for sector `meant_for`.
    Foreign { meant_for: u64 },
    /// It missed its last write, which a misdirected write put elsewhere.
    Stale,
}

#[derive(Debug)]
struct DiskState {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Sectors written since the last sync.
    dirty: BTreeSet<u64>,
    /// Sectors of the live image whose protection disagrees (see [`Misplaced`]).
    misplaced: BTreeMap<u64, Misplaced>,
    /// The same, for the durable image.
    durable_misplaced: BTreeMap<u64, Misplaced>,
    /// A bit was flipped in a written range (the stored bytes are wrong until rewritten).
    flipped_on_write: bool,
    faults: DiskFaults,
    rng: StdRng,
    pending_latency: Duration,
    stats: DiskStats,
    /// Writes and syncs left before the power goes out (see [`SimDisk::cut_power_after`]).
    ops_until_cut: Option<u64>,
    /// Syncs left to complete before the power goes out (see [`SimDisk::cut_power_after_syncs`]).
    syncs_until_cut: Option<u64>,
    /// The power is out: every operation fails until [`SimDisk::power_loss`] runs.
    powered_off: bool,
    /// Bumped by [`SimDisk::fence`]; backends from an older epoch belong to a dead process.
    epoch: u64,
}

/// A simulated disk. Cloning gives another handle to the same disk.
#[derive(Debug, Clone)]
pub struct SimDisk {
    state: Arc<Mutex<DiskState>>,
}

fn injected(kind: &str, offset: u64) -> io::Error {
    io::Error::other(format!("simulated {kind} error at offset {offset}"))
}

impl SimDisk {
    /// An empty disk whose faults draw from an RNG seeded with `seed`.
    pub fn new(seed: u64, faults: DiskFaults) -> Self {
        Self {
            state: Arc::new(Mutex::new(DiskState {
                live: Vec::new(),
                durable: Vec::new(),
                dirty: BTreeSet::new(),
                misplaced: BTreeMap::new(),
                durable_misplaced: BTreeMap::new(),
                flipped_on_write: false,
                faults,
                rng: StdRng::seed_from_u64(seed),
                pending_latency: Duration::ZERO,
                stats: DiskStats::default(),
                ops_until_cut: None,
                syncs_until_cut: None,
                powered_off: false,
                epoch: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, DiskState> {
        // A panic while holding the lock leaves plain bytes behind, which stay usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the fault rates (for example when a scenario turns faults on or off).
    pub fn set_faults(&self, faults: DiskFaults) {
        self.lock().faults = faults;
    }

    /// The current fault rates.
    pub fn faults(&self) -> DiskFaults {
        self.lock().faults.clone()
    }

    /// What the disk did so far.
    pub fn stats(&self) -> DiskStats {
        let s = self.lock();
        DiskStats {
            durable_bytes: s.durable.len() as u64,
            ..s.stats
        }
    }

    /// Whether a fault stored bytes that no recovery restores: a bit flipped on write or a
    /// misdirected write. A node on a damaged disk may stay down for good (its storage
    /// refuses to open), which is the correct outcome, not a failure of the run.
    pub fn is_damaged(&self) -> bool {
        let s = self.lock();
        s.flipped_on_write || !s.misplaced.is_empty() || !s.durable_misplaced.is_empty()
    }

    /// Bytes written since the last sync that a power loss could drop.
    pub fn unsynced_sectors(&self) -> usize {
        self.lock().dirty.len()
    }

    /// Latency charged since the last call; the async storage layer sleeps it off.
    pub fn take_latency(&self) -> Duration {
        std::mem::take(&mut self.lock().pending_latency)
    }

    /// Arms a power cut in the middle of whatever runs next: after `ops` more writes or syncs
    /// the disk goes dark, and every operation fails until [`SimDisk::power_loss`] decides what
    /// survived. This is how tests crash a node part-way through a commit.
    pub fn cut_power_after(&self, ops: u64) {
        self.lock().ops_until_cut = Some(ops);
    }

    /// Arms a power cut timed against the write path: `syncs` more syncs complete, and the
    /// power goes out right after the last of them returns (what it made durable stays; what
    /// is written after it is lost). `syncs` of 0 cuts now.
    pub fn cut_power_after_syncs(&self, syncs: u64) {
        let mut s = self.lock();
        if syncs == 0 {
            s.powered_off = true;
        } else {
            s.syncs_until_cut = Some(syncs);
        }
    }

    /// Cuts the power now, leaving the disk dark until [`SimDisk::power_loss`].
    pub fn cut_power_now(&self) {
        self.cut_power_after_syncs(0);
    }

    /// Brings a dark disk back without losing anything: the process that used it died where
    /// the disk went dark, but the machine kept its power (what was written and not synced
    /// is still in the OS cache). Disarms any cut still armed.
    pub fn restore_power(&self) {
        let mut s = self.lock();
        s.powered_off = false;
        s.ops_until_cut = None;
        s.syncs_until_cut = None;
    }

    /// Whether a cut armed by [`SimDisk::cut_power_after_syncs`] or
    /// [`SimDisk::cut_power_after`] waits.
    pub fn cut_armed(&self) -> bool {
        let s = self.lock();
        s.syncs_until_cut.is_some() || s.ops_until_cut.is_some()
    }

    /// Disarms any armed power cut that has not happened yet.
    pub fn disarm(&self) {
        let mut s = self.lock();
        s.ops_until_cut = None;
        s.syncs_until_cut = None;
    }

    /// Whether an armed power cut has happened (and [`SimDisk::power_loss`] not yet run).
    pub fn is_powered_off(&self) -> bool {
        self.lock().powered_off
    }

    /// Cuts the power: unsynced writes are dropped according to `mode`. Whoever had the disk
    /// open must have dropped it (the node is dead); the next open sees the result.
    pub fn power_loss(&self, mode: PowerLossMode) {
        let mut guard = self.lock();
        let s = &mut *guard;
        s.stats.power_losses += 1;
        s.powered_off = false;
        s.ops_until_cut = None;
        s.syncs_until_cut = None;
        let dirty = std::mem::take(&mut s.dirty);
        let len = s.durable.len() as u64;
        for sector in dirty {
            let start = sector * SECTOR_BYTES;
            if start >= len {
                s.stats.sectors_lost += 1;
                coverage::hit(Corner::DiskLostSectors);
                s.durable_misplaced.remove(&sector);
                continue;
            }
            let end = (start + SECTOR_BYTES).min(len).min(s.live.len() as u64);
            let keep = match mode {
                PowerLossMode::DropAll => 0,
                PowerLossMode::RandomSectors => {
                    if s.rng.gen_bool(0.5) {
                        end.saturating_sub(start)
                    } else {
                        0
                    }
                }
                PowerLossMode::TornSectors => match s.rng.gen_range(0..3) {
                    0 => 0,
                    1 => end.saturating_sub(start),
                    _ => s.rng.gen_range(0..=end.saturating_sub(start)),
                },
            };
            if keep < end.saturating_sub(start) {
                s.stats.sectors_lost += 1;
                coverage::hit(if keep > 0 {
                    Corner::DiskTornSector
                } else {
                    Corner::DiskLostSectors
                });
            }
            // A sector that kept any of its unsynced bytes keeps what its protection says
            // about them; one that kept none is as the last sync left it.
            let after = if keep > 0 {
                s.misplaced.get(&sector).copied()
            } else {
                s.durable_misplaced.get(&sector).copied()
            };
            set_misplaced(&mut s.durable_misplaced, sector, after);
            let (a, b) = (start as usize, (start + keep) as usize);
            if b > a {
                let src = s.live[a..b].to_vec();
                s.durable[a..b].copy_from_slice(&src);
            }
        }
        s.live = s.durable.clone();
        s.misplaced = s.durable_misplaced.clone();
    }

    /// The number of bytes in the durable image (what survives any power loss).
    pub fn durable_len(&self) -> u64 {
        self.lock().durable.len() as u64
    }

    /// A handle that redb can own; it shares this disk until the next [`SimDisk::fence`].
    pub fn backend(&self) -> SimDiskBackend {
        SimDiskBackend {
            disk: self.clone(),
            epoch: self.lock().epoch,
        }
    }

    /// The process that had the disk open died: every backend handed out so far fails from
    /// now on, so nothing the dead process drops later (redb closes its database on drop,
    /// committing durably) reaches the disk. Unsynced writes stay where they are: a process
    /// crash keeps the OS cache; only [`SimDisk::power_loss`] drops them.
    pub fn fence(&self) {
        self.lock().epoch += 1;
    }
}

/// Records what a sector's protection says (`None`: it agrees).
fn set_misplaced(map: &mut BTreeMap<u64, Misplaced>, sector: u64, what: Option<Misplaced>) {
    match what {
        Some(m) => map.insert(sector, m),
        None => map.remove(&sector),
    };
}

/// The sectors `len > 0` bytes at `offset` touch.
fn sectors(offset: u64, len: u64) -> std::ops::RangeInclusive<u64> {
    offset / SECTOR_BYTES..=(offset + len - 1) / SECTOR_BYTES
}

fn integrity_error(sector: u64, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "integrity check failed at sector {sector} (offset {}): {what}",
            sector * SECTOR_BYTES
        ),
    )
}

impl DiskState {
    /// Where a misdirected operation on `len` bytes at `offset` goes instead: 1 to 8 whole
    /// sectors away, on a side that ends at or before `limit` (`None` if neither does).
    fn misdirect(&mut self, offset: u64, len: u64, limit: u64) -> Option<u64> {
        let shift = self.rng.gen_range(1..=8u64) * SECTOR_BYTES;
        let down = offset.checked_sub(shift);
        let up = offset
            .checked_add(shift)
            .filter(|o| o.checked_add(len).is_some_and(|e| e <= limit));
        let prefer_up = self.rng.gen_bool(0.5);
        match (down, up) {
            (Some(_), Some(u)) if prefer_up => Some(u),
            (Some(d), _) => Some(d),
            (None, u) => u,
        }
    }

    /// The first sector of `len > 0` bytes at `offset` whose protection disagrees, as an error.
    fn verify(&mut self, offset: u64, len: u64) -> Result<(), io::Error> {
        let found = self
            .misplaced
            .range(sectors(offset, len))
            .next()
            .map(|(&sector, &m)| (sector, m));
        let Some((sector, m)) = found else {
            return Ok(());
        };
        self.stats.integrity_errors += 1;
        coverage::hit(Corner::DiskIntegrityCaught);
        Err(integrity_error(
            sector,
            &match m {
                Misplaced::Foreign { meant_for } => {
                    format!("it holds bytes written for sector {meant_for}")
                }
                Misplaced::Stale => "it misses its last write".to_string(),
            },
        ))
    }

    /// Stores `data` at `offset`, growing the image as needed; the sectors are dirty.
    fn store(&mut self, offset: u64, data: &[u8]) -> Result<std::ops::Range<usize>, io::Error> {
        let end = offset
            .checked_add(data.len() as u64)
            .and_then(|e| usize::try_from(e).ok())
            .ok_or_else(|| io::Error::other("write past the addressable end"))?;
        if end > self.live.len() {
            self.live.resize(end, 0);
        }
        let a = offset as usize;
        self.live[a..end].copy_from_slice(data);
        for sector in sectors(offset, data.len() as u64) {
            self.dirty.insert(sector);
        }
        Ok(a..end)
    }

    fn charge_latency(&mut self) {
        let (lo, hi) = (self.faults.latency_us_min, self.faults.latency_us_max);
        if hi > 0 {
            let us = self.rng.gen_range(lo..=hi);
            self.pending_latency += Duration::from_micros(us);
        }
    }

    /// Counts a mutating operation against an armed power cut; errors once the power is out.
    fn spend_power(&mut self, offset: u64) -> Result<(), io::Error> {
        if let Some(left) = self.ops_until_cut.as_mut() {
            if *left == 0 {
                coverage::hit(Corner::DiskArmedCutFired);
                self.powered_off = true;
                self.ops_until_cut = None;
            } else {
                *left -= 1;
            }
        }
        if self.powered_off {
            return Err(io::Error::other(format!(
                "simulated power cut: disk offline at offset {offset}"
            )));
        }
        Ok(())
    }

    /// Counts a completed sync against a cut armed by [`SimDisk::cut_power_after_syncs`].
    fn count_sync(&mut self) {
        if let Some(left) = self.syncs_until_cut.as_mut() {
            *left = left.saturating_sub(1);
            if *left == 0 {
                coverage::hit(Corner::DiskArmedCutFired);
                self.syncs_until_cut = None;
                self.powered_off = true;
            }
        }
    }

    fn roll(&mut self, rate: f64) -> bool {
        rate > 0.0 && self.rng.gen_bool(rate.min(1.0))
    }

    fn flip_bit(&mut self, buf: &mut [u8]) {
        if buf.is_empty() {
            return;
        }
        let byte = self.rng.gen_range(0..buf.len());
        let bit = self.rng.gen_range(0..8);
        buf[byte] ^= 1 << bit;
        self.stats.bit_flips += 1;
        coverage::hit(Corner::DiskBitFlip);
    }
}

/// redb's view of a [`SimDisk`].
#[derive(Debug)]
pub struct SimDiskBackend {
    disk: SimDisk,
    epoch: u64,
}

impl SimDiskBackend {
    /// The disk's state, unless this backend's process is dead (see [`SimDisk::fence`]).
    fn lock(&self) -> Result<MutexGuard<'_, DiskState>, io::Error> {
        let s = self.disk.lock();
        if s.epoch != self.epoch {
            return Err(io::Error::other(
                "simulated crash: the process that opened this disk is dead",
            ));
        }
        Ok(s)
    }
}

impl redb::StorageBackend for SimDiskBackend {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.lock()?.live.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let mut s = self.lock()?;
        s.stats.reads += 1;
        if s.powered_off {
            return Err(io::Error::other("simulated power cut: disk offline"));
        }
        s.charge_latency();
        let rate = s.faults.read_error_rate;
        if s.roll(rate) {
            s.stats.io_errors += 1;
            coverage::hit(Corner::DiskIoError);
            return Err(injected("read", offset));
        }
        let len = out.len() as u64;
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= s.live.len() as u64)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("read of {len} bytes at {offset} past the end"),
                )
            })?;
        if len == 0 {
            return Ok(());
        }
        let rate = s.faults.misdirected_read_rate;
        if s.roll(rate) {
            let limit = s.live.len() as u64;
            if let Some(from) = s.misdirect(offset, len, limit) {
                s.stats.misdirected += 1;
                coverage::hit(Corner::DiskMisdirected);
                if s.faults.integrity_unchecked {
                    let from = from as usize;
                    out.copy_from_slice(&s.live[from..from + out.len()]);
                    return Ok(());
                }
                // The sectors that came back carry the address they were written for, which
                // is not the one asked for.
                s.stats.integrity_errors += 1;
                coverage::hit(Corner::DiskIntegrityCaught);
                return Err(integrity_error(
                    offset / SECTOR_BYTES,
                    &format!("the read returned sector {}", from / SECTOR_BYTES),
                ));
            }
        }
        if !s.faults.integrity_unchecked {
            s.verify(offset, len)?;
        }
        out.copy_from_slice(&s.live[offset as usize..end as usize]);
        let rate = s.faults.read_bitflip_rate;
        if s.roll(rate) {
            s.flip_bit(out);
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut s = self.lock()?;
        s.spend_power(len)?;
        let len = usize::try_from(len).map_err(|_| io::Error::other("length overflows usize"))?;
        let old = s.live.len();
        s.live.resize(len, 0);
        // A length change is metadata that only a sync makes durable; the sectors it touches
        // are dirty until then.
        let (lo, hi) = (old.min(len) as u64, old.max(len) as u64);
        let first_gone = (len as u64).div_ceil(SECTOR_BYTES);
        s.misplaced.retain(|&sector, _| sector < first_gone);
        if hi > lo {
            for sector in lo / SECTOR_BYTES..=(hi - 1) / SECTOR_BYTES {
                s.dirty.insert(sector);
            }
        }
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let mut guard = self.lock()?;
        let s = &mut *guard;
        s.stats.syncs += 1;
        s.spend_power(0)?;
        s.charge_latency();
        let rate = s.faults.sync_error_rate;
        if s.roll(rate) {
            s.stats.io_errors += 1;
            coverage::hit(Corner::DiskIoError);
            return Err(injected("sync", 0));
        }
        if s.faults.sync_lies {
            s.count_sync();
            return Ok(());
        }
        let len = s.live.len();
        s.durable.resize(len, 0);
        for &sector in &s.dirty {
            let what = s.misplaced.get(&sector).copied();
            set_misplaced(&mut s.durable_misplaced, sector, what);
            let a = (sector * SECTOR_BYTES) as usize;
            if a >= len {
                continue;
            }
            let b = (a + SECTOR_BYTES as usize).min(len);
            s.durable[a..b].copy_from_slice(&s.live[a..b]);
        }
        s.dirty.clear();
        s.count_sync();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut guard = self.lock()?;
        let s = &mut *guard;
        s.stats.writes += 1;
        s.spend_power(offset)?;
        s.charge_latency();
        let rate = s.faults.write_error_rate;
        if s.roll(rate) {
            s.stats.io_errors += 1;
            coverage::hit(Corner::DiskIoError);
            return Err(injected("write", offset));
        }
        if data.is_empty() {
            return Ok(());
        }
        let len = data.len() as u64;
        let rate = s.faults.misdirected_write_rate;
        if s.roll(rate) {
            // It lands inside the image (or where this write would have grown it to).
            let limit = (s.live.len() as u64).max(offset.saturating_add(len));
            if let Some(to) = s.misdirect(offset, len, limit) {
                s.stats.misdirected += 1;
                coverage::hit(Corner::DiskMisdirected);
                // The aimed-at sectors keep their old bytes; the hit ones hold these.
                for sector in sectors(offset, len) {
                    s.misplaced.insert(sector, Misplaced::Stale);
                    s.dirty.insert(sector);
                }
                s.store(to, data)?;
                for sector in sectors(to, len) {
                    let meant_for = (sector * SECTOR_BYTES + offset - to) / SECTOR_BYTES;
                    s.misplaced.insert(sector, Misplaced::Foreign { meant_for });
                }
                return Ok(());
            }
        }
        let range = s.store(offset, data)?;
        // A sector written whole agrees with its protection again; a partly written one
        // still holds the bytes it held.
        let whole = offset.div_ceil(SECTOR_BYTES)..(offset + len) / SECTOR_BYTES;
        if !whole.is_empty() {
            let stale: Vec<u64> = s.misplaced.range(whole).map(|(&k, _)| k).collect();
            for sector in stale {
                s.misplaced.remove(&sector);
            }
        }
        let rate = s.faults.write_bitflip_rate;
        if s.roll(rate) {
            let mut stored = s.live[range.clone()].to_vec();
            s.flip_bit(&mut stored);
            s.live[range].copy_from_slice(&stored);
            s.flipped_on_write = true;
        }
        Ok(())
    }
}

/// The Raft log's view of a [`SimDisk`]: the same device redb sees.
impl super::device::BlockDevice for SimDiskBackend {
    fn len(&self) -> Result<u64, io::Error> {
        redb::StorageBackend::len(self)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        redb::StorageBackend::read(self, offset, out)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        redb::StorageBackend::write(self, offset, data)
    }

    fn sync(&self) -> Result<(), io::Error> {
        redb::StorageBackend::sync_data(self)
    }

    fn take_latency(&self) -> Duration {
        self.disk.take_latency()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::StorageBackend;

    #[test]
    fn power_loss_drops_unsynced_writes() {
        let disk = SimDisk::new(1, DiskFaults::none());
        let b = disk.backend();
        b.set_len(8192).unwrap();
        b.write(0, &[1; 100]).unwrap();
        b.sync_data().unwrap();
        b.write(0, &[2; 100]).unwrap();
        b.write(5000, &[3; 10]).unwrap();
        disk.power_loss(PowerLossMode::DropAll);
        let mut out = [0u8; 100];
        b.read(0, &mut out).unwrap();
        assert_eq!(out, [1; 100]);
        let mut out = [0u8; 10];
        b.read(5000, &mut out).unwrap();
        assert_eq!(out, [0; 10]);
    }

    #[test]
    fn a_cut_armed_after_syncs_keeps_what_they_made_durable_and_nothing_after() {
        let disk = SimDisk::new(1, DiskFaults::none());
        let b = disk.backend();
        b.set_len(4096).unwrap();
        disk.cut_power_after_syncs(2);
        b.write(0, &[1; 10]).unwrap();
        b.sync_data().unwrap();
        assert!(!disk.is_powered_off());
        b.write(0, &[2; 10]).unwrap();
        b.sync_data().unwrap();
        assert!(disk.is_powered_off(), "dark right after the second sync");
        assert!(b.write(0, &[3; 10]).is_err());
        assert!(b.sync_data().is_err());
        disk.power_loss(PowerLossMode::DropAll);
        let mut out = [0u8; 10];
        b.read(0, &mut out).unwrap();
        assert_eq!(out, [2; 10]);
        // Disarmed, nothing goes dark.
        disk.cut_power_after_syncs(1);
        disk.disarm();
        b.sync_data().unwrap();
        assert!(!disk.is_powered_off());
    }

    #[test]
    fn lying_sync_loses_everything() {
        let disk = SimDisk::new(
            1,
            DiskFaults {
                sync_lies: true,
                ..DiskFaults::none()
            },
        );
        let b = disk.backend();
        b.write(0, &[7; 10]).unwrap();
        b.sync_data().unwrap();
        disk.power_loss(PowerLossMode::DropAll);
        assert_eq!(b.len().unwrap(), 0);
    }

    #[test]
    fn errors_are_reported_not_panicked() {
        let disk = SimDisk::new(
            3,
            DiskFaults {
                read_error_rate: 1.0,
                write_error_rate: 1.0,
                sync_error_rate: 1.0,
                ..DiskFaults::none()
            },
        );
        let b = disk.backend();
        assert!(b.write(0, &[1]).is_err());
        assert!(b.sync_data().is_err());
        assert!(b.read(0, &mut [0u8; 1]).is_err());
        assert_eq!(disk.stats().io_errors, 3);
    }

    #[test]
    fn read_past_end_is_an_error() {
        let disk = SimDisk::new(1, DiskFaults::none());
        assert!(disk.backend().read(u64::MAX - 1, &mut [0u8; 4]).is_err());
    }

    #[test]
    fn same_seed_same_faults() {
        let run = |seed| {
            let disk = SimDisk::new(
                seed,
                DiskFaults {
                    write_bitflip_rate: 0.5,
                    ..DiskFaults::none()
                },
            );
            let b = disk.backend();
            for i in 0..50u64 {
                b.write(i * 100, &[i as u8; 100]).unwrap();
            }
            disk.power_loss(PowerLossMode::TornSectors);
            let mut out = vec![0u8; b.len().unwrap() as usize];
            b.read(0, &mut out).unwrap();
            (out, disk.stats())
        };
        assert_eq!(run(9), run(9));
    }

    fn misdirecting(seed: u64, write: f64, read: f64) -> SimDisk {
        SimDisk::new(
            seed,
            DiskFaults {
                misdirected_write_rate: write,
                misdirected_read_rate: read,
                ..DiskFaults::none()
            },
        )
    }

    /// Where the write of one sector of 9s at sector 10 went, found by looking at the image.
    fn written_sector(disk: &SimDisk) -> Option<u64> {
        let s = disk.lock();
        (0..s.live.len() as u64 / SECTOR_BYTES).find(|&k| s.live[(k * SECTOR_BYTES) as usize] == 9)
    }

    #[test]
    fn a_misdirected_write_fails_reads_where_it_was_aimed_and_where_it_landed() {
        let disk = misdirecting(4, 1.0, 0.0);
        let b = disk.backend();
        b.set_len(32 * SECTOR_BYTES).unwrap();
        b.write(10 * SECTOR_BYTES, &[9; SECTOR_BYTES as usize])
            .unwrap();
        let landed = written_sector(&disk).expect("the bytes landed somewhere");
        assert_ne!(landed, 10);
        assert!(disk.is_damaged());
        disk.set_faults(DiskFaults::none());
        let mut out = vec![0u8; SECTOR_BYTES as usize];
        let aimed = b.read(10 * SECTOR_BYTES, &mut out).unwrap_err().to_string();
        assert!(
            aimed.contains("sector 10") && aimed.contains("misses its last write"),
            "{aimed}"
        );
        let hit = b
            .read(landed * SECTOR_BYTES, &mut out)
            .unwrap_err()
            .to_string();
        assert!(hit.contains("written for sector 10"), "{hit}");
        // A read that touches neither is served.
        b.read(0, &mut out[..100]).unwrap_or_else(|e| {
            assert!(landed == 0, "{e}");
        });
        // It survives a sync and a power loss, and a restart's reads still refuse it.
        b.sync_data().unwrap();
        disk.power_loss(PowerLossMode::DropAll);
        assert!(b.read(10 * SECTOR_BYTES, &mut out).is_err());
        // Writing the whole sector again makes it agree.
        b.write(10 * SECTOR_BYTES, &[1; SECTOR_BYTES as usize])
            .unwrap();
        b.read(10 * SECTOR_BYTES, &mut out).unwrap();
        assert_eq!(out, vec![1u8; SECTOR_BYTES as usize]);
        // A partial write of a sector still holding foreign bytes leaves it refused.
        b.write(landed * SECTOR_BYTES, &[2; 10]).unwrap();
        assert!(b.read(landed * SECTOR_BYTES, &mut out[..10]).is_err());
        assert_eq!(disk.stats().misdirected, 1);
    }

    #[test]
    fn an_unsynced_misdirected_write_lost_to_power_leaves_the_disk_readable() {
        let disk = misdirecting(5, 1.0, 0.0);
        let b = disk.backend();
        b.set_len(32 * SECTOR_BYTES).unwrap();
        b.sync_data().unwrap();
        disk.set_faults(DiskFaults {
            misdirected_write_rate: 1.0,
            ..DiskFaults::none()
        });
        b.write(10 * SECTOR_BYTES, &[9; SECTOR_BYTES as usize])
            .unwrap();
        disk.power_loss(PowerLossMode::DropAll);
        let mut out = vec![0u8; (32 * SECTOR_BYTES) as usize];
        b.read(0, &mut out).unwrap();
        assert!(out.iter().all(|&x| x == 0));
    }

    #[test]
    fn a_misdirected_read_is_refused_and_the_image_stays_intact() {
        let disk = misdirecting(6, 0.0, 1.0);
        let b = disk.backend();
        b.set_len(32 * SECTOR_BYTES).unwrap();
        b.write(12 * SECTOR_BYTES, &[3; 100]).unwrap();
        let mut out = [0u8; 100];
        let e = b.read(12 * SECTOR_BYTES, &mut out).unwrap_err().to_string();
        assert!(
            e.contains("sector 12") && e.contains("returned sector"),
            "{e}"
        );
        assert!(!disk.is_damaged());
        disk.set_faults(DiskFaults::none());
        b.read(12 * SECTOR_BYTES, &mut out).unwrap();
        assert_eq!(out, [3; 100]);
    }
}
