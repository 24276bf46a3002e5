//! The random nemesis: during the fault phase it draws a kind (by weight, from the kinds the
//! seed switched on), injects a fault of that kind, holds it, undoes it, waits, and again.
//! Targets and parameters come from the seed; the faults go through the [`Injector`], so
//! they are recorded like scheduled ones (and `shrink` can replay them as a schedule).

use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::Rng;

use super::cluster::Cluster;
use super::faults::Injector;
use super::trace;
use crate::scenario::{CutAfter, Fault, Nemesis, NemesisKind, Target};
use crate::storage::{DiskFaults, EngineKind, PowerLossMode};

/// What undoes a nemesis fault.
enum Undo {
    Heal,
    Restart(u64),
    Resume(u64),
    Unskew(u64),
    DiskOk(u64),
    Readd(u64),
    Nothing,
}

/// The kinds a run of `cfg` draws from, with their weights: every kind with a weight above
/// 0, and with `swarm` the seed switches each on or off (keeping at least one) and scales
/// its weight. Kinds are visited in their order ([`NemesisKind`] is declared in name order).
fn switched_on(cfg: &Nemesis) -> Vec<(NemesisKind, f64)> {
    let mut rng = crate::rt::thread_rng();
    let mut kinds: Vec<(NemesisKind, f64)> = cfg
        .kinds
        .iter()
        .filter(|(_, w)| **w > 0.0)
        .map(|(k, w)| (*k, *w))
        .collect();
    if cfg.swarm && !kinds.is_empty() {
        let keep = rng.gen_range(0..kinds.len());
        let mut i = 0;
        kinds.retain_mut(|(_, w)| {
            let on = i == keep || rng.gen_bool(0.5);
            *w *= rng.gen_range(0.25..=1.0);
            i += 1;
            on
        });
    }
    kinds
}

/// Runs the nemesis until `until`.
pub async fn run(inj: Arc<Injector>, cfg: Nemesis, until: tokio::time::Instant) {
    let kinds = switched_on(&cfg);
    let named: Vec<(&str, f64)> = kinds.iter().map(|(k, w)| (k.name(), *w)).collect();
    trace::record(format_args!("nemesis kinds: {named:?}"));
    let total: f64 = kinds.iter().map(|(_, w)| w).sum();
    let crashes: Vec<NemesisKind> = kinds
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| matches!(k, NemesisKind::Kill | NemesisKind::PowerLoss))
        .collect();
    let syncs = inj.cluster.spec.engine == EngineKind::Redb;
    // Kinds that cut links: with one on, a returning node may be isolated again in the
    // middle of the snapshot it catches up with.
    let cuts = kinds.iter().any(|(k, _)| {
        matches!(
            k,
            NemesisKind::Partition | NemesisKind::Clog | NemesisKind::OneWay
        )
    }) && inj.cluster.spec.record;
    loop {
        let (gap, hold, roll) = {
            let mut rng = crate::rt::thread_rng();
            (
                rng.gen_range(cfg.interval_ms.0..=cfg.interval_ms.1),
                rng.gen_range(cfg.fault_ms.0..=cfg.fault_ms.1),
                rng.gen_range(0.0..total),
            )
        };
        tokio::time::sleep(Duration::from_millis(gap)).await;
        if tokio::time::Instant::now() >= until {
            return;
        }
        let mut r = roll;
        let kind = kinds
            .iter()
            .find(|(_, w)| {
                let hit = r < *w;
                r -= w;
                hit
            })
            .map_or(kinds[0].0, |(k, _)| *k);
        let undo = inject(&inj, kind).await;
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        tokio::time::sleep(Duration::from_millis(hold).min(left)).await;
        let returning = match undo {
            Undo::Restart(n) => vec![n],
            Undo::Heal => inj.live_members(),
            _ => Vec::new(),
        };
        undo_fault(&inj, undo).await;
        // A node coming back catches up (appends, truncations, snapshot installs and the
        // purges after them) in a burst of writes; now and then a crash or power cut is armed
        // to land inside that burst.
        if (syncs || inj.cluster.spec.record) && !crashes.is_empty() && !returning.is_empty() {
            let armed = {
                let mut rng = crate::rt::thread_rng();
                rng.gen_bool(0.5).then(|| {
                    let n = *returning.choose(&mut rng).expect("not empty");
                    let power = (*crashes.choose(&mut rng).expect("not empty")
                        == NemesisKind::PowerLoss)
                        .then(|| *PowerLossMode::ALL.choose(&mut rng).expect("modes"));
                    (n, power, draw_catch_up(&mut rng, &inj.cluster))
                })
            };
            if let Some((n, power, after)) = armed {
                inj.arm_cut(n, power, after);
                let left = until.saturating_duration_since(tokio::time::Instant::now());
                tokio::time::sleep(Duration::from_millis(hold).min(left)).await;
                inj.restart(n);
            }
        }
        if cuts && !returning.is_empty() {
            let armed = {
                let mut rng = crate::rt::thread_rng();
                rng.gen_bool(0.25).then(|| {
                    let n = *returning.choose(&mut rng).expect("not empty");
                    (n, CutAfter::Chunks(rng.gen_range(1..=4)))
                })
            };
            if let Some((n, after)) = armed {
                inj.arm_isolation(n, after);
                let left = until.saturating_duration_since(tokio::time::Instant::now());
                tokio::time::sleep(Duration::from_millis(hold).min(left)).await;
                inj.apply(&Fault::Heal).await;
            }
        }
    }
}

