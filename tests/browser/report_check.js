// Checks a report page from inside the browser and writes what it found, as JSON, into
// <pre id="report-check">: whether an operation marked failed is in view, how many
// operations are, whether the failure's moment is, which visible labels overlap, and the
// page's script errors. Loaded into a copy of the page by
// tests/browser/check-report.sh; it reads the page's DOM only, so it judges any report.
(function () {
  const errors = [];
  window.addEventListener("error", (e) => errors.push(String(e.message)));
  function visible(r) {
    return r.width > 0.5 && r.height > 0.5 && r.right > 0 && r.bottom > 0 && r.left < innerWidth && r.top < innerHeight;
  }
  function run() {
    const failed = [...document.querySelectorAll(".failed")].map((e) => e.getBoundingClientRect());
    const labels = [...document.querySelectorAll(".label, svg text")]
      .filter((e) => getComputedStyle(e).visibility !== "hidden" && getComputedStyle(e).display !== "none")
      .map((e) => ({ text: e.textContent.slice(0, 40), r: e.getBoundingClientRect() }))
      .filter((l) => visible(l.r));
    const overlaps = [];
    for (let i = 0; i < labels.length; i++) {
      for (let j = i + 1; j < labels.length; j++) {
        const a = labels[i].r, b = labels[j].r;
        const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
        const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
        if (w > 1 && h > 1) overlaps.push([labels[i].text, labels[j].text]);
      }
    }
    const ops = [...document.querySelectorAll(".op")].map((e) => e.getBoundingClientRect());
    const moment = [...document.querySelectorAll(".moment")].map((e) => e.getBoundingClientRect());
    const out = {
      failed_ops: failed.length,
      failed_in_view: failed.some(visible),
      ops_in_view: ops.filter(visible).length,
      // A line has no width: in view if it stands inside the window.
      moment_in_view: moment.some((r) => r.left >= 0 && r.left < innerWidth && r.bottom > 0 && r.top < innerHeight),
      labels: labels.length,
      overlaps: overlaps.length,
      first_overlaps: overlaps.slice(0, 5),
      headline: (document.getElementById("headline") || {}).textContent || "",
      errors: errors.concat(window.reportErrors || []),
    };
    const pre = document.createElement("pre");
    pre.id = "report-check";
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }
  if (document.readyState === "complete") setTimeout(run, 100);
  else window.addEventListener("load", () => setTimeout(run, 100));
})();
