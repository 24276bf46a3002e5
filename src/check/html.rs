//! A self-contained HTML visualization of a checked history: one row per client, each
//! operation a bar on a shared time axis, numbered by its place in the linearization found,
//! the operation that could not be placed in red, and fault windows shaded behind. It is one
//! file with inline SVG and CSS, viewable offline, with no scripts.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::history::{History, Outcome, Time};
use super::linearizability::{CheckResult, Verdict};
use super::model::Model;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const ROW_PX: usize = 30;
const LEFT_PX: usize = 90;
const TOP_PX: usize = 40;

/// Renders the visualization of `history` and, if given, its check result.
pub fn render<M: Model>(
    title: &str,
    model: &M,
    history: &History<M::Input, M::Output>,
    result: Option<&CheckResult>,
) -> String {
    // Ordinal time axis: every distinct time gets a slot, so long idle gaps do not squeeze
    // the interesting part.
    let mut times: Vec<Time> = Vec::new();
    for op in &history.ops {
        times.push(op.invoke);
        if let Some(c) = op.complete {
            times.push(c);
        }
    }
    for f in &history.faults {
        times.push(f.time);
        if let Some(e) = f.end {
            times.push(e);
        }
    }
    times.sort_unstable();
    times.dedup();
    let step = (16_000 / times.len().max(1)).clamp(4, 24);
    let slot = |t: Time| times.partition_point(|&x| x < t);
    let x_of = |t: Time| LEFT_PX + slot(t) * step;
    let x_end = LEFT_PX + times.len() * step + step;

    let clients: Vec<u64> = {
        let mut c: Vec<u64> = history.ops.iter().map(|o| o.client).collect();
        c.sort_unstable();
        c.dedup();
        c
    };
    let row: BTreeMap<u64, usize> = clients.iter().enumerate().map(|(i, &c)| (c, i)).collect();
    let height = TOP_PX + clients.len() * ROW_PX + 20;

    // Linearization position of each operation, and the stuck one.
    let mut position: BTreeMap<usize, (usize, Option<String>)> = BTreeMap::new();
    let mut failed: Option<usize> = None;
    if let Some(r) = result {
        for part in &r.parts {
            for (pos, &op) in part.linearization.iter().enumerate() {
                position.insert(op, (pos + 1, part.key.clone()));
            }
            if part.verdict == Verdict::Illegal && failed.is_none() {
                failed = part.failed_op;
            }
        }
    }

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{x_end}" height="{height}" font-family="monospace" font-size="11">"#
    );
    for f in &history.faults {
        let x0 = x_of(f.time);
        let x1 = f.end.map_or(x_end, x_of);
        let _ = write!(
            svg,
            r##"<g class="fault"><rect x="{x0}" y="14" width="{}" height="{}" fill="#f5d76e" fill-opacity="0.25"/><text x="{}" y="26" fill="#8a6d00">{}</text><title>{} at {}{}: {}</title></g>"##,
            (x1.saturating_sub(x0)).max(2),
            height - 14,
            x0 + 2,
            esc(&f.kind),
            esc(&f.kind),
            f.time,
            f.end.map_or(String::new(), |e| format!("..{e}")),
            esc(&f.detail)
        );
    }
    for (&client, &r) in &row {
        let y = TOP_PX + r * ROW_PX;
        let _ = write!(
            svg,
            r##"<text x="4" y="{}">client {client}</text><line x1="{LEFT_PX}" y1="{}" x2="{x_end}" y2="{}" stroke="#eee"/>"##,
            y + 15,
            y + ROW_PX - 2,
            y + ROW_PX - 2
        );
    }
    for (i, op) in history.ops.iter().enumerate() {
        let y = TOP_PX + row[&op.client] * ROW_PX + 3;
        let x0 = x_of(op.invoke);
        let x1 = op.complete.map_or(x_end, x_of).max(x0 + 3);
        let label = model.describe(&op.input, op.output.as_ref());
        let (fill, class) = if failed == Some(i) {
            ("#e74c3c", "failed")
        } else if position.contains_key(&i) {
            ("#7fc97f", "linearized")
        } else if op.outcome == Outcome::Ok {
            ("#bbbbbb", "unplaced")
        } else {
            ("#dddddd", "dropped")
        };
        let dash = if op.outcome == Outcome::Info {
            r#" stroke-dasharray="4 2""#
        } else {
            ""
        };
        let pos = position
            .get(&i)
            .map(|(p, k)| match k {
                Some(k) => format!("{}#{p}", esc(k)),
                None => format!("#{p}"),
            })
            .unwrap_or_default();
        let _ = write!(
            svg,
            r##"<g class="op {class}"><rect x="{x0}" y="{y}" width="{}" height="{}" rx="3" fill="{fill}" stroke="#555"{dash}/><text x="{}" y="{}">{} {}</text><title>op {i} client {} [{}..{}] {:?}: {}{}</title></g>"##,
            x1 - x0,
            ROW_PX - 8,
            x0 + 3,
            y + 15,
            pos,
            esc(&label),
            op.client,
            op.invoke,
            op.complete.map_or("?".into(), |c| c.to_string()),
            op.outcome,
            esc(&label),
            if pos.is_empty() {
                String::new()
            } else {
                format!(" (linearized {pos})")
            }
        );
    }
    svg.push_str("</svg>");

    let verdict = result.map_or("not checked".to_string(), |r| r.verdict.to_string());
    let mut summary = String::new();
    if let Some(r) = result {
        for p in &r.parts {
            let _ = write!(
                summary,
                "<li>{}: <b>{}</b>, {} ops, {} steps{}{}</li>",
                esc(p.key.as_deref().unwrap_or("(whole history)")),
                p.verdict,
                p.ops,
                p.steps,
                p.failed_op
                    .map(|f| format!(
                        ", could not place op {f}: {}",
                        esc(&model.describe(&history.ops[f].input, history.ops[f].output.as_ref()))
                    ))
                    .unwrap_or_default(),
                p.reason
                    .as_deref()
                    .map(|r| format!(" ({})", esc(r)))
                    .unwrap_or_default()
            );
        }
    }
    format!(
        r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{t}</title>
<style>body{{font-family:sans-serif;margin:16px}} .scroll{{overflow-x:auto;border:1px solid #ccc}}
.legend span{{display:inline-block;padding:2px 8px;margin-right:6px;border:1px solid #555;border-radius:3px}}</style>
</head><body>
<h1>{t}</h1>
<p>Model <b>{m}</b>, verdict <b id="verdict">{verdict}</b>, {n} operations, {f} fault events.</p>
<p class="legend"><span style="background:#7fc97f">linearized (#order)</span><span style="background:#e74c3c">could not be placed</span><span style="background:#bbbbbb">not placed</span><span style="background:#dddddd">dropped / unknown result</span><span style="background:#f5d76e">fault window</span> dashed: indeterminate (info)</p>
<ul>{summary}</ul>
<div class="scroll">{svg}</div>
</body></html>
"#,
        t = esc(title),
        m = model.name(),
        n = history.ops.len(),
        f = history.faults.len(),
    )
}
