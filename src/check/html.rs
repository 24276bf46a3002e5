//! The failure report: one self-contained HTML file (inline data, script and style; nothing
//! fetched) that opens on what failed. It states the failing checks in sentences at the top;
//! for a linearizability failure it zooms to the part (key) that failed around the operation
//! that cannot be placed, with the order found before it and the values that disagree. Below,
//! one lane per client (a client's retired ids folded into its lane) on a time axis that
//! zooms and pans, fault windows as bands across the lanes, a key filter, and each
//! operation's full record on hover. Labels are clipped to their bar and hidden on bars too
//! narrow for them, so no two overlap at any zoom.

use std::collections::BTreeSet;

use serde::Serialize;

use super::history::{FaultEvent, History, Outcome, Time};
use super::linearizability::{CheckResult, Verdict};
use super::model::{Model, Touches};
use crate::probe::{RaftEvent, Recorded};

const SCRIPT: &str = include_str!("html/report.js");
const STYLE: &str = include_str!("html/report.css");

/// Operations of the failed key shown on each side of the one that cannot be placed.
const FOCUS_OPS: usize = 8;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// What a report says beyond the history and its check.
pub struct Report<'a> {
    /// The page's title.
    pub title: &'a str,
    /// The run's failures, one sentence each (empty: it passed, or only the history is known).
    pub failures: &'a [String],
    /// The lane of a client id: a client's retired ids share one lane.
    pub lane_of: &'a dyn Fn(u64) -> u64,
    /// Where to open when no operation failed to be placed: a key, and a time around which
    /// to zoom (a convergence failure's key and its write).
    pub focus: Option<(String, Option<Time>)>,
    /// What the nodes' Raft storage recorded (empty when not Raft): their roles over time.
    pub raft: &'a [Recorded],
}

/// A stretch of time in a node's lane: a role it held, or a fault that struck it.
#[derive(Serialize)]
struct Span {
    from: Time,
    to: Time,
    /// `leader`, `candidate`, `follower` or `fault`.
    class: &'static str,
    label: String,
}

#[derive(Serialize)]
struct NodeLane {
    node: u64,
    roles: Vec<Span>,
    faults: Vec<Span>,
}

/// The fault kinds that stop a node.
const CRASHES: [&str; 3] = ["crash", "kill", "power_loss"];

