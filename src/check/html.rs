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

use super::history::{History, Outcome, Time};
use super::linearizability::{CheckResult, Verdict};
use super::model::{Model, Touches};

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
        let key = decisive
            .and_then(|p| p.key.clone())
            .or(ops[f].key.clone())?;
        let same: Vec<&OpView> = ops
            .iter()
            .filter(|o| o.key.as_deref().is_none_or(|k| k == key))
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

    let data = Data {
        ops,
        faults,
        keys: keys.into_iter().collect(),
        focus,
    };
    // `</` cannot end the script element from inside a JSON string.
    let json = serde_json::to_string(&data)
        .unwrap_or_else(|_| "{}".into())
        .replace("</", "<\\/");

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
<p class="legend"><span style="background:#7fc97f">placed (#order)</span><span style="background:#e74c3c;color:#fff">cannot be placed</span><span style="background:#bbb">not placed</span><span style="background:#eee">failed or unknown result</span><span style="background:rgba(245,215,110,.5)">fault window</span> dashed: unknown result. Scroll to zoom, drag to pan, hover for the full record.</p>
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