/// What an armed crash or power cut waits for, if the cluster can time one: a vote, a few
/// appends, a few snapshot chunks or a log purge (Raft, whose events the cluster records) or some syncs
/// (simulated disks: 1 to 64, small counts as likely as large ranges, so the cut lands early
/// in a burst of writes as often as late).
fn draw_cut(rng: &mut impl Rng, c: &Cluster) -> Option<CutAfter> {
    let mut ways = Vec::new();
    if c.spec.record {
        ways.extend([0, 1, 3, 4]);
    }
    if c.spec.engine == EngineKind::Redb {
        ways.push(2);
    }
    Some(match *ways.choose(rng)? {
        0 => CutAfter::Votes(1),
        1 => CutAfter::Appends(rng.gen_range(1..=4)),
        3 => CutAfter::Chunks(rng.gen_range(1..=4)),
        4 => CutAfter::Purges(1),
        _ => CutAfter::Syncs(draw_count(rng)),
    })
}

/// What a crash armed on a node coming back waits for: some syncs (simulated disks), or the
/// first vote of the election its return may set off, its first log purge, a few snapshot
/// chunks of its catch-up, or some disk operations into the snapshot install that ends it
/// (Raft; the install on simulated disks). A node cut off for a while has been voting for
/// itself term after term; the cluster it returns to often holds an election.
fn draw_catch_up(rng: &mut impl Rng, c: &Cluster) -> CutAfter {
    let raft = c.spec.record;
    let redb = c.spec.engine == EngineKind::Redb;
    match rng.gen_range(0..6) {
        1 | 4 if raft => CutAfter::Purges(1),
        2 if raft => CutAfter::Chunks(rng.gen_range(1..=4)),
        3 if raft => CutAfter::Votes(1),
        5 if raft && redb => CutAfter::InstallOps(draw_count(rng)),
        _ if redb => CutAfter::Syncs(draw_count(rng)),
        _ => CutAfter::Purges(1),
    }
}

/// 1 to 64, small counts as likely as large ranges.
fn draw_count(rng: &mut impl Rng) -> u64 {
    let most = 1u64 << rng.gen_range(0..=6u32);
    rng.gen_range(1..=most)
}

