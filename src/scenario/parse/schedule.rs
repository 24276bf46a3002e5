//! The `[[schedule]]` entries: each gives exactly the fields its kind takes, hits nodes that
//! exist, fits the cluster, and undoes only what an earlier entry broke.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use super::{Ctx, Result};
use crate::scenario::{ClusterConfig, CutAfter, Fault, FaultKind, Need, ScheduledFault, Target};
use crate::storage::{DiskFaults, EngineKind, PowerLossMode};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFault {
    at_ms: Spanned<u64>,
    fault: Spanned<String>,
    node: Option<Spanned<toml::Value>>,
    groups: Option<Spanned<Vec<Vec<u64>>>>,
    from: Option<Spanned<toml::Value>>,
    to: Option<Spanned<toml::Value>>,
    offset_ms: Option<Spanned<i64>>,
    drift_ppm: Option<Spanned<i64>>,
    mode: Option<Spanned<PowerLossMode>>,
    disk: Option<Spanned<DiskFaults>>,
    after: Option<Spanned<CutAfter>>,
}

impl RawFault {
    /// Where each field the entry gives is (by the names [`FaultKind::fields`] uses).
    fn given(&self) -> [(&'static str, Option<Range<usize>>); 9] {
        [
            ("node", self.node.as_ref().map(|s| s.span())),
            ("groups", self.groups.as_ref().map(|s| s.span())),
            ("from", self.from.as_ref().map(|s| s.span())),
            ("to", self.to.as_ref().map(|s| s.span())),
            ("offset_ms", self.offset_ms.as_ref().map(|s| s.span())),
            ("drift_ppm", self.drift_ppm.as_ref().map(|s| s.span())),
            ("mode", self.mode.as_ref().map(|s| s.span())),
            ("disk", self.disk.as_ref().map(|s| s.span())),
            ("after", self.after.as_ref().map(|s| s.span())),
        ]
    }
}

/// The schedule as validation walks it: what the entries so far have broken, so that an
/// entry that undoes nothing (a heal with no cut, a restart with no crash) is refused.
pub(super) struct Schedule<'a> {
    ctx: &'a Ctx<'a>,
    cluster: &'a ClusterConfig,
    duration_ms: u64,
    pub(super) entries: Vec<ScheduledFault>,
    last_at: u64,
    down: BTreeSet<u64>,
    paused: BTreeSet<u64>,
    members: BTreeSet<u64>,
    net_faulted: bool,
    any_down: bool,
    any_paused: bool,
    /// Raft nodes on the memory engine that a kill emptied, with the kill's entry index and
    /// span: each must be replaced (removed from the membership) and never restarted as
    /// itself before that.
    /// A replaced node stays here, without its kill (`None`): it may not restart either.
    emptied: BTreeMap<u64, Option<(usize, Range<usize>)>>,
}

/// One schedule entry being validated: its index, the raw entry and its span.
struct Entry<'a> {
    i: usize,
    raw: &'a RawFault,
    span: Range<usize>,
    kind: FaultKind,
}

impl Entry<'_> {
    fn field(&self, name: &str) -> String {
        format!("schedule[{}].{name}", self.i)
    }
}

