//! The Raft log's own format (the append-only segmented log) on the simulated disk:
//! crash consistency against a model under every power-loss mode with random crash points,
//! the control where sync lies (the check must catch it), damaged synced records refused
//! (never served, never silently dropped), and recovery fed random and corrupted bytes.
//!
//! `ODGM_CRASH_RUNS` raises the number of runs per mode (default 60).

use std::sync::Arc;

use odgm_sim::raft::log_store::{LogError, SegmentLog};
use odgm_sim::storage::{BlockDevice, DiskFaults, MemoryDevice, PowerLossMode, SimDisk};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn runs() -> u64 {
    std::env::var("ODGM_CRASH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}

/// What the log should hold: entries (index, bytes) in order, the purge point and the state.
#[derive(Debug, Clone, PartialEq, Default)]
struct Model {
    first: u64,
    entries: Vec<Vec<u8>>,
    purged: Option<u64>,
    state: Vec<u8>,
}

impl Model {
    fn next(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    fn truncated(&self, from: u64) -> Model {
        let mut m = self.clone();
        m.entries.truncate(from.saturating_sub(m.first) as usize);
        m
    }
}

/// What the reopened log holds.
fn read_back(log: &SegmentLog) -> Result<Model, LogError> {
    let mut m = Model {
        first: log.first_index().unwrap_or(log.next_index()),
        purged: log.purged(),
        state: log.state().to_vec(),
        ..Model::default()
    };
    if let (Some(a), Some(b)) = (log.first_index(), log.last_index()) {
        for i in a..=b {
            m.entries.push(log.read(i)?);
        }
    }
    Ok(m)
}

/// The operations the test drives.
#[derive(Debug, Clone)]
enum Op {
    Append(u64, Vec<Vec<u8>>),
    Truncate(u64),
    Purge(u64, Vec<u8>),
    State(Vec<u8>),
}

/// Draws the next operation. With `fixed` sizes, records rewritten after a crash line up
/// with the ones the crash left behind (which the log's chaining must reject).
fn draw(rng: &mut StdRng, m: &Model, fixed: Option<usize>) -> Op {
    let value = |rng: &mut StdRng| -> Vec<u8> {
        let n = fixed.unwrap_or_else(|| {
            let cap = rng.gen_range(1..600);
            rng.gen_range(0..cap)
        });
        (0..n).map(|_| rng.gen()).collect()
    };
    let has = !m.entries.is_empty();
    match rng.gen_range(0..10) {
        0 if has => Op::Truncate(rng.gen_range(m.first..m.next())),
        1 if has => Op::Purge(rng.gen_range(m.first..m.next()), value(rng)),
        2 => Op::State(value(rng)),
        3 if has => {
            // Replace the entries from an index on (a new leader's entries).
            let from = rng.gen_range(m.first..m.next());
            Op::Append(from, (0..rng.gen_range(1..5)).map(|_| value(rng)).collect())
        }
        _ => Op::Append(
            m.next(),
            (0..rng.gen_range(1..24)).map(|_| value(rng)).collect(),
        ),
    }
}

fn run(log: &mut SegmentLog, op: &Op) -> Result<(), LogError> {
    match op {
        Op::Append(from, values) => {
            let batch: Vec<(u64, &[u8])> = values
                .iter()
                .enumerate()
                .map(|(i, v)| (from + i as u64, v.as_slice()))
                .collect();
            log.append(&batch, true)
        }
        Op::Truncate(from) => log.truncate(*from),
        Op::Purge(upto, state) => log.purge(*upto, state.clone()),
        Op::State(state) => log.set_state(state.clone(), true),
    }
}

/// The states a crash during `op` may leave, from `m` (the last acknowledged state).
fn outcomes(m: &Model, op: &Op) -> Vec<Model> {
    let mut out = vec![m.clone()];
    match op {
        Op::Append(from, values) => {
            let base = if *from < m.next() {
                m.truncated(*from)
            } else {
                m.clone()
            };
            for j in 0..=values.len() {
                let mut n = base.clone();
                if n.entries.is_empty() {
                    n.first = *from;
                }
                n.entries.extend(values[..j].iter().cloned());
                out.push(n);
            }
        }
        Op::Truncate(from) => out.push(m.truncated(*from)),
        Op::Purge(upto, state) => out.push(apply(m, op).unwrap_or_else(|| {
            let mut n = m.clone();
            n.purged = Some(*upto);
            n.state = state.clone();
            n
        })),
        Op::State(state) => out.push(Model {
            state: state.clone(),
            ..m.clone()
        }),
    }
    out
}

/// The state after `op` succeeds.
fn apply(m: &Model, op: &Op) -> Option<Model> {
    let mut n = m.clone();
    match op {
        Op::Append(from, values) => {
            if *from < n.next() {
                n = n.truncated(*from);
            }
            if n.entries.is_empty() {
                n.first = *from;
            }
            n.entries.extend(values.iter().cloned());
        }
        Op::Truncate(from) => n = n.truncated(*from),
        Op::Purge(upto, state) => {
            let gone = (upto + 1)
                .saturating_sub(n.first)
                .min(n.entries.len() as u64);
            n.entries.drain(..gone as usize);
            n.first = upto + 1;
            n.purged = Some(*upto);
            n.state = state.clone();
        }
        Op::State(state) => n.state = state.clone(),
    }
    Some(n)
}

/// Two models agree on what a log observably holds (an empty log's first index is where
/// the next entry goes, which only the purge point pins down).
fn same(a: &Model, b: &Model) -> bool {
    a.entries == b.entries
        && a.purged == b.purged
        && a.state == b.state
        && (a.entries.is_empty() || a.first == b.first)
}

/// One run: a few cycles of random operations, a power cut at a random point, recovery,
/// and a comparison with the model. `Err` describes a violation.
fn crash_run(seed: u64, mode: PowerLossMode, faults: DiskFaults) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let disk = SimDisk::new(seed, faults);
    let segment_bytes = [512, 2048, 1 << 16][rng.gen_range(0..3)];
    let fixed = rng.gen_bool(0.5).then(|| rng.gen_range(0..100));
    let mut acked = Model::default();
    for cycle in 0..rng.gen_range(1..5) {
        let mut log = SegmentLog::open(Arc::new(disk.backend()), segment_bytes)
            .map_err(|e| format!("seed {seed} {mode:?} cycle {cycle}: open failed: {e}"))?;
        disk.cut_power_after(rng.gen_range(1..120));
        let mut in_flight = None;
        for _ in 0..rng.gen_range(1..60) {
            let op = draw(&mut rng, &acked, fixed);
            match run(&mut log, &op) {
                Ok(()) => acked = apply(&acked, &op).expect("an outcome"),
                Err(_) => {
                    in_flight = Some(op);
                    break;
                }
            }
        }
        drop(log);
        disk.fence();
        disk.power_loss(mode);
        let log = SegmentLog::open(Arc::new(disk.backend()), segment_bytes)
            .map_err(|e| format!("seed {seed} {mode:?} cycle {cycle}: reopen failed: {e}"))?;
        let got = read_back(&log).map_err(|e| format!("seed {seed}: read back: {e}"))?;
        let allowed = match &in_flight {
            Some(op) => outcomes(&acked, op),
            None => vec![acked.clone()],
        };
        match allowed.iter().find(|m| same(m, &got)) {
            Some(m) => acked = m.clone(),
            None => {
                return Err(format!(
                    "seed {seed} {mode:?} cycle {cycle}: state {} vs {} bytes; recovered {} entries from {} \
                     (purged {:?}), acknowledged {} from {} (purged {:?}); in flight: {:?}",
                    got.state.len(),
                    acked.state.len(),
                    got.entries.len(),
                    got.first,
                    got.purged,
                    acked.entries.len(),
                    acked.first,
                    acked.purged,
                    in_flight.map(|o| match o {
                        Op::Append(f, v) => format!("append {} from {f}", v.len()),
                        other => format!("{other:?}").chars().take(40).collect(),
                    })
                ))
            }
        }
        drop(log);
        disk.fence();
    }
    Ok(())
}

#[test]
fn power_loss_recovers_every_synced_record() {
    for mode in PowerLossMode::ALL {
        for seed in 0..runs() {
            crash_run(seed, mode, DiskFaults::none())
                .unwrap_or_else(|e| panic!("{e} (replay: ODGM_CRASH_RUNS={})", seed + 1));
        }
    }
}

/// The control: on a disk whose sync lies, acknowledged records are lost, and the check
/// must say so.
#[test]
fn lying_sync_is_caught() {
    let lying = DiskFaults {
        sync_lies: true,
        ..DiskFaults::none()
    };
    let caught = (0..runs())
        .filter(|&seed| crash_run(seed, PowerLossMode::DropAll, lying.clone()).is_err())
        .count();
    assert!(caught > 0, "no run noticed that sync lies");
}

/// A log with several synced batches over a few segments.
fn filled(dev: Arc<dyn BlockDevice>, segment_bytes: u64) -> SegmentLog {
    let mut log = SegmentLog::open(dev, segment_bytes).unwrap();
    for i in 0..40u64 {
        let v = vec![i as u8; 50];
        log.append(&[(i, v.as_slice())], true).unwrap();
    }
    log
}

/// A bit flipped in a synced record that later synced records follow: recovery refuses the
/// log (it would otherwise drop acknowledged entries), and a read of it fails.
#[test]
fn damaged_synced_record_is_refused_never_served() {
    for segment_bytes in [512u64, 1 << 16] {
        let dev = Arc::new(MemoryDevice::new());
        let log = filled(dev.clone(), segment_bytes);
        // Flip a bit inside entry 5's record (after its header).
        let mut byte = [0u8; 1];
        let probe = (0..dev.len().unwrap())
            .find(|&off| {
                dev.read(off, &mut byte).unwrap();
                let mut flipped = [byte[0] ^ 0x10];
                dev.write(off, &flipped).unwrap();
                let hit = log.read(5).is_err();
                flipped[0] ^= 0x10;
                dev.write(off, &flipped).unwrap();
                hit
            })
            .expect("some byte of entry 5");
        dev.read(probe, &mut byte).unwrap();
        dev.write(probe, &[byte[0] ^ 0x10]).unwrap();
        assert!(log.read(5).is_err(), "a damaged record is not served");
        drop(log);
        match SegmentLog::open(dev, segment_bytes).map(|l| l.last_index()) {
            Err(LogError::Corrupt { at, what }) => {
                assert!(at.contains("segment"), "names where: {at}");
                assert!(what.contains("durable"), "says why: {what}");
            }
            other => panic!("a damaged synced record must refuse to open: {other:?}"),
        }
    }
}

/// A torn tail (bytes after the last sync) is dropped, and the log goes on from there.
#[test]
fn torn_tail_is_dropped_and_appends_continue() {
    let dev = Arc::new(MemoryDevice::new());
    let mut log = filled(dev.clone(), 1 << 16);
    log.append(&[(40, b"unsynced".as_slice())], false).unwrap();
    let end = dev.len().unwrap();
    dev.write(end - 3, &[0xFF; 3]).unwrap();
    drop(log);
    let mut log = SegmentLog::open(dev.clone(), 1 << 16).unwrap();
    assert_eq!(log.last_index(), Some(39));
    log.append(&[(40, b"again".as_slice())], true).unwrap();
    drop(log);
    let log = SegmentLog::open(dev, 1 << 16).unwrap();
    assert_eq!(log.read(40).unwrap(), b"again");
}

/// Recovery fed random bytes, or a real log with random bytes overwritten: it opens or
/// refuses with an error, never panics, and allocates no more than the device holds.
#[test]
fn recovery_survives_random_and_corrupted_bytes() {
    let mut rng = StdRng::seed_from_u64(11);
    for case in 0..300u64 {
        let dev = Arc::new(MemoryDevice::new());
        if case % 2 == 0 {
            let n = rng.gen_range(0..40_000);
            let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            dev.write(0, &bytes).unwrap();
        } else {
            drop(filled(dev.clone(), [512, 4096][rng.gen_range(0..2)]));
            let len = dev.len().unwrap();
            for _ in 0..rng.gen_range(1..6) {
                let at = rng.gen_range(0..len);
                let junk: Vec<u8> = (0..rng.gen_range(1..64)).map(|_| rng.gen()).collect();
                dev.write(at, &junk).unwrap();
            }
        }
        let len = dev.len().unwrap();
        if let Ok(log) = SegmentLog::open(dev.clone(), 512) {
            // Whatever it recovered reads back or fails cleanly.
            let _ = read_back(&log);
            assert!(
                log.device_len() <= len.max(8192 + 2 * 512),
                "case {case}: recovery grew the device"
            );
        }
    }
}

/// A record larger than a segment is refused with a clear error.
#[test]
fn oversized_entry_is_refused() {
    let mut log = SegmentLog::open(Arc::new(MemoryDevice::new()), 512).unwrap();
    let big = vec![0u8; 600];
    let err = log.append(&[(0, big.as_slice())], true).unwrap_err();
    assert!(err.to_string().contains("does not fit a segment"), "{err}");
}

/// The byte offset of entry `index`'s record on a device, found by damaging bytes until a
/// read of that entry fails (and undoing each).
fn offset_of(dev: &MemoryDevice, log: &SegmentLog, index: u64) -> u64 {
    let mut byte = [0u8; 1];
    (0..dev.len().unwrap())
        .find(|&off| {
            dev.read(off, &mut byte).unwrap();
            dev.write(off, &[byte[0] ^ 0x10]).unwrap();
            let hit = log.read(index).is_err();
            dev.write(off, &byte).unwrap();
            hit
        })
        .expect("some byte of the entry")
}

/// A record a crash left behind after a lost one never joins the log, even when the lost
/// record is written again byte for byte.
#[test]
fn a_stale_record_never_rejoins_after_an_identical_rewrite() {
    let dev = Arc::new(MemoryDevice::new());
    let mut log = filled(dev.clone(), 1 << 16);
    let ten = vec![10u8; 50];
    let eleven = vec![11u8; 50];
    log.append(&[(40, ten.as_slice()), (41, eleven.as_slice())], false)
        .unwrap();
    // The crash loses entry 40's bytes but keeps entry 41's.
    let start = offset_of(&dev, &log, 40);
    drop(log);
    dev.write(start, &[0u8; 98]).unwrap();
    let mut log = SegmentLog::open(dev.clone(), 1 << 16).unwrap();
    assert_eq!(log.last_index(), Some(39));
    log.append(&[(40, ten.as_slice())], true).unwrap();
    drop(log);
    let log = SegmentLog::open(dev, 1 << 16).unwrap();
    assert_eq!(log.last_index(), Some(40), "entry 41 was never rewritten");
}

/// The header of the newest segment damaged: its synced records are not silently dropped.
#[test]
fn damaged_newest_segment_header_is_refused() {
    let dev = Arc::new(MemoryDevice::new());
    let log = filled(dev.clone(), 512);
    drop(log);
    // The newest segment's header is the last valid one in slot order of sequence; damage
    // every header whose slot holds the last entry.
    let probe = SegmentLog::open(dev.clone(), 512).unwrap();
    let last = probe.last_index().unwrap();
    let at = offset_of(&dev, &probe, last);
    drop(probe);
    let slot_start = 8192 + (at - 8192) / 512 * 512;
    let mut byte = [0u8; 1];
    dev.read(slot_start + 20, &mut byte).unwrap();
    dev.write(slot_start + 20, &[byte[0] ^ 0x01]).unwrap();
    match SegmentLog::open(dev, 512).map(|l| l.last_index()) {
        Err(LogError::Corrupt { what, .. }) => assert!(what.contains("durable"), "{what}"),
        other => panic!("a damaged segment header must refuse to open: {other:?}"),
    }
}

/// The newest superblock copy damaged after records were synced on it: the log refuses to
/// open rather than bring back the older vote.
#[test]
fn damaged_newest_superblock_is_refused() {
    let dev = Arc::new(MemoryDevice::new());
    let mut log = SegmentLog::open(dev.clone(), 1 << 16).unwrap();
    log.set_state(b"vote 1".to_vec(), true).unwrap();
    log.set_state(b"vote 2".to_vec(), true).unwrap();
    log.append(&[(0, b"after".as_slice())], true).unwrap();
    drop(log);
    // Superblocks 1 (the creation), 2 and 3 were written; 3 ("vote 2") is in copy 1.
    let mut byte = [0u8; 1];
    dev.read(4096 + 60, &mut byte).unwrap();
    dev.write(4096 + 60, &[byte[0] ^ 0x01]).unwrap();
    match SegmentLog::open(dev, 1 << 16).map(|l| l.state().to_vec()) {
        Err(LogError::Corrupt { at, .. }) => assert!(at.contains("superblock"), "{at}"),
        other => panic!("a damaged newest superblock must refuse to open: {other:?}"),
    }
}