async fn inject(inj: &Arc<Injector>, kind: NemesisKind) -> Undo {
    let c = &inj.cluster;
    let live = inj.live_members();
    let rng_pick = |n: usize| crate::rt::thread_rng().gen_range(0..n.max(1));
    match kind {
        NemesisKind::Partition => {
            let mut nodes = c.node_ids();
            nodes.shuffle(&mut crate::rt::thread_rng());
            if nodes.len() < 2 {
                return Undo::Nothing;
            }
            // Half the time the leader alone, as in a real leader failover: the cut where a
            // deposed leader that still believes it leads (a lease, a stalled clock, a stale
            // read) does its damage.
            let leader = c
                .raft_leader()
                .filter(|_| crate::rt::thread_rng().gen_bool(0.5));
            if let Some(l) = leader {
                nodes.retain(|n| *n != l);
                nodes.insert(0, l);
            }
            let cut = match leader {
                Some(_) => 1,
                None => 1 + rng_pick(nodes.len() - 1),
            };
            let groups = vec![nodes[..cut].to_vec(), nodes[cut..].to_vec()];
            inj.apply(&Fault::Partition { groups }).await;
            Undo::Heal
        }
        NemesisKind::OneWay => {
            inj.apply(&Fault::OneWay {
                from: Target::Random,
                to: Target::Random,
            })
            .await;
            Undo::Heal
        }
        NemesisKind::Clog => {
            inj.apply(&Fault::Clog {
                node: Target::Random,
            })
            .await;
            Undo::Heal
        }
        NemesisKind::Kill | NemesisKind::PowerLoss => {
            let (power, after) = {
                let mut rng = crate::rt::thread_rng();
                let power = (kind == NemesisKind::PowerLoss)
                    .then(|| *PowerLossMode::ALL.choose(&mut rng).expect("modes"));
                let after = rng.gen_bool(0.5).then(|| draw_cut(&mut rng, c)).flatten();
                (power, after)
            };
            let Some(after) = after else {
                let Some(n) = inj.pick(&live) else {
                    return Undo::Nothing;
                };
                inj.kill(n, power);
                return Undo::Restart(n);
            };
            // An armed cut goes, every other time, to a node that is voting or appending now
            // (if any is; for a cut after a vote, one that voted lately: elections come in
            // storms); otherwise to any live node, which may be idle until later.
            let since = trace::now_us().saturating_sub(500_000);
            let busy: Vec<u64> = match after {
                CutAfter::Votes(_) => {
                    c.raft_voters_since(trace::now_us().saturating_sub(2_000_000))
                }
                _ => c.raft_writers_since(since),
            }
            .into_iter()
            .filter(|n| live.contains(n))
            .collect();
            let prefer_busy = !busy.is_empty() && crate::rt::thread_rng().gen_bool(0.5);
            let Some(n) = inj.pick(if prefer_busy { &busy } else { &live }) else {
                return Undo::Nothing;
            };
            inj.arm_cut(n, power, after);
            Undo::Restart(n)
        }
        NemesisKind::Pause => {
            let Some(n) = inj.pick(&live) else {
                return Undo::Nothing;
            };
            inj.pause(n);
            Undo::Resume(n)
        }
        NemesisKind::ClockSkew => {
            // Half the time the leader's clock, whose timers and leases matter most. Now and
            // then a clock that nearly stalls (a paused VM, a throttled CPU): its node's
            // timers run at a tenth of their speed. Half the skews last (a bad oscillator stays bad), so
            // they overlap the faults that follow.
            let (leader, offset, drift, lasting) = {
                let mut rng = crate::rt::thread_rng();
                let leader = rng.gen_bool(0.5);
                let offset = rng.gen_range(-5_000..=5_000);
                let drift = if rng.gen_bool(0.25) {
                    -900_000
                } else {
                    rng.gen_range(-200_000..=200_000)
                };
                (leader, offset, drift, rng.gen_bool(0.5))
            };
            let n = match leader.then(|| c.raft_leader()).flatten() {
                Some(l) if live.contains(&l) => l,
                _ => {
                    let Some(n) = inj.pick(&live) else {
                        return Undo::Nothing;
                    };
                    n
                }
            };
            inj.skew(n, offset, drift);
            if lasting {
                Undo::Nothing
            } else {
                Undo::Unskew(n)
            }
        }
        NemesisKind::DiskFaults => {
            let Some(n) = inj.pick(&live) else {
                return Undo::Nothing;
            };
            let disk = DiskFaults {
                write_error_rate: 0.01,
                sync_error_rate: 0.01,
                read_error_rate: 0.01,
                misdirected_read_rate: 0.01,
                latency_us_min: 50,
                latency_us_max: 5_000,
                ..DiskFaults::none()
            };
            inj.apply(&Fault::DiskFaults {
                node: Target::Node(n),
                disk,
            })
            .await;
            Undo::DiskOk(n)
        }
        NemesisKind::Snapshot => {
            if let Some(n) = inj.pick(&live) {
                inj.snapshot(n);
            }
            Undo::Nothing
        }
        NemesisKind::Membership => {
            if inj.members.lock().unwrap_or_else(|e| e.into_inner()).len() <= 2 {
                return Undo::Nothing;
            }
            let Some(n) = inj.resolve(Target::Follower) else {
                return Undo::Nothing;
            };
            inj.remove_replica(n).await;
            let removed = !inj
                .members
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&n);
            if removed {
                Undo::Readd(n)
            } else {
                Undo::Nothing
            }
        }
    }
}

async fn undo_fault(inj: &Arc<Injector>, undo: Undo) {
    match undo {
        Undo::Heal => inj.apply(&Fault::Heal).await,
        Undo::Restart(n) => inj.restart(n),
        Undo::Resume(n) => inj.resume(n),
        Undo::Unskew(n) => inj.skew(n, 0, inj.cluster.start_drift_ppm(n)),
        Undo::DiskOk(n) => inj.disk_ok(n),
        Undo::Readd(n) => inj.add_replica(n).await,
        Undo::Nothing => {}
    }
}