impl<'a> Schedule<'a> {
    pub(super) fn new(
        ctx: &'a Ctx<'a>,
        cluster: &'a ClusterConfig,
        duration_ms: u64,
    ) -> Schedule<'a> {
        Schedule {
            ctx,
            cluster,
            duration_ms,
            entries: Vec::new(),
            last_at: 0,
            down: BTreeSet::new(),
            paused: BTreeSet::new(),
            members: (1..=cluster.nodes).collect(),
            net_faulted: false,
            any_down: false,
            any_paused: false,
            emptied: BTreeMap::new(),
        }
    }

    /// The schedule, once every entry is in: refused if a Raft node on the memory engine
    /// was killed and never replaced.
    pub(super) fn finish(self) -> Result<Vec<ScheduledFault>> {
        let unreplaced = self
            .emptied
            .into_iter()
            .find_map(|(n, kill)| kill.map(|k| (n, k)));
        if let Some((n, (i, span))) = unreplaced {
            return Err(self.ctx.err(
                span,
                &format!("schedule[{i}].node"),
                format!(
                    "kill of Raft node {n} on the memory engine, which is never replaced: its \
                     log and vote vanish, so it may only come back as a new member (remove it \
                     with remove_replica, and add a spare)"
                ),
            ));
        }
        Ok(self.entries)
    }

    fn total(&self) -> u64 {
        self.cluster.nodes + self.cluster.spares
    }

    pub(super) fn entry(&mut self, i: usize, entry: Spanned<RawFault>) -> Result<()> {
        let ctx = self.ctx;
        let span = entry.span();
        let raw = entry.into_inner();
        let field = |name: &str| format!("schedule[{i}].{name}");
        let at = *raw.at_ms.get_ref();
        if at >= self.duration_ms {
            return Err(ctx.err(
                raw.at_ms.span(),
                &field("at_ms"),
                format!(
                    "{at} is outside the fault phase 0..{} (faults heal at duration_ms)",
                    self.duration_ms
                ),
            ));
        }
        if at < self.last_at {
            return Err(ctx.err(
                raw.at_ms.span(),
                &field("at_ms"),
                format!(
                    "{at} is before the previous entry's {}; list faults in time order",
                    self.last_at
                ),
            ));
        }
        self.last_at = at;
        let kind: FaultKind = raw.fault.get_ref().parse().map_err(|e| {
            ctx.err(
                raw.fault.span(),
                &field("fault"),
                format!("unknown fault {e}"),
            )
        })?;
        let e = Entry {
            i,
            raw: &raw,
            span,
            kind,
        };
        self.fields(&e)?;
        let mut replaced_later = None;
        if let Some(need) = Need::first_unmet(kind.needs(), self.cluster) {
            // A Raft node on the memory engine may be killed if the schedule then replaces
            // it (see `finish`): Raft allows an emptied node back only as a new member.
            let node = raw.node.as_ref().map(|n| n.get_ref());
            match (need, kind, node) {
                (Need::DurableRaftLog, FaultKind::Kill, Some(toml::Value::Integer(n)))
                    if raw.after.is_none() =>
                {
                    replaced_later = Some(*n as u64);
                }
                _ => {
                    return Err(ctx.err(
                        raw.fault.span(),
                        &field("fault"),
                        need.unmet(kind.name(), self.cluster),
                    ))
                }
            }
        }
        if kind == FaultKind::Restart && !self.emptied.is_empty() {
            // An emptied node never comes back as itself, replaced or not; and a restart of
            // whichever nodes are down would restart it.
            let which = match raw.node.as_ref().map(|n| n.get_ref()) {
                Some(toml::Value::Integer(n)) if !self.emptied.contains_key(&(*n as u64)) => None,
                Some(toml::Value::Integer(n)) => Some(format!("Raft node {n}")),
                _ => Some("\"all\" (or a role) while an emptied node is down".to_string()),
            };
            if let Some(which) = which {
                return Err(ctx.err(
                    Self::node_span(&e),
                    &field("node"),
                    format!(
                        "restart of {which}: a Raft node killed on the memory engine lost its \
                         log and vote, and may come back only as a new member (remove it with \
                         remove_replica and add a spare)"
                    ),
                ));
            }
        }
        let fault = self.fault(&e)?;
        if let (Some(n), Fault::Kill { .. }) = (replaced_later, &fault) {
            self.emptied.insert(n, Some((i, Self::node_span(&e))));
        }
        if let Fault::RemoveReplica {
            node: Target::Node(n),
        } = &fault
        {
            if let Some(kill) = self.emptied.get_mut(n) {
                *kill = None;
            }
        }
        self.entries.push(ScheduledFault { at_ms: at, fault });
        Ok(())
    }

    /// The entry gives exactly the fields its kind takes.
    fn fields(&self, e: &Entry<'_>) -> Result<()> {
        let allowed = e.kind.fields();
        for (name, span) in e.raw.given() {
            match span {
                Some(s) if !allowed.contains(&name) => {
                    return Err(self.ctx.err(
                        s,
                        &e.field(name),
                        format!(
                            "fault {:?} takes no {name:?} (it takes: {})",
                            e.kind.name(),
                            allowed.join(", ")
                        ),
                    ))
                }
                None if allowed.contains(&name) && !e.kind.optional_fields().contains(&name) => {
                    return Err(self.ctx.err(
                        e.span.clone(),
                        &e.field(name),
                        format!("fault {:?} needs {name:?}", e.kind.name()),
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// An armed cut's trigger: a count from 1 to [`CutAfter::MAX_COUNT`]; votes, appends and
    /// chunks only on Raft.
    fn cut_after(&self, e: &Entry<'_>) -> Result<Option<CutAfter>> {
        let Some(after) = e.raw.after.as_ref() else {
            return Ok(None);
        };
        let a = *after.get_ref();
        let refuse = |m: String| Err(self.ctx.err(after.span(), &e.field("after"), m));
        if !(1..=CutAfter::MAX_COUNT).contains(&a.count()) {
            return refuse(format!(
                "an armed cut waits for 1 to {} events, not {}",
                CutAfter::MAX_COUNT,
                a.count()
            ));
        }
        if !matches!(a, CutAfter::Syncs(_)) && self.cluster.mode != crate::shard::ShardKind::Raft {
            return refuse(format!(
                "votes, appends, chunks, purges and install operations are Raft's; this cluster runs {}",
                self.cluster.mode.name()
            ));
        }
        if matches!(a, CutAfter::Syncs(_) | CutAfter::InstallOps(_))
            && self.cluster.engine != EngineKind::Redb
        {
            return refuse(format!(
                "syncs and install disk operations are counted on simulated disks (engine \"redb\"); this cluster runs {}",
                self.cluster.engine
            ));
        }
        Ok(Some(a))
    }

    fn target(
        &self,
        e: &Entry<'_>,
        v: &Option<Spanned<toml::Value>>,
        name: &str,
    ) -> Result<Target> {
        let v = v.as_ref().expect("fields() checked it is given");
        parse_target(v.get_ref(), self.total())
            .map_err(|m| self.ctx.err(v.span(), &e.field(name), m))
    }

    fn node_span(e: &Entry<'_>) -> Range<usize> {
        e.raw
            .node
            .as_ref()
            .expect("fields() checked it is given")
            .span()
    }

    fn fault(&mut self, e: &Entry<'_>) -> Result<Fault> {
        let ctx = self.ctx;
        let raw = e.raw;
        let refuse = |span: Range<usize>, field: &str, message: String| {
            Err(ctx.err(span, &e.field(field), message))
        };
        Ok(match e.kind {
            FaultKind::Partition => {
                let groups = self.groups(e)?;
                self.net_faulted = true;
                Fault::Partition { groups }
            }
            FaultKind::Isolate => {
                let after = self.cut_after(e)?;
                if let Some(a @ (CutAfter::Syncs(_) | CutAfter::InstallOps(_))) = after {
                    return refuse(
                        raw.after.as_ref().map_or(e.span.clone(), |a| a.span()),
                        "after",
                        format!("an isolation waits for Raft events (votes, appends, chunks, purges), not {a:?}"),
                    );
                }
                self.net_faulted = true;
                Fault::Isolate {
                    node: self.target(e, &raw.node, "node")?,
                    after,
                }
            }
            FaultKind::Clog => {
                self.net_faulted = true;
                Fault::Clog {
                    node: self.target(e, &raw.node, "node")?,
                }
            }
            FaultKind::OneWay => {
                let (from, to) = (
                    self.target(e, &raw.from, "from")?,
                    self.target(e, &raw.to, "to")?,
                );
                if from == to && matches!(from, Target::Node(_)) {
                    return refuse(
                        e.span.clone(),
                        "to",
                        format!("from and to are both node {from}"),
                    );
                }
                self.net_faulted = true;
                Fault::OneWay { from, to }
            }
            FaultKind::Heal => {
                if !self.net_faulted {
                    return refuse(
                        raw.fault.span(),
                        "fault",
                        "heal with no partition, isolation, one-way cut or clog before it".into(),
                    );
                }
                self.net_faulted = false;
                Fault::Heal
            }
            FaultKind::Kill | FaultKind::PowerLoss => {
                let node = self.target(e, &raw.node, "node")?;
                if node == Target::All {
                    return refuse(
                        Self::node_span(e),
                        "node",
                        format!("{} takes one node, not \"all\"", e.kind),
                    );
                }
                // An armed crash may never happen (a restart first disarms it): it does not
                // count as taking the node down, only as making a restart possible.
                if let (Target::Node(n), None) = (node, e.raw.after.as_ref()) {
                    if !self.down.insert(n) {
                        return refuse(
                            Self::node_span(e),
                            "node",
                            format!("node {n} is already down"),
                        );
                    }
                }
                self.any_down = true;
                match raw.mode.as_ref() {
                    Some(mode) if e.kind == FaultKind::PowerLoss => Fault::PowerLoss {
                        node,
                        mode: *mode.get_ref(),
                        after: self.cut_after(e)?,
                    },
                    _ => Fault::Kill {
                        node,
                        after: self.cut_after(e)?,
                    },
                }
            }
            FaultKind::Restart => {
                let node = self.target(e, &raw.node, "node")?;
                match node {
                    Target::Node(n) if !self.down.remove(&n) && !self.any_down => {
                        return refuse(
                            Self::node_span(e),
                            "node",
                            format!("restart of node {n}, which no kill or power_loss stopped"),
                        )
                    }
                    Target::Node(_) => {}
                    _ if !self.any_down => {
                        return refuse(
                            Self::node_span(e),
                            "node",
                            "restart with no kill or power_loss before it".into(),
                        )
                    }
                    Target::All => self.down.clear(),
                    _ => {}
                }
                Fault::Restart { node }
            }
            FaultKind::Pause => {
                let node = self.target(e, &raw.node, "node")?;
                if let Target::Node(n) = node {
                    self.paused.insert(n);
                }
                self.any_paused = true;
                Fault::Pause { node }
            }
            FaultKind::Resume => {
                let node = self.target(e, &raw.node, "node")?;
                match node {
                    Target::Node(n) if !self.paused.remove(&n) && !self.any_paused => {
                        return refuse(
                            Self::node_span(e),
                            "node",
                            format!("resume of node {n}, which no pause froze"),
                        )
                    }
                    _ if !self.any_paused => {
                        return refuse(
                            Self::node_span(e),
                            "node",
                            "resume with no pause before it".into(),
                        )
                    }
                    _ => {}
                }
                Fault::Resume { node }
            }
            FaultKind::ClockSkew => Fault::ClockSkew {
                node: self.target(e, &raw.node, "node")?,
                offset_ms: raw.offset_ms.as_ref().map_or(0, |s| *s.get_ref()),
                drift_ppm: raw.drift_ppm.as_ref().map_or(0, |s| *s.get_ref()),
            },
            FaultKind::DiskFaults => {
                let d = raw.disk.as_ref().expect("fields() checked it is given");
                if let Err(m) = d.get_ref().validate() {
                    return refuse(d.span(), "disk", m);
                }
                Fault::DiskFaults {
                    node: self.target(e, &raw.node, "node")?,
                    disk: d.get_ref().clone(),
                }
            }
            FaultKind::Snapshot => Fault::Snapshot {
                node: self.target(e, &raw.node, "node")?,
            },
            FaultKind::AddReplica => match self.target(e, &raw.node, "node")? {
                Target::Node(n) => {
                    if !self.members.insert(n) {
                        return refuse(
                            Self::node_span(e),
                            "node",
                            format!("node {n} is already a replica"),
                        );
                    }
                    Fault::AddReplica {
                        node: Target::Node(n),
                    }
                }
                _ => {
                    return refuse(
                        Self::node_span(e),
                        "node",
                        "add_replica takes a node id".into(),
                    )
                }
            },
            FaultKind::RemoveReplica => {
                let node = self.target(e, &raw.node, "node")?;
                if node == Target::All {
                    return refuse(
                        Self::node_span(e),
                        "node",
                        "remove_replica takes one node".into(),
                    );
                }
                if let Target::Node(n) = node {
                    if !self.members.remove(&n) {
                        return refuse(
                            Self::node_span(e),
                            "node",
                            format!("node {n} is not a replica"),
                        );
                    }
                }
                if self.members.len() <= 1 {
                    return refuse(
                        Self::node_span(e),
                        "node",
                        "would leave no replica to remove to".into(),
                    );
                }
                Fault::RemoveReplica { node }
            }
        })
    }

    /// A partition's groups: node ids in range, each in one group, at least two sides.
    fn groups(&self, e: &Entry<'_>) -> Result<Vec<Vec<u64>>> {
        let g = e.raw.groups.as_ref().expect("fields() checked it is given");
        let total = self.total();
        let mut seen = BTreeSet::new();
        for group in g.get_ref() {
            for &n in group {
                if n == 0 || n > total {
                    return Err(self.ctx.err(
                        g.span(),
                        &e.field("groups"),
                        format!("node {n} is out of range 1..={total}"),
                    ));
                }
                if !seen.insert(n) {
                    return Err(self.ctx.err(
                        g.span(),
                        &e.field("groups"),
                        format!("node {n} is in two groups"),
                    ));
                }
            }
        }
        if g.get_ref().iter().filter(|g| !g.is_empty()).count()
            + usize::from(seen.len() < total as usize)
            < 2
        {
            return Err(self.ctx.err(
                g.span(),
                &e.field("groups"),
                "a partition needs at least two non-empty groups".into(),
            ));
        }
        Ok(g.get_ref().clone())
    }
}

fn parse_target(v: &toml::Value, total: u64) -> std::result::Result<Target, String> {
    match v {
        toml::Value::Integer(n) if *n >= 1 && (*n as u64) <= total => Ok(Target::Node(*n as u64)),
        toml::Value::Integer(n) => Err(format!("node {n} is out of range 1..={total}")),
        toml::Value::String(s) => Target::named(s).ok_or_else(|| {
            format!(
                "{s:?} is not a node (expected an id, \"leader\", \"follower\", \"random\" or \"all\")"
            )
        }),
        other => Err(format!("{other} is not a node id or a name")),
    }
}
