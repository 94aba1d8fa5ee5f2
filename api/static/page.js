// The public transparency page: reads only the public API of this same server, no third-party
// assets. Suppressed cells (too few records) are shown as withheld, never as zero.
"use strict";

const pct = (x) => (x === null || x === undefined ? "—" : (100 * x).toFixed(1) + "%");
const iso = (d) => d.toISOString().slice(0, 10);

async function get(path) {
  // A request that hangs is given up, and said so, rather than left as "…" for ever.
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), 20000);
  try {
    const r = await fetch(path, { headers: { Accept: "application/json" }, signal: abort.signal });
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    return await r.json();
  } catch (err) {
    throw new Error(err.name === "AbortError" ? path + ": no answer in 20 s" : err.message);
  } finally {
    clearTimeout(timer);
  }
}

function text(id, value) { document.getElementById(id).textContent = value; }

function bars(el, cells, label, share, cls) {
  el.replaceChildren();
  for (const c of cells) {
    const row = document.createElement("div");
    row.className = "row";
    const name = document.createElement("span");
    name.textContent = label(c);
    const track = document.createElement("div");
    track.className = "track";
    const value = document.createElement("span");
    if (c.suppressed) {
      value.textContent = "withheld";
      value.className = "withheld";
    } else {
      const fill = document.createElement("div");
      fill.className = "fill" + (cls ? " " + cls(c) : "");
      fill.style.width = (100 * Math.max(0, Math.min(1, share(c)))).toFixed(1) + "%";
      track.appendChild(fill);
      value.textContent = pct(share(c));
    }
    row.append(name, track, value);
    el.appendChild(row);
  }
  if (!cells.length) el.textContent = "No usage in this period.";
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  return n;
}

// Months are drawn as points joined only to their neighbours: a withheld month (null) breaks
// the line and is marked on the axis, never bridged (found in review: a line from August to
// October implied a September), and a single published month is a dot, not an empty path.
// The chart is drawn at the element's own width so its labels keep their size on a phone.
function trend(el, table, points, targets) {
  const W = Math.max(240, Math.min(960, Math.round(el.clientWidth || 720)));
  const H = 260, L = 40, R = 12, T = 12, B = 28;
  const all = points.map((p) => p.t).concat(targets.map((p) => p.t));
  el.replaceChildren();
  table.replaceChildren();
  if (!points.length) { el.textContent = "No usage yet."; return; }
  const t0 = Math.min(...all), t1 = Math.max(...all) || t0 + 1;
  const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - v) * (H - T - B);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H });
  for (const v of [0, 0.25, 0.5, 0.75, 1]) {
    root.appendChild(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    const lab = svg("text", { x: 4, y: y(v) + 4 });
    lab.textContent = Math.round(v * 100) + "%";
    root.appendChild(lab);
  }
  root.appendChild(svg("line", { x1: L, x2: W - R, y1: y(0), y2: y(0), class: "axis" }));
  for (const t of [t0, t1]) {
    const lab = svg("text", { x: Math.min(x(t), W - 70), y: H - 8 });
    lab.textContent = iso(new Date(t)).slice(0, 7);
    root.appendChild(lab);
  }
  const path = (pts) => pts.map((p, i) => (i ? "L" : "M") + x(p.t).toFixed(1) + " " + y(p.v).toFixed(1)).join(" ");
  if (targets.length) root.appendChild(svg("path", { d: path(targets), class: "target" }));
  let run = [];
  const runs = [];
  for (const p of points) {
    if (p.v === null) { if (run.length) runs.push(run); run = []; } else run.push(p);
  }
  if (run.length) runs.push(run);
  for (const r of runs) if (r.length > 1) root.appendChild(svg("path", { d: path(r), class: "line" }));
  for (const p of points) {
    const said = p.withheld ? "withheld" : p.v === null ? "no usage" : pct(p.v);
    if (p.v !== null || p.withheld) {
      const mark = p.withheld
        ? svg("rect", { x: x(p.t) - 4, y: y(0) - 4, width: 8, height: 8, class: "withheld-mark" })
        : svg("circle", { cx: x(p.t), cy: y(p.v), r: 3.5, class: "point" });
      const tip = svg("title", {});
      tip.textContent = iso(new Date(p.t)).slice(0, 7) + ": " + said;
      mark.appendChild(tip);
      root.appendChild(mark);
    }
    const row = document.createElement("tr");
    const month = document.createElement("th");
    month.scope = "row";
    month.textContent = iso(new Date(p.t)).slice(0, 7);
    const value = document.createElement("td");
    value.textContent = said;
    row.append(month, value);
    table.appendChild(row);
  }
  el.appendChild(root);
}

