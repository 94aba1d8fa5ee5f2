// The public transparency page: reads only the public API of this same server, no third-party
// assets. Suppressed cells (too few records) are shown as withheld, never as zero.
"use strict";

const pct = (x) => (x === null || x === undefined ? "—" : (100 * x).toFixed(1) + "%");
const iso = (d) => d.toISOString().slice(0, 10);

async function get(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" } });
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
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

function trend(el, points, targets) {
  const W = 720, H = 260, L = 40, R = 12, T = 12, B = 28;
  const all = points.map((p) => p.t).concat(targets.map((p) => p.t));
  el.replaceChildren();
  if (!points.length) { el.textContent = "No usage yet."; return; }
  const t0 = Math.min(...all), t1 = Math.max(...all) || t0 + 1;
  const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - v) * (H - T - B);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}` });
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
  const shown = points.filter((p) => p.v !== null);
  if (targets.length) root.appendChild(svg("path", { d: path(targets), class: "target" }));
  root.appendChild(svg("path", { d: path(shown), class: "line" }));
  el.appendChild(root);
}

async function main() {
  const now = new Date();
  const from = new Date(Date.UTC(now.getUTCFullYear() - 2, now.getUTCMonth(), 1));
  const [share, series, sectors, tiers, fresh, reg] = await Promise.all([
    get("/v1/share"),
    get(`/v1/timeseries?interval=month&from=${iso(from)}`),
    get("/v1/breakdown/sector"),
    get("/v1/breakdown/tier"),
    get("/v1/freshness"),
    get("/v1/registry"),
  ]);
  text("domestic", share.suppressed ? "withheld" : pct(share.domestic_share));
  text("sovereign", pct(share.sovereign_share));
  text("unknown", pct(share.unknown_share));
  const registry = reg.registry;
  text("country", `${registry.country_name}${registry.illustrative ? " (illustrative data)" : ""}.`);
  const points = series.buckets.map((b) => ({ t: Date.parse(b.key), v: b.suppressed ? null : b.domestic_share }));
  const goals = ((registry.targets || {}).domestic_share || []).map((p) => ({ t: Date.parse(p.by), v: p.domestic_share }));
  if (goals.length) text("target-hint", " · dashed: national target trajectory");
  trend(document.getElementById("trend"), points, goals);
  bars(document.getElementById("by-sector"), sectors.cells, (c) => c.key.replace(/_/g, " "), (c) => c.domestic_share);
  const total = tiers.cells.reduce((s, c) => s + (c.total || 0), 0) || 1;
  bars(document.getElementById("by-tier"), tiers.cells, (c) => c.key, (c) => (c.total || 0) / total, (c) => "tier-" + c.key);
  const latest = fresh.latest_hour ? new Date(fresh.latest_hour).toISOString().replace("T", " ").slice(0, 16) + " UTC" : "no data yet";
  const landed = fresh.latest_ingested_at ? new Date(fresh.latest_ingested_at).toISOString().replace("T", " ").slice(0, 16) + " UTC" : "—";
  text("freshness", `Data freshness: newest usage ${latest}, last landed ${landed}.`);
  document.body.dataset.ready = "1";
}

main().catch((err) => {
  text("freshness", "The figures could not be loaded: " + err.message);
  document.body.dataset.ready = "error";
});
