// The failure report's renderer: lanes of operations on a zoomable time axis, opened on
// what failed. Everything it shows comes from the JSON in #report-data.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const ops = data.ops;
  const LANE_PX = 26;
  const LEFT_PX = 110;
  const CHAR_PX = 7; // 12px monospace
  const MIN_LABEL_PX = 3 * CHAR_PX;

  let end = 1e6;
  for (const o of ops) end = Math.max(end, o.complete === null ? o.invoke : o.complete);
  for (const f of data.faults) end = Math.max(end, f.end === null ? f.start : f.end);
  const state = { from: 0, to: end, key: data.focus ? data.focus.key : "" };
  lanesEnd();

  // Lanes: one per client (its retired ids folded in), with sub-rows where its operations
  // overlap in time (a retired id's operation still open when the next id starts).
  function lanes(visible) {
    const byLane = new Map();
    for (const o of visible) {
      if (!byLane.has(o.lane)) byLane.set(o.lane, []);
      byLane.get(o.lane).push(o);
    }
    const out = [];
    for (const lane of [...byLane.keys()].sort((a, b) => a - b)) {
      const rows = [];
      for (const o of byLane.get(lane).sort((a, b) => a.invoke - b.invoke)) {
        const stop = o.stop;
        let r = rows.findIndex((last) => last <= o.invoke);
        if (r < 0) {
          r = rows.length;
          rows.push(0);
        }
        rows[r] = stop;
        o.row = r;
      }
      out.push({ lane, rows: Math.max(1, rows.length), ops: byLane.get(lane) });
    }
    return out;
  }

  function touches(o, key) {
    return key === "" || o.key === key || o.key === null;
  }

  // History times are nanoseconds.
  function fmt(ns) {
    const ms = ns / 1e6;
    return (Number.isInteger(ms) ? ms : ms.toFixed(3)) + " ms";
  }

  // Where an operation's bar ends: its completion, or for one of unknown result (it may take
  // effect any time after), the next invocation in its lane (the client gave up on it).
  function lanesEnd() {
    const byLane = new Map();
    for (const o of [...ops].sort((a, b) => a.invoke - b.invoke)) {
      const prev = byLane.get(o.lane);
      if (prev && prev.complete === null) prev.stop = Math.max(prev.invoke, o.invoke);
      byLane.set(o.lane, o);
    }
    for (const o of ops) {
      if (o.complete !== null) o.stop = o.complete;
      else if (o.stop === undefined) o.stop = end;
    }
  }

  function esc(s) {
    return String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
  }

  const view = document.getElementById("timeline");
  const tip = document.getElementById("tip");

  function render() {
    const width = Math.max(200, view.clientWidth - LEFT_PX - 8);
    const span = Math.max(1, state.to - state.from);
    const x = (t) => LEFT_PX + ((t - state.from) / span) * width;
    const shown = ops.filter(
      (o) =>
        touches(o, state.key) &&
        o.stop >= state.from &&
        o.invoke <= state.to
    );
    const ls = lanes(shown);
    let y = 24;
    const parts = [];
    // The time axis: about eight ticks.
    const step = Math.pow(10, Math.floor(Math.log10(span / 8)));
    const tick = Math.max(1, [1, 2, 5, 10].map((m) => m * step).find((s) => span / s <= 10));
    for (let t = Math.ceil(state.from / tick) * tick, n = 0; t <= state.to && n < 20; t += tick, n++) {
      parts.push(`<div class="tick" style="left:${x(t)}px"><span class="label tick-label">${esc(fmt(t))}</span></div>`);
    }
    // Node lanes first: each node's roles on one row, the faults that struck it below.
    for (const n of data.nodes) {
      const rows = [];
      const placed = n.faults
        .filter((f) => f.to >= state.from && f.from <= state.to)
        .sort((a, b) => a.from - b.from)
        .map((f) => {
          let r = rows.findIndex((last) => last <= f.from);
          if (r < 0) {
            r = rows.length;
            rows.push(0);
          }
          rows[r] = f.to;
          return [f, r + 1];
        });
      const roles = n.roles.filter((s) => s.to >= state.from && s.from <= state.to).map((s) => [s, 0]);
      const h = (1 + rows.length) * LANE_PX;
      parts.push(`<div class="lane node-lane" style="top:${y}px;height:${h}px"><span class="label lane-label">node ${n.node}</span></div>`);
      for (const [s, r] of roles.concat(placed)) {
        const x0 = Math.max(LEFT_PX, x(s.from));
        const x1 = Math.min(LEFT_PX + width, x(s.to));
        const w = Math.max(2, x1 - x0);
        const label = w >= MIN_LABEL_PX ? `<span class="label">${esc(s.label)}</span>` : "";
        parts.push(
          `<div class="span ${s.class}" data-span="${n.node}:${s.class}:${s.from}:${s.to}:${esc(s.label)}" style="left:${x0}px;top:${y + r * LANE_PX + 3}px;width:${w}px">${label}</div>`
        );
      }
      y += h;
    }
    for (const l of ls) {
      const h = l.rows * LANE_PX;
      parts.push(`<div class="lane" style="top:${y}px;height:${h}px"><span class="label lane-label">client ${l.lane}</span></div>`);
      for (const o of l.ops) {
        const x0 = Math.max(LEFT_PX, x(o.invoke));
        const x1 = Math.min(LEFT_PX + width, x(o.stop));
        const w = Math.max(3, x1 - x0);
        const text = (o.pos === null ? "" : "#" + o.pos + " ") + o.label;
        const label = w >= MIN_LABEL_PX ? `<span class="label">${esc(text)}</span>` : "";
        parts.push(
          `<div class="op ${o.state} ${o.outcome}" data-op="${o.i}" style="left:${x0}px;top:${y + o.row * LANE_PX + 3}px;width:${w}px">${label}</div>`
        );
      }
      y += h;
    }
    for (const f of data.faults) {
      const s = f.start;
      const e = f.end === null ? end : f.end;
      if (e < state.from || s > state.to) continue;
      const x0 = Math.max(LEFT_PX, x(s));
      const x1 = Math.min(LEFT_PX + width, x(e));
      parts.push(
        `<div class="fault" data-fault="${f.i}" style="left:${x0}px;width:${Math.max(2, x1 - x0)}px;height:${y}px"></div>`
      );
    }
    if (data.focus && data.focus.at !== null && data.focus.at >= state.from && data.focus.at <= state.to) {
      parts.push(`<div class="moment" style="left:${x(data.focus.at)}px;height:${y}px" title="the failure: ${esc(fmt(data.focus.at))}"></div>`);
    }
    view.style.height = y + 8 + "px";
    view.innerHTML = parts.join("");
    document.getElementById("window").textContent =
      `${fmt(state.from)} to ${fmt(state.to)}` + (state.key === "" ? ", every key" : `, key ${state.key}`) + `: ${shown.length} operations`;
    document.getElementById("key").value = state.key;
  }

  function zoom(factor, at) {
    const span = state.to - state.from;
    const next = Math.min(end * 1.05, Math.max(1000, span * factor));
    const c = at === undefined ? state.from + span / 2 : at;
    const left = (c - state.from) / span;
    state.from = Math.max(0, c - next * left);
    state.to = state.from + next;
    render();
  }

  function focus() {
    if (!data.focus) {
      state.from = 0;
      state.to = end;
    } else {
      state.key = data.focus.key;
      state.from = data.focus.from;
      state.to = data.focus.to;
    }
    render();
  }

  // The key filter.
  const select = document.getElementById("key");
  select.innerHTML =
    `<option value="">every key</option>` + data.keys.map((k) => `<option value="${esc(k)}">key ${esc(k)}</option>`).join("");
  select.addEventListener("change", () => {
    state.key = select.value;
    render();
  });
  document.getElementById("zoom-in").addEventListener("click", () => zoom(0.5));
  document.getElementById("zoom-out").addEventListener("click", () => zoom(2));
  document.getElementById("show-failure").addEventListener("click", focus);
  document.getElementById("show-all").addEventListener("click", () => {
    state.from = 0;
    state.to = end;
    state.key = "";
    render();
  });
  view.addEventListener(
    "wheel",
    (e) => {
      e.preventDefault();
      const width = Math.max(200, view.clientWidth - LEFT_PX - 8);
      const at = state.from + ((e.offsetX - LEFT_PX) / width) * (state.to - state.from);
      zoom(e.deltaY < 0 ? 0.8 : 1.25, Math.max(0, at));
    },
    { passive: false }
  );
  let drag = null;
  view.addEventListener("mousedown", (e) => {
    drag = { x: e.clientX, from: state.from, to: state.to };
  });
  window.addEventListener("mouseup", () => {
    drag = null;
  });
  window.addEventListener("mousemove", (e) => {
    if (drag) {
      const width = Math.max(200, view.clientWidth - LEFT_PX - 8);
      const dt = ((e.clientX - drag.x) / width) * (drag.to - drag.from);
      state.from = Math.max(0, drag.from - dt);
      state.to = state.from + (drag.to - drag.from);
      render();
      return;
    }
    const el = e.target.closest("[data-op],[data-fault],[data-span]");
    if (!el) {
      tip.style.display = "none";
      return;
    }
    let rows;
    if (el.dataset.op !== undefined) {
      const o = ops[Number(el.dataset.op)];
      rows = [
        ["operation", o.i],
        ["client", o.client],
        ["invoke", fmt(o.invoke)],
        ["complete", o.complete === null ? "never (unknown result: it may take effect any time after its call)" : fmt(o.complete)],
        ["input", o.input],
        ["output", o.output],
        ["outcome", o.outcome],
        ["check", o.state + (o.pos === null ? "" : ` (#${o.pos} in the order found for key ${o.part})`)],
      ];
    } else if (el.dataset.span !== undefined) {
      const [node, cls, from, to, ...label] = el.dataset.span.split(":");
      rows = [
        ["node", node],
        [cls === "fault" ? "fault" : "role", label.join(":")],
        ["from", fmt(Number(from))],
        ["to", fmt(Number(to))],
      ];
    } else {
      const f = data.faults[Number(el.dataset.fault)];
      rows = [
        ["fault", f.kind],
        ["from", fmt(f.start)],
        ["to", f.end === null ? "the end" : fmt(f.end)],
        ["detail", f.detail],
      ];
    }
    tip.innerHTML = rows.map(([k, v]) => `<div><b>${esc(k)}</b> ${esc(v)}</div>`).join("");
    tip.style.display = "block";
    tip.style.left = Math.min(e.pageX + 12, window.innerWidth - 420) + "px";
    tip.style.top = e.pageY + 12 + "px";
  });
  window.addEventListener("resize", render);
  focus();
})();