/// Each node's roles over time, from the votes its Raft storage saved (a vote for itself a
/// quorum granted: leader; one not granted: candidate; for another: follower) and its
/// restarts, with no role between the crash that stopped it (or else its last record) and
/// its restart; and
/// the faults that struck it by name.
fn node_lanes(raft: &[Recorded], faults: &[FaultEvent], end: Time) -> Vec<NodeLane> {
    use std::collections::BTreeMap;
    /// A role a node holds from a time on: its class, its term, since when.
    type Role = (&'static str, u64, Time);
    fn lane(lanes: &mut BTreeMap<u64, NodeLane>, node: u64) -> &mut NodeLane {
        lanes.entry(node).or_insert_with(|| NodeLane {
            node,
            roles: Vec::new(),
            faults: Vec::new(),
        })
    }
    fn close(lanes: &mut BTreeMap<u64, NodeLane>, node: u64, at: Time, role: Option<Role>) {
        if let Some((class, term, since)) = role {
            lane(lanes, node).roles.push(Span {
                from: since,
                to: at.max(since),
                class,
                label: format!("{class} t{term}"),
            });
        }
    }
    let ns = |us: u64| us.saturating_mul(1_000);
    let mut lanes: BTreeMap<u64, NodeLane> = BTreeMap::new();
    let mut open: BTreeMap<u64, Role> = BTreeMap::new();
    // Each node's last record: a node that restarts was down from about then.
    let mut last: BTreeMap<u64, Time> = BTreeMap::new();
    for r in raft {
        let at = ns(r.at_us);
        lane(&mut lanes, r.node);
        match &r.event {
            RaftEvent::LogRecovered { vote, .. } => {
                let was = open.remove(&r.node);
                // Down since the crash that struck it last, or else since its last record.
                let since = was.map_or(0, |(_, _, since)| since);
                let crashed = faults
                    .iter()
                    .filter(|f| f.node == Some(r.node) && CRASHES.contains(&f.kind.as_str()))
                    .map(|f| f.time)
                    .filter(|&t| t >= since && t <= at)
                    .max();
                let died = crashed.or(last.get(&r.node).copied()).unwrap_or(at);
                close(&mut lanes, r.node, died, was);
                let term = vote.as_ref().map_or(0, |v| v.term);
                open.insert(r.node, ("follower", term, at));
            }
            RaftEvent::VoteSaved(v) => {
                let class = match (v.voted_for == Some(r.node), v.committed) {
                    (true, true) => "leader",
                    (true, false) => "candidate",
                    (false, _) => "follower",
                };
                let now = open.get(&r.node).copied();
                if now.is_none_or(|(c, t, _)| c != class || t != v.term) {
                    close(&mut lanes, r.node, at, now);
                    open.insert(r.node, (class, v.term, at));
                }
            }
            _ => {}
        }
        last.insert(r.node, at);
    }
    for (node, role) in std::mem::take(&mut open) {
        close(&mut lanes, node, end, Some(role));
    }
    for f in faults {
        if let Some(node) = f.node {
            lane(&mut lanes, node).faults.push(Span {
                from: f.time,
                to: f.end.unwrap_or(end).max(f.time),
                class: "fault",
                label: f.kind.clone(),
            });
        }
    }
    lanes.into_values().collect()
}

#[derive(Serialize)]
struct OpView {
    i: usize,
    lane: u64,
    client: u64,
    invoke: Time,
    complete: Option<Time>,
    label: String,
    input: String,
    output: String,
    outcome: &'static str,
    state: &'static str,
    /// Place in the order found for its part.
    pos: Option<usize>,
    /// The part it was placed in.
    part: Option<String>,
    /// Its one key (`None`: a range or everything).
    key: Option<String>,
}

#[derive(Serialize)]
struct FaultView {
    i: usize,
    kind: String,
    detail: String,
    start: Time,
    end: Option<Time>,
}

#[derive(Serialize)]
struct Focus {
    key: String,
    from: Time,
    to: Time,
    /// The moment the failure names, marked with a line.
    at: Option<Time>,
}

#[derive(Serialize)]
struct Data {
    nodes: Vec<NodeLane>,
    ops: Vec<OpView>,
    faults: Vec<FaultView>,
    keys: Vec<String>,
    focus: Option<Focus>,
}

/// Renders the visualization of `history` and, if given, its check result, with one lane
/// per client id and no failure sentences (see [`render_report`]).
pub fn render<M: Model>(
    title: &str,
    model: &M,
    history: &History<M::Input, M::Output>,
    result: Option<&CheckResult>,
) -> String {
    let report = Report {
        title,
        failures: &[],
        lane_of: &|c| c,
        focus: None,
        raft: &[],
    };
    render_report(&report, model, history, result)
}

/// Renders the failure report of a history and, if given, its linearizability result.
pub fn render_report<M: Model>(
    report: &Report<'_>,
    model: &M,
    history: &History<M::Input, M::Output>,
    result: Option<&CheckResult>,
) -> String {
    // Where each operation was placed, and the one that could not be.
    let mut placed: Vec<Option<(usize, Option<String>)>> = vec![None; history.ops.len()];
    let mut decisive = None;
    if let Some(r) = result {
        for part in &r.parts {
            for (pos, &op) in part.linearization.iter().enumerate() {
                if let Some(slot) = placed.get_mut(op) {
                    *slot = Some((pos + 1, part.key.clone()));
                }
            }
            if part.verdict == Verdict::Illegal && decisive.is_none() {
                decisive = Some(part);
            }
        }
    }
    let failed = decisive.and_then(|p| p.failed_op);
    let mut keys = BTreeSet::new();
    let ops: Vec<OpView> = history
        .ops
        .iter()
        .enumerate()
        .map(|(i, op)| {
            let key = match model.touches(&op.input) {
                Touches::Key(k) => Some(k),
                _ => None,
            };
            if let Some(k) = &key {
                keys.insert(k.clone());
            }
            let (pos, part) = placed[i].clone().unzip();
            let state = if failed == Some(i) {
                "failed"
            } else if pos.is_some() {
                "linearized"
            } else if op.outcome == Outcome::Ok {
                "unplaced"
            } else {
                "dropped"
            };
            OpView {
                i,
                lane: (report.lane_of)(op.client),
                client: op.client,
                invoke: op.invoke,
                complete: op.complete,
                label: model.describe(&op.input, op.output.as_ref()),
                input: format!("{:?}", op.input),
                output: op
                    .output
                    .as_ref()
                    .map_or_else(|| "none".to_string(), |o| format!("{o:?}")),
                outcome: match op.outcome {
                    Outcome::Ok => "ok",
                    Outcome::Fail => "fail",
                    Outcome::Info => "info",
                },
                state,
                pos,
                part: part.flatten(),
                key,
            }
        })
        .collect();

    // Open on the operation that cannot be placed, among its neighbours on its key.
    let focus = failed.and_then(|f| {
        // A part of several keys (scans and counts tie them) is shown whole.
        let key = decisive
            .and_then(|p| p.key.clone())
            .or(ops[f].key.clone())
            .filter(|k| !k.contains(','))
            .unwrap_or_default();
        let same: Vec<&OpView> = ops
            .iter()
            .filter(|o| key.is_empty() || o.key.as_deref().is_none_or(|k| k == key))
            .collect();
        let at = same.iter().position(|o| o.i == f)?;
        let near = &same[at.saturating_sub(FOCUS_OPS)..(at + FOCUS_OPS + 1).min(same.len())];
        let from = near.iter().map(|o| o.invoke).min()?;
        let to = near
            .iter()
            .map(|o| o.complete.unwrap_or(o.invoke))
            .max()?
            .max(ops[f].complete.unwrap_or(ops[f].invoke));
        let pad = (to - from) / 20 + 1;
        Some(Focus {
            key,
            from: from.saturating_sub(pad),
            to: to + pad,
            at: None,
        })
    });

    let run_end = history
        .ops
        .iter()
        .map(|o| o.complete.unwrap_or(o.invoke))
        .max()
        .unwrap_or(0);
    let focus = focus.or_else(|| {
        let (key, at) = report.focus.clone()?;
        let at = at.filter(|&t| t <= run_end);
        let (from, to) = match at {
            // A second either side, or a tenth of the run if that is shorter.
            Some(t) => {
                let half = (run_end / 10).clamp(1, 1_000_000_000);
                (t.saturating_sub(half), t + half)
            }
            None => (0, run_end),
        };
        Some(Focus { key, from, to, at })
    });
    let faults = history
        .faults
        .iter()
        .enumerate()
        .map(|(i, f)| FaultView {
            i,
            kind: f.kind.clone(),
            detail: f.detail.clone(),
            start: f.time,
            end: f.end,
        })
        .collect();

    let end = run_end.max(
        history
            .faults
            .iter()
            .filter_map(|f| f.end)
            .max()
            .unwrap_or(0),
    );
    let data = Data {
        nodes: node_lanes(report.raft, &history.faults, end),
        ops,
        faults,
        keys: keys.into_iter().collect(),
        focus,
    };
    // No `<` inside the script element: a `</script>` or `<!--` in a key, value or fault
    // detail cannot end it or change how it is parsed.
    let json = serde_json::to_string(&data)
        .unwrap_or_else(|_| "{}".into())
        .replace('<', "\\u003c");

    let verdict = result.map_or("not checked".to_string(), |r| r.verdict.to_string());
    let mut headline = String::new();
    for (n, f) in report.failures.iter().enumerate() {
        let class = if n == 0 { " class=\"first\"" } else { "" };
        headline.push_str(&format!("<p{class}>{}</p>", esc(f)));
    }
    if let (Some(part), Some(f)) = (decisive, failed) {
        let op = &history.ops[f];
        let describe = |i: usize| {
            let o = &history.ops[i];
            esc(&model.describe(&o.input, o.output.as_ref()))
        };
        let order = &part.linearization;
        let before: Vec<String> = order[order.len().saturating_sub(3)..]
            .iter()
            .map(|&i| {
                format!(
                    "<li>#{} {}</li>",
                    order.iter().position(|&x| x == i).unwrap_or(0) + 1,
                    describe(i)
                )
            })
            .collect();
        headline.push_str(&format!(
            "<p{}>Key {}: the longest order found places {} of its operations; then operation {} (client {}, {:.3} ms to {}) cannot be placed: <b>{}</b>. The last ones placed before it:</p><ol class=\"context\">{}</ol>",
            if report.failures.is_empty() { " class=\"first\"" } else { "" },
            esc(part.key.as_deref().unwrap_or("(whole history)")),
            order.len(),
            f,
            op.client,
            op.invoke as f64 / 1e6,
            op.complete.map_or("never".into(), |c| format!("{:.3} ms", c as f64 / 1e6)),
            describe(f),
            before.join("")
        ));
    }
    let passed = report.failures.is_empty() && decisive.is_none();
    if passed {
        headline.push_str(&format!(
            "<p class=\"first\">No check failed (linearizability: {}).</p>",
            esc(&verdict)
        ));
    }
    format!(
        r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{t}</title>
<script>window.reportErrors = []; window.addEventListener("error", function (e) {{ window.reportErrors.push(String(e.message)); }});</script>
<style>{STYLE}</style>
</head><body>
<h1>{t}</h1>
<div class="headline{pass}" id="headline">{headline}</div>
<p>Model <b>{m}</b>, verdict <b id="verdict">{verdict}</b>, {n} operations, {nf} fault events.</p>
<div class="controls"><label>Show <select id="key"></select></label><button id="show-failure">the failure</button><button id="show-all">the whole run</button><button id="zoom-in">zoom in</button><button id="zoom-out">zoom out</button><span id="window"></span></div>
<p class="legend"><span style="background:#7fc97f">placed (#order)</span><span style="background:#e74c3c;color:#fff">cannot be placed</span><span style="background:#bbb">not placed</span><span style="background:#eee">failed or unknown result</span><span style="background:rgba(245,215,110,.5)">fault window</span><span style="background:#2e86de;color:#fff">leader</span><span style="background:#f39c12">candidate</span><span style="background:#d6eaf8">follower</span><span style="background:#f5b7b1">fault on a node</span> dashed: unknown result. Scroll to zoom, drag to pan, hover for the full record.</p>
<div id="timeline"></div>
<div id="tip"></div>
<script type="application/json" id="report-data">{json}</script>
<script>{SCRIPT}</script>
</body></html>
"#,
        t = esc(report.title),
        pass = if passed { " pass" } else { "" },
        m = model.name(),
        n = history.ops.len(),
        nf = history.faults.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::VoteRec;

    fn at(at_ms: u64, node: u64, event: RaftEvent) -> Recorded {
        Recorded {
            at_us: at_ms * 1_000,
            node,
            incarnation: 0,
            event,
        }
    }

    fn vote(term: u64, voted_for: u64, committed: bool) -> RaftEvent {
        RaftEvent::VoteSaved(VoteRec {
            term,
            voted_for: Some(voted_for),
            committed,
        })
    }

    fn recovered() -> RaftEvent {
        RaftEvent::LogRecovered {
            vote: None,
            purged: None,
            entries: Vec::new(),
        }
    }

    #[test]
    fn node_lanes_follow_votes_and_show_a_crashed_node_down_until_it_restarts() {
        let ms = |m: u64| m * 1_000_000;
        let raft = [
            at(0, 1, recovered()),
            at(0, 2, recovered()),
            at(100, 1, vote(1, 1, false)),
            at(150, 2, vote(1, 1, false)),
            at(200, 1, vote(1, 1, true)),
            at(
                900,
                1,
                RaftEvent::Committed(crate::probe::LogPos { term: 1, index: 3 }),
            ),
            at(2_000, 1, recovered()),
            at(2_500, 2, vote(2, 2, true)),
        ];
        let crash = FaultEvent {
            time: ms(1_000),
            end: Some(ms(2_000)),
            kind: "crash".into(),
            detail: "node 1".into(),
            node: Some(1),
        };
        let lanes = node_lanes(&raft, std::slice::from_ref(&crash), ms(3_000));
        let spans = |n: usize| -> Vec<(u64, u64, String)> {
            lanes[n]
                .roles
                .iter()
                .map(|s| (s.from / 1_000_000, s.to / 1_000_000, s.label.clone()))
                .collect()
        };
        // Node 1: follower, candidate, leader until the crash (not its last record at
        // 900 ms), nothing while down, a follower again from its restart.
        assert_eq!(
            spans(0),
            vec![
                (0, 100, "follower t0".to_string()),
                (100, 200, "candidate t1".to_string()),
                (200, 1_000, "leader t1".to_string()),
                (2_000, 3_000, "follower t0".to_string()),
            ]
        );
        assert_eq!(
            spans(1),
            vec![
                (0, 150, "follower t0".to_string()),
                (150, 2_500, "follower t1".to_string()),
                (2_500, 3_000, "leader t2".to_string()),
            ]
        );
        assert_eq!(lanes[0].faults.len(), 1);
        assert!(lanes[1].faults.is_empty());
    }
}