// Every month from the first bucket to the last: the series answers only months with usage,
// and a month it leaves out must break the line as a withheld one does (found in review: a
// line from August to October bridged a September with no usage).
function months(buckets) {
  const byMonth = new Map(buckets.map((b) => [iso(new Date(b.key)).slice(0, 7), b]));
  const out = [];
  if (!buckets.length) return out;
  const first = new Date(buckets[0].key), last = new Date(buckets[buckets.length - 1].key);
  for (let y = first.getUTCFullYear(), m = first.getUTCMonth(); ; m++) {
    const t = Date.UTC(y, m, 1);
    if (t > last.getTime()) break;
    const b = byMonth.get(iso(new Date(t)).slice(0, 7));
    out.push(b === undefined
      ? { t, v: null, withheld: false }
      : { t, v: b.suppressed ? null : b.domestic_share, withheld: !!b.suppressed });
  }
  return out;
}

function failed(el, err) {
  el.replaceChildren();
  el.textContent = "Unavailable: " + err.message;
  el.classList.add("failed");
}

function stamp(value) {
  return value ? new Date(value).toISOString().replace("T", " ").slice(0, 16) + " UTC" : null;
}

// Each part of the page is filled from its own answers: one route failing leaves the others
// shown and says so where it failed (found in review: one failed call left every figure "…").
async function main() {
  const now = new Date();
  const from = new Date(Date.UTC(now.getUTCFullYear() - 2, now.getUTCMonth(), 1));
  const share = get("/v1/share");
  const series = get(`/v1/timeseries?interval=month&from=${iso(from)}`);
  const sectors = get("/v1/breakdown/sector");
  const tiers = get("/v1/breakdown/tier");
  const fresh = get("/v1/freshness");
  const reg = get("/v1/registry");
  const parts = [
    share.then((s) => {
      // Withheld is one answer for all three figures, not a dash that reads as "no data".
      const shown = (v) => (s.suppressed ? "withheld" : pct(v));
      text("domestic", shown(s.domestic_share));
      text("sovereign", shown(s.sovereign_share));
      text("unknown", shown(s.unknown_share));
    }, (err) => {
      for (const id of ["domestic", "sovereign", "unknown"]) text(id, "—");
      failed(document.getElementById("headline-status"), err);
      throw err;
    }),
    reg.then((r) => {
      const registry = r.registry;
      text("country", `${registry.country_name}${registry.illustrative ? " (illustrative data)" : ""}.`);
    }),
    series.then(async (sr) => {
      // The target trajectory comes from the registry: the trend is drawn without it if that
      // answer failed (said under the chart), never withheld for it.
      let goals = [];
      try {
        const registry = (await reg).registry;
        goals = ((registry.targets || {}).domestic_share || []).map((p) => ({ t: Date.parse(p.by), v: p.domestic_share }));
      } catch (err) {
        text("target-hint", " · national target not shown: " + err.message);
      }
      if (goals.length) text("target-hint", " · dashed: national target trajectory");
      const points = months(sr.buckets);
      const hints = [];
      if (points.some((p) => p.withheld)) hints.push("squares: withheld months");
      if (points.some((p) => p.v === null && !p.withheld)) hints.push("gaps: months with no usage");
      if (hints.length) text("withheld-hint", " · " + hints.join(", "));
      trend(document.getElementById("trend"), document.getElementById("trend-rows"), points, goals);
    }, (err) => { failed(document.getElementById("trend"), err); throw err; }),
    sectors.then((sc) => {
      bars(document.getElementById("by-sector"), sc.cells, (c) => c.key.replace(/_/g, " "), (c) => c.domestic_share);
    }, (err) => { failed(document.getElementById("by-sector"), err); throw err; }),
    tiers.then((tr) => {
      const total = tr.cells.reduce((s, c) => s + (c.total || 0), 0) || 1;
      bars(document.getElementById("by-tier"), tr.cells, (c) => c.key, (c) => (c.total || 0) / total, (c) => "tier-" + c.key);
    }, (err) => { failed(document.getElementById("by-tier"), err); throw err; }),
    fresh.then((f) => {
      text("freshness", `Data freshness: newest usage ${stamp(f.latest_hour) || "no data yet"}, last landed ${stamp(f.latest_ingested_at) || "—"}.`);
    }, (err) => { text("freshness", "Data freshness unavailable: " + err.message); throw err; }),
  ];
  const settled = await Promise.allSettled(parts);
  document.body.dataset.ready = settled.every((p) => p.status === "fulfilled") ? "1" : "partial";
}

main();
