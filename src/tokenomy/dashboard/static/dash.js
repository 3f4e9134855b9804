"use strict";
// tokenomy dashboard: fetches /dashboard/api/<page> with the key kept in sessionStorage and
// draws tables, KPI cards, uPlot time series (canvas) and small SVG bar charts.
// Every chart container gets data-points = the number of data points drawn (used by tests).

const KEY = "tokenomy_key";
const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563", "#65a30d", "#ea580c",
  "#1e40af", "#9f1239", "#047857", "#a16207", "#6d28d9", "#0e7490", "#be185d", "#374151", "#4d7c0f", "#c2410c"];
const PAGE = document.body.dataset.page;
// One colour per model / deployment / tenant name on every chart of every page: the name's slot
// in the sorted list of all names the gateway knows (whoami.names), else a hash of the name.
function colorFor(name) {
  const names = (state.who && state.who.names) || [];
  const i = names.indexOf(name);
  if (i >= 0) return PALETTE[i % PALETTE.length];
  let h = 0;
  for (const ch of String(name)) h = (h * 31 + ch.codePointAt(0)) >>> 0;
  return PALETTE[h % PALETTE.length];
}
const state = {who: null, charts: [], timer: null, loading: false, plan: null};

// ---------------------------------------------------------------- helpers
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}
const num = (x) => (x === null || x === undefined || x === "") ? null : Number(x);
function fmtNum(x, digits = 0) {
  x = num(x); if (x === null || !isFinite(x)) return "–";
  const a = Math.abs(x);
  if (a >= 1e9) return (x / 1e9).toFixed(2) + "G";
  if (a >= 1e6) return (x / 1e6).toFixed(2) + "M";
  if (a >= 1e4) return (x / 1e3).toFixed(1) + "k";
  return x.toLocaleString(undefined, {maximumFractionDigits: digits});
}
// Money like the CLI (tokenomy.cli.fmt.usd): 2 decimals from $1, else 3 significant digits
// without trailing zeros ($0.00128, never "$0.0"); 0 is "$0".
function fmtUSD(x) {
  x = num(x); if (x === null || !isFinite(x)) return "–";
  const a = Math.abs(x), sign = x < 0 ? "-$" : "$";
  if (a === 0) return "$0";
  if (a >= 1000) return sign + a.toLocaleString("en-US", {maximumFractionDigits: 0});
  if (a >= 1) return sign + a.toFixed(2);
  const digits = Math.min(20, -Math.floor(Math.log10(a)) - 1 + 3);
  return sign + a.toFixed(digits).replace(/0+$/, "").replace(/\.$/, "");
}
const fmtPct = (x) => (num(x) === null ? "–" : (100 * x).toFixed(1) + "%");
const fmtMs = (x) => (num(x) === null ? "–" : (x >= 1000 ? (x / 1000).toFixed(2) + " s" : x.toFixed(0) + " ms"));
const fmtJ = (x) => (num(x) === null ? "–" : (x >= 100 ? x.toFixed(0) : x.toPrecision(3)) + " J");
const fmtFix = (d) => (x) => (num(x) === null ? "–" : Number(x).toFixed(d));

function params() {
  const p = new URLSearchParams(location.search);
  const out = new URLSearchParams();
  out.set("range", p.get("range") || document.getElementById("range").value || "24h");
  if (p.get("tenant")) out.set("tenant", p.get("tenant"));
  for (const k of ["since", "until", "res", "model", "slo_tpot_ms", "context", "plan", "by", "user", "tag", "q"]) if (p.get(k)) out.set(k, p.get(k));
  return out;
}
function setParam(k, v) {
  const p = new URLSearchParams(location.search);
  if (v) p.set(k, v); else p.delete(k);
  history.replaceState(null, "", location.pathname + (p.toString() ? "?" + p : ""));
}
function toLogin() {
  location.href = "/dashboard/login?next=" + encodeURIComponent(location.pathname + location.search);
}
async function api(path, query) {
  const key = sessionStorage.getItem(KEY);
  if (!key) { toLogin(); throw new Error("not logged in"); }
  const url = "/dashboard/api/" + path + (query && query.toString() ? "?" + query : "");
  const r = await fetch(url, {headers: {Authorization: "Bearer " + key}, cache: "no-store"});
  if (r.status === 401) { sessionStorage.removeItem(KEY); toLogin(); throw new Error("unauthorised"); }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((body.error && body.error.message) || ("HTTP " + r.status));
  if (body.meta && body.meta.rollups) state.last = body;
  return body;
}
function showError(msg) {
  const s = document.getElementById("status");
  s.replaceChildren(msg ? el("div", {class: "error", text: msg}) : "");
}

// ---------------------------------------------------------------- building blocks
function cards(items) {
  return el("div", {class: "cards"}, items.map(([label, value, sub, cls]) =>
    el("div", {class: "card kpi"}, el("div", {class: "label", text: label}),
      el("div", {class: "value " + (cls || ""), text: value}), sub ? el("div", {class: "sub", text: sub}) : null)));
}
function panel(title, body, extraClass) {
  return el("section", {class: "card " + (extraClass || "")}, el("h2", {text: title}), body);
}
function empty(text) { return el("div", {class: "empty", text}); }
function table(rows, cols, opts) {
  if (!rows || !rows.length) return empty((opts && opts.empty) || "No rows.");
  const head = el("tr", {}, cols.map((c) => el("th", {class: c.num ? "num" : "", text: c.label, ...(c.title ? {title: c.title} : {})})));
  const body = rows.map((r) => el("tr", {}, cols.map((c) => {
    const v = c.render ? c.render(r) : (c.fmt ? c.fmt(r[c.key]) : (r[c.key] ?? "–"));
    const long = !(v instanceof Node) && String(v).length > 34;  // shortened by CSS: the full text as a tooltip
    return el("td", {class: c.num ? "num" : "", ...(long ? {title: String(v)} : {})}, v instanceof Node ? v : String(v));
  })));
  return el("div", {class: "table-wrap"}, el("table", {}, el("thead", {}, head), el("tbody", {}, body)));
}
function usageBar(frac) {
  if (num(frac) === null) return "–";
  const hot = frac >= 0.8;
  return el("span", {}, el("span", {class: "bar" + (hot ? " hot" : "")}, el("span", {style: "width:" + Math.min(100, 100 * frac).toFixed(1) + "%"})),
    fmtPct(frac));
}

// Time series with uPlot (canvas). series: [{label, values, color?, fmt?}]
function lineChart(title, xs, series, yFmt, emptyText) {
  const box = el("div", {class: "chart", "data-chart": title});
  const points = series.reduce((n, s) => n + s.values.filter((v) => v !== null && v !== undefined).length, 0);
  box.dataset.points = String(points);
  const wrap = panel(title, box);
  if (!xs.length || points === 0) { box.append(empty(emptyText || "No data in this range.")); return wrap; }
  requestAnimationFrame(() => {
    const width = Math.max(300, box.clientWidth - 4);
    const opts = {
      width, height: 230, legend: {show: true},
      scales: {x: {time: true}},
      axes: [{stroke: "#6b7280", grid: {stroke: "#eef0f3"}},
             {stroke: "#6b7280", grid: {stroke: "#eef0f3"}, size: 70, values: (u, vals) => vals.map((v) => yFmt ? yFmt(v) : fmtNum(v, 2))}],
      series: [{}, ...series.map((s, i) => ({label: s.label, stroke: s.color || (s.named ? colorFor(s.label) : PALETTE[i % PALETTE.length]), width: 2,
        scale: s.scale || "y", spanGaps: false, points: {show: xs.length < 60},
        value: (u, v) => (v === null || v === undefined ? "–" : ((s.fmt || yFmt) ? (s.fmt || yFmt)(v) : fmtNum(v, 2)))}))],
    };
    // a series on its own scale (e.g. J/token next to $/Mtok) gets an axis on the right
    for (const s of series.filter((s) => s.scale)) {
      opts.axes.push({scale: s.scale, side: 1, stroke: s.color || "#6b7280", grid: {show: false}, size: 70,
        values: (u, vals) => vals.map((v) => (s.fmt ? s.fmt(v) : fmtNum(v, 3)))});
    }
    const u = new uPlot(opts, [xs, ...series.map((s) => s.values)], box);
    for (const lab of box.querySelectorAll(".u-legend .u-label")) lab.title = lab.textContent;  // shortened by CSS
    state.charts.push(u);
  });
  return wrap;
}
// Width of a text in the bar chart's font (SVG units = CSS px at 100 % zoom; the SVG never scales
// up: its width is its own), measured with a canvas so nothing is guessed.
const _measure = document.createElement("canvas").getContext("2d");
function textWidth(text) {
  _measure.font = "11px " + getComputedStyle(document.body).fontFamily;
  return _measure.measureText(String(text)).width;
}
function fitText(text, maxW) {
  text = String(text);
  if (textWidth(text) <= maxW) return text;
  let lo = 0, hi = text.length;
  while (lo < hi) { const mid = (lo + hi + 1) >> 1; if (textWidth(text.slice(0, mid) + "…") <= maxW) lo = mid; else hi = mid - 1; }
  return text.slice(0, lo) + "…";
}
// Horizontal bar chart as SVG. bars: [{label, value, color?}], optional second series via opts.second.
// Labels and values are measured: the label column is as wide as the longest label (up to 45 % of
// the chart; longer ones end in "…" with the full text as a tooltip), and the value column is as
// wide as the longest value, so no text leaves the chart.
function barChart(title, bars, fmt, opts) {
  opts = opts || {};
  const box = el("div", {class: "chart", "data-chart": title});
  const items = bars.filter((b) => num(b.value) !== null);
  box.dataset.points = String(items.length);
  const wrap = panel(title, box);
  if (!items.length) { box.append(empty(opts.empty || "No data in this range.")); return wrap; }
  const ns = "http://www.w3.org/2000/svg";
  const w = 640, rowH = opts.second ? 30 : 22, pad = 8;
  const valueText = (b) => fmt(b.value) + (opts.second && num(b.value2) !== null ? " / " + fmt(b.value2) : "");
  const labelW = Math.min(0.45 * w, Math.max(40, ...items.map((b) => textWidth(b.label))) + pad);
  const valueW = Math.max(...items.map((b) => textWidth(valueText(b)))) + pad;
  const h = items.length * rowH + (opts.second ? 30 : 8);
  const max = Math.max(...items.map((b) => Math.max(Number(b.value), num(b.value2) || 0)), 1e-12);
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`); svg.setAttribute("width", String(w));
  svg.setAttribute("style", "max-width:100%;height:auto");
  svg.setAttribute("class", "legend-svg");
  const mk = (tag, a) => { const e = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(a)) e.setAttribute(k, v); return e; };
  const plotW = Math.max(40, w - labelW - valueW);
  items.forEach((b, i) => {
    const y = i * rowH + 4;
    const t = mk("text", {x: labelW - pad / 2, y: y + 12, "text-anchor": "end", "data-label": b.label});
    t.textContent = fitText(b.label, labelW - pad);
    const full = mk("title", {}); full.textContent = b.label; t.append(full); svg.append(t);
    const bw = Math.max(1, plotW * Number(b.value) / max);
    const r = mk("rect", {x: labelW, y, width: bw, height: opts.second ? 11 : 15, fill: b.color || PALETTE[0], rx: 2, "data-value": b.value});
    const tip = mk("title", {}); tip.textContent = `${b.label}: ${fmt(b.value)}`; r.append(tip); svg.append(r);
    let end = bw;
    if (opts.second && num(b.value2) !== null) {
      const bw2 = Math.max(1, plotW * Number(b.value2) / max);
      svg.append(mk("rect", {x: labelW, y: y + 13, width: bw2, height: 11, fill: PALETTE[1], rx: 2}));
      end = Math.max(end, bw2);
    }
    const vt = mk("text", {x: labelW + end + 4, y: y + 12}); vt.textContent = valueText(b); svg.append(vt);
  });
  if (opts.second) {
    const ly = h - 8;
    svg.append(mk("rect", {x: labelW, y: ly - 9, width: 10, height: 10, fill: PALETTE[0]}));
    const a = mk("text", {x: labelW + 14, y: ly}); a.textContent = opts.first; svg.append(a);
    const x2 = labelW + 14 + textWidth(opts.first) + 20;
    svg.append(mk("rect", {x: x2, y: ly - 9, width: 10, height: 10, fill: PALETTE[1]}));
    const b2 = mk("text", {x: x2 + 14, y: ly}); b2.textContent = opts.second; svg.append(b2);
  }
  box.append(svg);
  return wrap;
}
const xsOf = (series) => series.map((p) => p.ts);
const col = (series, k) => series.map((p) => (p[k] === undefined ? null : p[k]));

// ---------------------------------------------------------------- pages
const PAGES = {};

PAGES.overview = async (q) => {
  const d = await api("overview", q);
  const t = d.totals, s = d.tables.series, sv = t.savings;
  const xs = xsOf(s);
  const admin = state.who && state.who.is_admin;
  const saveCls = (f) => (num(f) === null ? "" : f >= 0 ? "good" : "bad");
  const usage = [
    ["Requests", fmtNum(t.requests), fmtNum(t.errors) + " upstream errors · " + fmtNum(t.client_errors) + " client errors"],
    ["Tokens", fmtNum(t.tokens), fmtNum(t.input_tokens) + " in · " + fmtNum(t.output_tokens) + " out"],
  ];
  if (!admin) {  // a tenant: its usage and what it is billed, never the operator's cost
    return [
      cards([...usage, ["Billed", fmtUSD(t.price_usd), fmtUSD(t.price_usd_per_mtok) + " per Mtok"],
             ["Energy", fmtJ(t.energy_joules), "estimated from the deployments' power model"]]),
      el("div", {class: "grid2"},
        lineChart("Requests", xs, [{label: "requests", values: col(s, "requests")}, {label: "upstream errors", values: col(s, "errors"), color: PALETTE[1]}, {label: "client errors", values: col(s, "client_errors"), color: PALETTE[3]}], (v) => fmtNum(v)),
        lineChart("Billed (USD per bucket)", xs, [{label: "billed", values: col(s, "price_usd")}], fmtUSD),
        lineChart("Tokens", xs, [{label: "input", values: col(s, "input_tokens")}, {label: "output", values: col(s, "output_tokens"), color: PALETTE[2]}], (v) => fmtNum(v))),
    ];
  }
  const strong = sv.all_strong, single = sv.single_deployment;
  return [
    cards([...usage,
      ["Spend (serving cost)", fmtUSD(t.cost_usd), "billed " + fmtUSD(t.price_usd)],
      ["$/Mtok", fmtUSD(t.usd_per_mtok), "billed " + fmtUSD(t.price_usd_per_mtok) + "/Mtok"],
      ["J/token", fmtJ(t.joules_per_token), fmtNum(t.energy_joules / 3.6e6, 3) + " kWh"],
      ["Saved by routing vs all-strong", fmtUSD(strong.saved_usd), strong.routed_requests
        ? fmtPct(strong.saved_fraction) + " of " + fmtUSD(strong.baseline_usd) + " over " + fmtNum(strong.routed_requests) + " routed requests"
        : "no routed requests in this range", saveCls(strong.saved_fraction)],
      ["Saved vs one deployment per model", fmtUSD(single.saved_usd), fmtPct(single.saved_fraction) + " of " + fmtUSD(single.baseline_usd) + " · " +
        Object.entries(single.pinned).map(([m, dep]) => m + " on " + dep).join(", "), saveCls(single.saved_fraction)],
    ]),
    el("p", {class: "muted", "data-definition": "baselines"},
      "All-strong: " + strong.definition + ". One deployment per model: " + single.definition + "."),
    el("div", {class: "grid2"},
      lineChart("Requests", xs, [{label: "requests", values: col(s, "requests")}, {label: "upstream errors", values: col(s, "errors"), color: PALETTE[1]}, {label: "client errors", values: col(s, "client_errors"), color: PALETTE[3]}], (v) => fmtNum(v)),
      lineChart("Spend vs baselines (USD per bucket)", xs, [
        {label: "actual", values: col(s, "cost_usd")},
        {label: "one deployment per model", values: col(s, "single_deployment_usd"), color: PALETTE[3]},
        {label: "routed requests", values: col(s, "routed_usd"), color: PALETTE[2]},
        {label: "routed, all-strong", values: col(s, "all_strong_usd"), color: PALETTE[1]}], fmtUSD),
      lineChart("Tokens", xs, [{label: "input", values: col(s, "input_tokens")}, {label: "output", values: col(s, "output_tokens"), color: PALETTE[2]}], (v) => fmtNum(v)),
      lineChart("$/Mtok and J/token", xs, [{label: "$/Mtok", values: col(s, "usd_per_mtok"), fmt: fmtUSD},
        {label: "J/token", values: col(s, "joules_per_token"), color: PALETTE[4], scale: "J", fmt: fmtJ}], fmtUSD),
    ),
  ];
};

PAGES.routing = async (q) => {
  const d = await api("routing", q);
  const t = d.totals, s = d.tables.series, xs = xsOf(s);
  const mixSeries = t.models.map((m) => ({label: m, values: col(s, m), named: true}));
  const quality = d.tables.quality;
  const out = [
    cards([
      ["Requests", fmtNum(t.requests), t.models.length + " models"],
      ["Strong-call share", fmtPct(t.strong_share), fmtNum(t.routed) + " routed requests"],
      ["Predicted quality", num(t.predicted_quality_mean) === null ? "–" : t.predicted_quality_mean.toFixed(3), "mean over routed requests"],
      ["Feedback labels", fmtNum(t.feedback_n), "POST /v1/feedback"],
    ]),
    el("div", {class: "grid2"},
      lineChart("Model mix (requests)", xs, mixSeries, (v) => fmtNum(v)),
      lineChart("Strong-call share", xs, [{label: "strong share", values: col(s, "strong_share")}], fmtPct,
        "No routing decisions recorded in this range (requests name a model directly)."),
      barChart("Requests by model and deployment", d.tables.mix.map((m) => ({label: m.model + " · " + m.deployment, value: m.requests, color: colorFor(m.deployment)})), (v) => fmtNum(v)),
      quality.length
        ? barChart("Predicted vs observed quality (feedback)", quality.map((r) => ({label: r.model + " (n=" + r.n + ")", value: r.predicted_mean, value2: r.observed_mean})), fmtFix(3), {first: "predicted", second: "observed"})
        : panel("Predicted vs observed quality", el("div", {class: "empty", "data-empty": "quality", text: "No quality feedback yet. Labels sent with POST /v1/feedback {request_id, score} appear here, next to the router's predicted quality."})),
    ),
    panel("Model mix", table(d.tables.mix, [
      {key: "model", label: "model"}, {key: "deployment", label: "deployment"},
      {key: "requests", label: "requests", num: true, fmt: fmtNum}, {key: "share", label: "share", num: true, fmt: fmtPct},
      {key: "tokens", label: "tokens", num: true, fmt: fmtNum}, {key: "cost_usd", label: "cost", num: true, fmt: fmtUSD}], {empty: "No requests in this range."})),
  ];
  if (d.tables.calibration.length) out.push(panel("Calibration (predicted quality bins)", table(d.tables.calibration, [
    {key: "bin", label: "predicted"}, {key: "n", label: "n", num: true}, {key: "predicted_mean", label: "predicted mean", num: true, fmt: fmtFix(3)},
    {key: "observed_mean", label: "observed mean", num: true, fmt: fmtFix(3)}])));
  return out;
};

// The real cost of self-hosted deployments: bill vs allocated vs idle, actual vs modelled $/Mtok.
function costPanels(c) {
  const rows = c.tables.deployments;
  if (!rows.length) return [panel("Real serving cost", empty("No self-hosted deployment was provisioned in this range (API deployments have no bill)."))];
  const byTs = new Map();
  for (const p of c.tables.series) {
    const x = byTs.get(p.ts) || {ts: p.ts, bill: 0, allocated: 0, idle: 0};
    x.bill += p.bill_usd; x.allocated += p.allocated_usd; x.idle += p.idle_usd; byTs.set(p.ts, x);
  }
  const pts = [...byTs.values()].sort((a, b) => a.ts - b.ts);
  const cf = c.totals.committed_first;  // committed-first vs cost routing on list prices (tokenomy route savings)
  const committed = cf && cf.requests ? [panel("committed-first vs cost routing (same traffic)", cards([
    ["Actual", fmtUSD(cf.actual_usd), "committed bill " + fmtUSD(cf.committed_bill_usd) + " + elsewhere " + fmtUSD(cf.api_usd)],
    ["Cost routing", fmtUSD(cf.cost_routing_usd), "committed " + fmtUSD(cf.cost_routing_committed_bill_usd) + " + elsewhere " + fmtUSD(cf.cost_routing_api_usd)],
    ["Saved", fmtUSD(cf.saved_usd), cf.saved_pct === null ? "" : cf.saved_pct.toFixed(1) + " %", Number(cf.saved_usd) >= 0 ? "good" : "bad"],
    ["On committed capacity", fmtNum(cf.on_committed), fmtNum(cf.spilled) + " spilled of " + fmtNum(cf.requests)],
  ]))] : [];
  return [
    ...committed,
    panel("Real serving cost (tokenomy costs)", table(rows, [
      {key: "deployment", label: "deployment"}, {key: "hourly_usd", label: "$/h", num: true, fmt: fmtUSD},
      {key: "bill_usd", label: "bill", num: true, fmt: fmtUSD}, {key: "allocated_usd", label: "allocated", num: true, fmt: fmtUSD},
      {key: "idle_usd", label: "idle", num: true, fmt: fmtUSD}, {key: "tokens", label: "tokens", num: true, fmt: fmtNum},
      {key: "utilization", label: "utilisation", num: true, fmt: fmtPct},
      {key: "usd_per_mtok_output_actual", label: "$/Mtok out, actual", num: true, fmt: fmtUSD},
      {key: "usd_per_mtok_output_modelled", label: "$/Mtok out, model at this utilisation", num: true, fmt: fmtUSD}])),
    lineChart("Bill vs allocated vs idle (USD per bucket)", pts.map((p) => p.ts), [
      {label: "bill", values: pts.map((p) => p.bill)}, {label: "allocated to requests", values: pts.map((p) => p.allocated), color: PALETTE[2]},
      {label: "idle", values: pts.map((p) => p.idle), color: PALETTE[1]}], fmtUSD),
    el("p", {class: "muted", text: "Rule: " + c.meta.rule + "."}),
  ];
}

PAGES.deployments = async (q) => {
  const d = await api("deployments", q);
  const admin = state.who && state.who.is_admin;
  const c = admin ? await api("costs", q) : null;
  const costs = c ? costPanels(c) : [];
  // utilisation of a self-hosted deployment: its share of token capacity used (tokenomy costs)
  const util = new Map((c ? c.tables.deployments : []).map((r) => [r.deployment, r.utilization]));
  for (const r of d.tables.deployments) if (num(r.utilization) === null && util.has(r.deployment)) r.utilization = util.get(r.deployment);
  const rows = d.tables.deployments, names = d.totals.deployments;
  const rq = d.tables.requests, lat = d.tables.latency;
  const breaker = (r) => r.breaker ? el("span", {class: "badge " + r.breaker, text: r.breaker}) : el("span", {class: "muted", text: "n/a"});
  return [
    cards([
      ["Deployments", String(names.length), d.meta.live ? "live state from the gateway" : "from the ledger only"],
      ["Open breakers", String(d.totals.open_breakers.length), d.totals.open_breakers.join(", ") || "none", d.totals.open_breakers.length ? "bad" : "good"],
    ]),
    panel("Deployments", table(rows, [
      {key: "deployment", label: "deployment"}, {label: "breaker", render: breaker},
      {key: "in_flight", label: "in flight", num: true, fmt: (v) => (v === null || v === undefined ? "–" : String(v))},
      {key: "mean_in_flight", label: "mean in flight", num: true, fmt: (v) => (num(v) === null ? "–" : Number(v).toPrecision(3))},
      {key: "utilization", label: "utilisation", num: true, fmt: fmtPct},
      {key: "requests", label: "requests", num: true, fmt: fmtNum},
      {key: "error_rate", label: "upstream errors", num: true, fmt: fmtPct, title: "failed upstream attempts that ended the request (5xx, timeouts, garbage): the deployment's health"},
      {key: "client_error_rate", label: "client errors", num: true, fmt: fmtPct, title: "the caller's own: 4xx passed back, requests the client abandoned (499); not counted against the deployment"},
      {key: "latency_ms_p50", label: "p50", num: true, fmt: fmtMs}, {key: "latency_ms_p99", label: "p99", num: true, fmt: fmtMs},
      {key: "ttft_ms_p50", label: "TTFT p50", num: true, fmt: fmtMs},
      {key: "usd_per_mtok", label: "$/Mtok", num: true, fmt: fmtUSD},
      {label: "J/token", num: true, render: (r) => (num(r.joules_per_token) === null ? "–" : r.energy_basis === "power model"
        ? fmtJ(r.joules_per_token) : el("span", {class: "muted", title: "an estimate: the provider's hardware is not known", text: "~" + fmtJ(r.joules_per_token) + " est."}))},
      {key: "cost_usd", label: "cost", num: true, fmt: fmtUSD}], {empty: "No deployments seen in this range."})),
    el("div", {class: "grid2"},
      lineChart("Requests per deployment", xsOf(rq), names.map((n) => ({label: n, values: col(rq, n), named: true})), (v) => fmtNum(v)),
      lineChart("Mean latency per deployment", xsOf(lat), names.map((n) => ({label: n, values: col(lat, n), named: true})), fmtMs),
      barChart("Latency p50 / p99", rows.filter((r) => r.latency_ms_p50 !== null).map((r) => ({label: r.deployment, value: r.latency_ms_p50, value2: r.latency_ms_p99})), fmtMs, {first: "p50", second: "p99"}),
      barChart("$/Mtok by deployment", rows.map((r) => ({label: r.deployment, value: r.usd_per_mtok, color: colorFor(r.deployment)})), fmtUSD),
    ),
    ...costs,
  ];
};

PAGES.tenants = async (q) => {
  const d = await api("tenants", q);
  const t = d.totals, rows = d.tables.tenants;
  if (!(state.who && state.who.is_admin)) {  // a tenant: its own spend, budget and limits only
    const me = rows[0] || {};
    return [
      cards([["Requests", fmtNum(me.requests)], ["Tokens", fmtNum(me.tokens)],
             ["Spent this budget period", fmtUSD(me.period_spend_usd), me.budget_usd ? "of " + fmtUSD(me.budget_usd) + " " + (me.budget_period || "") : "no budget"],
             ["Near a limit", String(t.near_limit), "at ≥ " + fmtPct(d.meta.near_limit_fraction) + " of a budget or cap", t.near_limit ? "warn" : "good"]]),
      panel("Near a limit", table(d.tables.near_limit, [
        {key: "kind", label: "limit"}, {key: "subject", label: "subject"},
        {label: "used", render: (r) => usageBar(r.used)}, {key: "detail", label: "detail"}], {empty: "Nothing is near a limit."})),
      panel("Keys", table(d.tables.keys, [
        {key: "key_id", label: "key"}, {key: "name", label: "name"}, {key: "active", label: "active", fmt: (v) => (v ? "yes" : "revoked")},
        {key: "budget_usd", label: "budget", num: true, fmt: fmtUSD}, {label: "budget used", render: (r) => usageBar(r.budget_used)},
        {key: "rpm", label: "RPM cap", num: true, fmt: (v) => (v ? fmtNum(v) : "–")}, {key: "tpm", label: "TPM cap", num: true, fmt: (v) => (v ? fmtNum(v) : "–")}],
        {empty: "No keys."})),
    ];
  }
  return [
    cards([
      ["Tenants", String(t.tenants)], ["Serving cost", fmtUSD(t.cost_usd)], ["Revenue", fmtUSD(t.revenue_usd)],
      ["Margin", fmtUSD(t.margin_usd), t.negative_margin_tenants.length + " tenants below zero", num(t.margin_usd) < 0 ? "bad" : ""],
      ["Near a limit", String(t.near_limit), "at ≥ " + fmtPct(d.meta.near_limit_fraction) + " of a budget or cap", t.near_limit ? "warn" : "good"],
    ]),
    panel("Near a limit", table(d.tables.near_limit, [
      {key: "tenant", label: "tenant"}, {key: "kind", label: "limit"}, {key: "subject", label: "subject"},
      {label: "used", render: (r) => usageBar(r.used)}, {key: "detail", label: "detail"}], {empty: "Nobody is near a limit."})),
    el("div", {class: "grid2"},
      barChart("Serving cost vs revenue by tenant", rows.map((r) => ({label: r.tenant, value: num(r.cost_usd), value2: num(r.revenue_usd)})), fmtUSD, {first: "cost", second: "revenue"}),
      barChart("Requests by tenant", rows.map((r) => ({label: r.tenant, value: r.requests, color: colorFor(r.tenant)})), (v) => fmtNum(v)),
    ),
    panel("Tenants", table(rows, [
      {key: "tenant", label: "tenant"}, {key: "requests", label: "requests", num: true, fmt: fmtNum},
      {key: "tokens", label: "tokens", num: true, fmt: fmtNum}, {key: "cost_usd", label: "cost", num: true, fmt: fmtUSD},
      {key: "revenue_usd", label: "revenue", num: true, fmt: fmtUSD}, {key: "margin_usd", label: "margin", num: true, fmt: fmtUSD},
      {key: "margin_fraction", label: "margin %", num: true, fmt: fmtPct},
      {key: "budget_usd", label: "budget", num: true, fmt: fmtUSD}, {key: "budget_period", label: "period"},
      {key: "period_spend_usd", label: "spent (period)", num: true, fmt: fmtUSD},
      {label: "budget used", render: (r) => usageBar(r.budget_used)}], {empty: "No tenants."})),
    panel("Keys", table(d.tables.keys, [
      {key: "key_id", label: "key"}, {key: "tenant", label: "tenant"}, {key: "name", label: "name"},
      {key: "active", label: "active", fmt: (v) => (v ? "yes" : "revoked")},
      {key: "budget_usd", label: "budget", num: true, fmt: fmtUSD}, {label: "budget used", render: (r) => usageBar(r.budget_used)},
      {key: "rpm", label: "RPM cap", num: true, fmt: (v) => (v ? fmtNum(v) : "–")}, {key: "rpm_peak_last_hour", label: "peak RPM (1 h)", num: true, fmt: fmtNum},
      {key: "tpm", label: "TPM cap", num: true, fmt: (v) => (v ? fmtNum(v) : "–")}, {key: "tpm_peak_last_hour", label: "peak TPM (1 h)", num: true, fmt: fmtNum}],
      {empty: "No keys."})),
  ];
};

// Spend by end user (the requests' `user`) or tag (`metadata`), with filters; a row drills down:
// a user's spend by tag, a tag's spend by user. The filters live in the URL, so a view is a link.
PAGES.spend = async (q) => {
  const d = await api("spend", q);
  const t = d.totals, f = d.meta.filters, by = d.meta.by, rows = d.tables.spend;
  const admin = state.who && state.who.is_admin;
  const go = (changes) => { for (const [k, v] of Object.entries(changes)) setParam(k, v); refresh(); };
  const other = by === "user" ? "tag" : "user";
  const form = el("form", {class: "inline", id: "spend-filters"},
    el("label", {}, "rows", el("select", {name: "by", id: "spend-by"}, ["user", "tag"].map((v) =>
      el("option", {value: v, text: v === "user" ? "end users" : "tags", ...(v === by ? {selected: "selected"} : {})})))),
    el("label", {}, "only user", el("input", {type: "text", name: "user", id: "spend-user", size: 14, value: f.user || "", placeholder: "any"})),
    el("label", {}, "only tag", el("input", {type: "text", name: "tag", id: "spend-tag", size: 18, value: f.tag || "", placeholder: "key=value"})),
    el("label", {}, "name contains", el("input", {type: "text", name: "q", id: "spend-q", size: 14, value: f.q || ""})),
    el("button", {type: "submit", text: "Apply"}),
    el("button", {type: "button", id: "spend-clear", text: "Clear"}));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = Object.fromEntries([...form.querySelectorAll("[name]")].map((i) => [i.name, i.value.trim()]));
    go(v);
  });
  form.querySelector("#spend-clear").addEventListener("click", () => go({by: by, user: "", tag: "", q: ""}));
  const drill = (r) => el("a", {href: "#", class: "drill", "data-value": r[by], text: r[by], onclick: (ev) => {
    ev.preventDefault();
    go(by === "user" ? {user: r[by], by: "tag", q: ""} : {tag: r[by], by: "user", q: ""});
  }});
  const scope = [f.user ? "user " + f.user : null, f.tag ? "tag " + f.tag : null, f.q ? "names containing “" + f.q + "”" : null].filter(Boolean);
  const cols = [{label: by === "user" ? "end user" : "tag", render: drill},
    {key: "requests", label: "requests", num: true, fmt: fmtNum}, {key: "input_tokens", label: "input tok", num: true, fmt: fmtNum},
    {key: "output_tokens", label: "output tok", num: true, fmt: fmtNum}, {key: "price_usd", label: "billed", num: true, fmt: fmtUSD},
    {key: "share_of_spend", label: "share", num: true, fmt: fmtPct}];
  if (admin) cols.push({key: "cost_usd", label: "serving cost", num: true, fmt: fmtUSD});
  cols.push({key: "energy_joules", label: "energy", num: true, fmt: fmtJ});
  const o = t.others;
  return [
    form,
    cards([[by === "user" ? "End users" : "Tags", fmtNum(t.values), scope.length ? scope.join(" · ") : "all requests in this range"],
           ["Billed", fmtUSD(t.price_usd), admin ? "serving cost " + fmtUSD(t.cost_usd) : ""],
           [by === "tag" ? "Requests × tags" : "Requests", fmtNum(t.requests), d.meta.note || ""]]),
    barChart("Billed by " + (by === "user" ? "end user" : "tag") + " (top " + Math.min(rows.length, 20) + ")",
      rows.slice(0, 20).map((r) => ({label: r[by], value: num(r.price_usd), color: colorFor(r[by])})), fmtUSD,
      {empty: "No request in this range carries " + (by === "user" ? "a user" : "a tag") + (scope.length ? " (with these filters)" : "") + "."}),
    panel((by === "user" ? "End users" : "Tags") + " — click one for its spend by " + other, table(rows, cols,
      {empty: "Nothing matches: requests record a user with the OpenAI `user` field and tags with `metadata`."})),
    o.values ? el("p", {class: "muted", id: "spend-others"}, `${fmtNum(o.values)} more (${fmtNum(o.requests)} requests, billed ${fmtUSD(o.price_usd)}) not shown: narrow the filters or download the CSV.`) : null,
  ];
};

PAGES["unit-cost"] = async (q) => {
  const d = await api("unit-cost", q);
  const m = d.meta, rows = d.tables.rows;
  const modelSel = el("select", {name: "model", id: "uc-model"}, m.models.map((x) => el("option", {value: x, text: x})));
  modelSel.value = m.model;
  const slo = el("input", {name: "slo_tpot_ms", id: "uc-slo", type: "number", min: "1", step: "any", placeholder: "none", value: m.slo_tpot_ms ?? ""});
  const ctx = el("input", {name: "context", id: "uc-context", type: "number", min: "1", value: m.context});
  const form = el("form", {class: "inline", id: "uc-form", onsubmit: (ev) => {
    ev.preventDefault(); setParam("model", modelSel.value); setParam("slo_tpot_ms", slo.value); setParam("context", ctx.value); refresh();
  }}, el("label", {}, "model", modelSel), el("label", {}, "SLO: max ms per output token", slo), el("label", {}, "context tokens", ctx),
    el("button", {type: "submit", text: "Compare"}));
  const label = (r) => `${r.count}×${r.accelerator} @ ${r.site}`;
  // like `tokenomy cost compare`: each accelerator once, at its cheapest site (all sites on demand)
  const best = new Map(), sitesOf = new Map();
  for (const r of rows) {
    const k = r.accelerator + "×" + r.count;
    sitesOf.set(k, (sitesOf.get(k) || 0) + 1);
    if (!best.has(k) || r.usd_per_mtok_output < best.get(k).usd_per_mtok_output) best.set(k, r);
  }
  const grouped = [...best.values()].sort((a, b) => a.usd_per_mtok_output - b.usd_per_mtok_output);
  const listed = state.allSites ? rows : grouped;
  const top = grouped.slice(0, 20);
  const apiBars = d.tables.api.map((r) => ({label: "API " + r.price_provider + ": " + (r.model || "").split("/").pop(), value: r.usd_per_mtok_output, color: PALETTE[7]}));
  const cheapest = d.totals.cheapest;
  return [
    form,
    cards([
      ["Options", String(grouped.length), "accelerators (" + d.totals.rows + " accelerator × site rows)"],
      ["Cheapest $/Mtok output", cheapest ? fmtUSD(cheapest.usd_per_mtok_output) : "–", cheapest ? label(cheapest) : "nothing meets the SLO"],
      ["Its J/token", cheapest ? fmtJ(cheapest.joules_per_token_output) : "–", cheapest ? fmtNum(cheapest.tokens_per_s) + " tok/s" : ""],
    ]),
    barChart("$/Mtok output, cheapest site per accelerator" + (apiBars.length ? ", API offers ranked in (grey)" : ""),
      [...top.map((r) => ({label: label(r), value: r.usd_per_mtok_output, color: PALETTE[0]})), ...apiBars].sort((a, b) => a.value - b.value), fmtUSD,
      {empty: "No deployment meets this SLO."}),
    panel("Unit cost (tokenomy cost compare)" + (state.allSites ? ` — every site, ${rows.length} rows` : ` — cheapest site of each of ${grouped.length} accelerators`), el("div", {},
      el("button", {type: "button", id: "uc-all", text: state.allSites ? "cheapest site only" : "show every site (" + rows.length + ")",
        onclick: () => { state.allSites = !state.allSites; refresh(); }}),
      table(listed, [
      {key: "accelerator", label: "accelerator"}, {key: "count", label: "devices", num: true},
      {label: "site", render: (r) => state.allSites ? r.site : r.site + " (cheapest of " + sitesOf.get(r.accelerator + "×" + r.count) + ")"},
      {key: "usd_per_mtok_input", label: "$/Mtok in", num: true, fmt: fmtUSD}, {key: "usd_per_mtok_output", label: "$/Mtok out", num: true, fmt: fmtUSD},
      {key: "joules_per_token_output", label: "J/token out", num: true, fmt: fmtFix(4)}, {key: "tokens_per_s", label: "tok/s", num: true, fmt: fmtNum},
      {key: "max_batch", label: "batch", num: true}, {key: "tpot_ms", label: "TPOT ms", num: true, fmt: fmtFix(1)},
      {key: "usd_per_hour", label: "$/h", num: true, fmt: fmtUSD}, {key: "price_provider", label: "provider"}, {key: "source", label: "calibration"}],
      {empty: "No deployment meets this SLO."}))),
    d.tables.skipped.length ? panel("Skipped accelerators", table(d.tables.skipped, [{key: "accelerator", label: "accelerator"}, {key: "reason", label: "reason"}])) : null,
  ];
};

// A pricing plan as a card: what it charges (fee, per-category prices, tiers, free allowances,
// cost-plus markup, minimum) and what it limits (caps).
function planCard(p) {
  const money = (x) => (x === null || x === undefined ? null : fmtUSD(x));
  const unitOf = (cat, c) => (cat === "requests" ? "per " + fmtNum(c.per || 1000) + " requests" : "per " + (c.per ? fmtNum(c.per) + " tokens" : "Mtok"));
  const lines = [];
  if (p.subscription_usd !== null) lines.push(["Subscription", money(p.subscription_usd) + " / month"]);
  for (const [cat, c] of Object.entries(p.usage)) {
    if (c.tiers) lines.push([cat, c.scheme + ": " + c.tiers.map((t) => (t.up_to ? "≤ " + fmtNum(t.up_to) : "above") + " " + fmtUSD(t.usd)).join(", ") + " " + unitOf(cat, c)]);
    else lines.push([cat, fmtUSD(c.usd) + " " + unitOf(cat, c) + (c.scheme === "package" ? " (package)" : "")]);
  }
  for (const [cat, n] of Object.entries(p.free)) lines.push(["free " + cat, fmtNum(n) + " / month"]);
  if (p.cost_plus_markup) lines.push(["Cost plus", Object.entries(p.cost_plus_markup).map(([k, v]) => k + " +" + fmtPct(Number(v))).join(", ")]);
  if (p.list_price) lines.push(["Price", "the gateway's list price"]);
  if (p.minimum_commitment_usd !== null) lines.push(["Minimum", money(p.minimum_commitment_usd) + " / month"]);
  for (const c of p.caps) lines.push(["Cap", Number(c.limit).toLocaleString("en-US") + " " + c.unit + " per " + c.window + " → " + c.at_cap + (c.downgrade_group ? " to " + c.downgrade_group : "")]);
  return el("div", {class: "card plan-card", "data-plan": p.name},
    el("h3", {text: p.name}), el("div", {class: "muted", text: p.description || p.kind}),
    el("dl", {}, lines.flatMap(([k, v]) => [el("dt", {text: k}), el("dd", {text: v})])));
}

PAGES.plans = async (q) => {
  const pp = await api("pricing-plans", q);
  const out = [];
  if (pp.meta.configured) {
    out.push(el("h2", {text: "Pricing plans"}), el("div", {class: "plan-cards"}, pp.tables.plans.map(planCard)));
    out.push(panel("Tenants against their plan's caps", table(pp.tables.positions, [
      {key: "tenant", label: "tenant"}, {key: "plan", label: "plan"}, {key: "cap", label: "cap", fmt: (v) => v || "no caps"},
      {label: "used", render: (r) => (r.limit ? el("span", {}, usageBar(r.fraction), " " + fmtNum(r.used) + " of " + fmtNum(r.limit)) : "–")},
      {key: "at_cap", label: "at the cap", fmt: (v) => v || "–"},
      {key: "resets_at", label: "room again at", fmt: (v) => (v ? new Date(v * 1000).toISOString().slice(0, 16).replace("T", " ") + " UTC" : "–")}],
      {empty: "No tenants."})));
  } else {
    out.push(el("div", {class: "empty", "data-empty": "pricing-plans"}, "No pricing plans configured: give the gateway a plans file (plans: in tokenomy.yaml)."));
  }
  const d = await api("plans", q);
  const items = d.tables.plans;
  if (!items.length) {
    out.push(el("div", {class: "empty", "data-empty": "plans"},
      "No saved fleet plans or pricing simulations yet. Save one from the CLI as JSON into " + (d.meta.dir || "<data_dir>/plans") +
      ", e.g. tokenomy plan ... --json > " + (d.meta.dir || "plans") + "/my-plan.json"));
    return out;
  }
  const chosen = q.get("plan") || items[0].name;
  out.push(panel("Saved plans (" + (d.meta.dir || "") + ")", table(items, [
    {label: "name", render: (r) => el("a", {class: "plan-link", href: "?plan=" + encodeURIComponent(r.name) + "&range=" + (q.get("range") || "24h"), text: r.name})},
    {key: "kind", label: "kind"}, {key: "modified", label: "saved", fmt: (v) => new Date(v * 1000).toISOString().slice(0, 16).replace("T", " ")},
    {key: "bytes", label: "bytes", num: true, fmt: fmtNum}])));
  const p = await api("plans/" + encodeURIComponent(chosen), new URLSearchParams());
  const body = [];
  if (p.meta.kind === "fleet-plan") {
    const a = p.tables.assignments;
    const lab = (r) => [r.accelerator, r.config, r.site].filter((x) => x).join(" · ") || "assignment";
    const valKey = ["count", "replicas", "devices", "usd_per_hour"].find((k) => a.some((r) => num(r[k]) !== null));
    body.push(barChart("Assignments (" + (valKey || "count") + ")", a.map((r, i) => ({label: lab(r), value: valKey ? r[valKey] : 1, color: PALETTE[i % PALETTE.length]})), (v) => fmtNum(v, 2)));
    body.push(panel("Assignments", table(a, Object.keys(a[0] || {}).map((k) => ({key: k, label: k})))));
  } else if (p.meta.kind === "pricing-simulation") {
    const rows = p.tables.plans;
    body.push(barChart("Revenue vs serving cost per plan", rows.map((r) => ({label: r.plan, value: r.revenue_usd, value2: r.cost_usd})), fmtUSD, {first: "revenue", second: "cost"}));
    body.push(barChart("Unprofitable users share", rows.map((r, i) => ({label: r.plan, value: r.unprofitable_share, color: PALETTE[i % PALETTE.length]})), fmtPct));
    const known = [["plan", "plan"], ["users", "users", fmtNum], ["revenue_usd", "revenue", fmtUSD], ["cost_usd", "serving cost", fmtUSD],
      ["margin_usd", "margin", fmtUSD], ["margin_share", "margin %", fmtPct], ["unprofitable_share", "users below 0", fmtPct]];
    const cols = known.filter(([k]) => rows.some((r) => r[k] !== undefined)).map(([k, label, fmt]) => ({key: k, label, num: k !== "plan", fmt}));
    body.push(panel("Plans", table(rows, cols)));
  }
  body.push(panel("Summary", table(p.tables.summary, [{key: "field", label: "field"}, {key: "value", label: "value"}], {empty: "No top-level figures."})));
  out.push(el("h2", {text: chosen + " (" + p.meta.kind + ")"}), el("div", {class: "grid2"}, body));
  return out;
};

// ---------------------------------------------------------------- manage (admin key only)
// Writes go to /dashboard/api/manage/ as JSON with the bearer key (never a cookie or a form post).
async function send(method, path, body) {
  const key = sessionStorage.getItem(KEY);
  if (!key) { toLogin(); throw new Error("not logged in"); }
  const r = await fetch("/dashboard/api/manage/" + path, {method, cache: "no-store",
    headers: {Authorization: "Bearer " + key, "Content-Type": "application/json"}, body: JSON.stringify(body || {})});
  if (r.status === 401) { sessionStorage.removeItem(KEY); toLogin(); throw new Error("unauthorised"); }
  const out = r.status === 204 ? {} : await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((out.error && out.error.message) || ("HTTP " + r.status));
  return out;
}
// Form values: "" is absent (or null with clear=true, which clears that setting); numbers for rpm/tpm.
function formValues(form, clear) {
  const out = {};
  for (const inp of form.querySelectorAll("[name]")) {
    const v = inp.value.trim();
    if (v === "") { if (clear && inp.dataset.clearable) out[inp.name] = null; continue; }
    out[inp.name] = inp.dataset.int ? Number(v) : v;
  }
  return out;
}
function field(name, label, opts) {
  const o = opts || {};
  const attrs = {name, id: o.id, placeholder: o.placeholder || "", "data-int": o.int ? "1" : null, "data-clearable": o.clearable ? "1" : null};
  const input = o.options ? el("select", attrs, o.options.map((v) => el("option", {value: v, text: v}))) : el("input", {type: "text", size: o.size || 10, ...attrs});
  return el("label", {}, label + " ", input);
}
const periodField = (id) => field("budget_period", "period", {id, options: ["total", "daily", "monthly"]});
function mform(id, title, fields, action, onsubmit) {
  const f = el("form", {id, class: "manage-form"}, ...fields, el("button", {type: "submit", text: action}));
  f.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try { await onsubmit(f); state.notice = state.notice || (title + ": done"); } catch (e) { state.notice = null; showError(String(e.message || e)); return; }
    await refresh();
  });
  return panel(title, f);
}
const budgetText = (r) => r.budget_usd === null || r.budget_usd === undefined ? "–" : fmtUSD(r.budget_usd) + " " + r.budget_period;

PAGES.manage = async (q) => {
  const d = await api("manage", new URLSearchParams());
  const t = d.tables, tenants = t.tenants.map((x) => x.name);
  const keyIds = t.keys.filter((k) => k.active).map((k) => k.key_id);
  const out = [];
  if (state.secret) {  // shown once: the next refresh drops it
    out.push(el("div", {class: "notice secret", id: "new-secret"}, "New key for " + state.secret.tenant + " (" + state.secret.key_id + "), shown once — copy it now: ",
      el("code", {"data-secret": state.secret.key, text: state.secret.key})));
    state.secret = null;
  } else if (state.notice) out.push(el("div", {class: "notice", id: "manage-notice", text: state.notice}));
  state.notice = null;
  out.push(el("div", {class: "grid2"},
    mform("mt-form", "Create tenant", [field("name", "name", {id: "mt-name"}), field("budget_usd", "budget $", {id: "mt-budget"}),
      periodField("mt-period"), field("soft_budget_usd", "soft $", {id: "mt-soft"})], "Create tenant",
      (f) => send("POST", "tenants", formValues(f))),
    mform("tb-form", "Set tenant budget (empty clears)", [field("tenant", "tenant", {id: "tb-tenant", options: tenants}),
      field("budget_usd", "budget $", {id: "tb-budget", clearable: true}), periodField("tb-period"),
      field("soft_budget_usd", "soft $", {id: "tb-soft", clearable: true})], "Set budget",
      (f) => { const v = formValues(f, true), name = v.tenant; delete v.tenant; return send("PATCH", "tenants/" + encodeURIComponent(name), v); }),
    mform("mk-form", "Create key", [field("tenant", "tenant", {id: "mk-tenant", options: tenants}), field("name", "name", {id: "mk-name"}),
      field("budget_usd", "budget $", {id: "mk-budget"}), periodField("mk-period"),
      field("rpm", "RPM", {id: "mk-rpm", int: true, size: 6}), field("tpm", "TPM", {id: "mk-tpm", int: true, size: 8})], "Create key",
      async (f) => { state.secret = await send("POST", "keys", formValues(f)); }),
    mform("kl-form", "Set key budget and limits (empty clears)", [field("key_id", "key", {id: "kl-key", options: keyIds}),
      field("budget_usd", "budget $", {id: "kl-budget", clearable: true}), periodField("kl-period"),
      field("rpm", "RPM", {id: "kl-rpm", int: true, size: 6, clearable: true}), field("tpm", "TPM", {id: "kl-tpm", int: true, size: 8, clearable: true})], "Set limits",
      (f) => { const v = formValues(f, true), id = v.key_id; delete v.key_id; return send("PATCH", "keys/" + encodeURIComponent(id), v); }),
    mform("uc-cap-form", "Cap an end user (the requests' user; * = every user of the tenant)", [field("tenant", "tenant", {id: "uc-tenant", options: tenants}),
      field("user", "user", {id: "uc-user", placeholder: "*"}), field("budget_usd", "budget $", {id: "uc-budget"}), periodField("uc-period"),
      field("rpm", "RPM", {id: "uc-rpm", int: true, size: 6}), field("tpm", "TPM", {id: "uc-tpm", int: true, size: 8})], "Set user cap",
      (f) => { const v = formValues(f), tn = v.tenant, u = v.user || "*"; delete v.tenant; delete v.user;
        return send("PUT", "tenants/" + encodeURIComponent(tn) + "/users/" + encodeURIComponent(u), v); })));
  const act = (label, cls, fn) => el("button", {type: "button", class: cls, text: label, onclick: async () => {
    try { await fn(); } catch (e) { showError(String(e.message || e)); return; }
    await refresh();
  }});
  out.push(panel("Tenants", table(t.tenants, [{key: "name", label: "tenant"}, {label: "budget", render: budgetText},
    {key: "soft_budget_usd", label: "soft", fmt: (v) => (v === null ? "–" : fmtUSD(v))}, {key: "created", label: "created"}], {empty: "No tenants."})));
  out.push(panel("Keys", table(t.keys, [{key: "key_id", label: "key id"}, {key: "tenant", label: "tenant"}, {key: "name", label: "name"},
    {label: "budget", render: budgetText}, {key: "rpm", label: "RPM", num: true}, {key: "tpm", label: "TPM", num: true},
    {key: "active", label: "state", fmt: (v) => (v ? "active" : "revoked")},
    {label: "", render: (k) => k.active ? el("span", {"data-key": k.key_id},
      act("Rotate", "rotate", async () => { state.secret = await send("POST", "keys/" + k.key_id + "/rotate"); }),
      act("Revoke", "revoke", async () => { if (confirm("Revoke " + k.key_id + "? Requests with it will fail.")) { await send("POST", "keys/" + k.key_id + "/revoke"); state.notice = "Revoked " + k.key_id; } })) : "–"}],
    {empty: "No keys."})));
  out.push(panel("End-user caps", table(t.user_caps, [{key: "tenant", label: "tenant"}, {key: "user", label: "user", fmt: (u) => (u === "*" ? "* (default)" : u)},
    {label: "budget", render: budgetText}, {key: "rpm", label: "RPM", num: true}, {key: "tpm", label: "TPM", num: true},
    {label: "", render: (c) => act("Remove", "remove-cap", () => send("DELETE", "tenants/" + encodeURIComponent(c.tenant) + "/users/" + encodeURIComponent(c.user)))}],
    {empty: "No end-user caps."})));
  out.push(panel("Audit trail (latest " + d.meta.audit_limit + ")", el("div", {id: "audit"}, table(t.audit, [{key: "time", label: "time"}, {key: "actor", label: "actor"},
    {key: "action", label: "action"}, {key: "target", label: "target"},
    {label: "change", render: (c) => changeText(c)}], {empty: "No changes recorded yet."}))));
  return out;
};
function changeText(c) {
  if (!c.before || !c.after) return JSON.stringify(c.after || c.before || {});
  const keys = [...new Set([...Object.keys(c.before), ...Object.keys(c.after)])].filter((k) => JSON.stringify(c.before[k]) !== JSON.stringify(c.after[k]));
  return keys.length ? keys.map((k) => k + ": " + JSON.stringify(c.before[k]) + " → " + JSON.stringify(c.after[k])).join("; ") : "(secret rotated)";
}

// ---------------------------------------------------------------- lifecycle
async function refresh() {
  if (state.loading) return;
  state.loading = true;
  const q = params();
  const apiPath = "/dashboard/api/" + (PAGE === "plans" && q.get("plan") ? "plans/" + encodeURIComponent(q.get("plan")) : PAGE);
  document.getElementById("api-json").href = apiPath + "?" + q;
  const qc = new URLSearchParams(q); qc.set("format", "csv");
  document.getElementById("api-csv").href = apiPath + "?" + qc;
  try {
    const parts = await PAGES[PAGE](q);
    for (const c of state.charts) c.destroy();
    state.charts = [];
    showError("");
    const behind = state.last && state.last.meta && state.last.meta.rollups ? state.last.meta.rollups.behind : 0;
    if (behind > 0) {
      document.getElementById("status").replaceChildren(el("div", {class: "notice", text:
        `Catching up with the ledger: ${fmtNum(behind)} recorded events are not in these figures yet (they will be in a moment).`}));
    }
    document.getElementById("content").replaceChildren(...parts.filter((x) => x));
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.loaded = String(Date.now());
  } catch (e) {
    showError(String(e.message || e));
    document.getElementById("content").replaceChildren();
    document.body.dataset.loaded = "error";
  } finally {
    state.loading = false;
  }
}

function schedule() {
  clearInterval(state.timer);
  const secs = Number(document.body.dataset.refresh || 30);
  if (document.getElementById("auto").checked && !["unit-cost", "plans", "manage"].includes(PAGE)) {
    state.timer = setInterval(refresh, secs * 1000);
  }
}

// The data links need the key too: fetch with Authorization and hand the body over as a download.
async function download(ev) {
  ev.preventDefault();
  const a = ev.currentTarget;
  try {
    const r = await fetch(a.href, {headers: {Authorization: "Bearer " + sessionStorage.getItem(KEY)}, cache: "no-store"});
    if (!r.ok) { const b = await r.json().catch(() => ({})); throw new Error((b.error && b.error.message) || "HTTP " + r.status); }
    const url = URL.createObjectURL(await r.blob());
    const link = el("a", {href: url, download: PAGE + (a.id === "api-csv" ? ".csv" : ".json")});
    document.body.append(link); link.click(); link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (e) { showError(String(e.message || e)); }
}

async function init() {
  if (!sessionStorage.getItem(KEY)) return toLogin();
  const p = new URLSearchParams(location.search);
  const rangeSel = document.getElementById("range"), tenantSel = document.getElementById("tenant");
  if (p.get("range")) rangeSel.value = p.get("range");
  let who;
  try { who = await api("whoami"); } catch (e) { showError(String(e.message || e)); return; }
  state.who = who;
  document.getElementById("who").textContent = who.is_admin ? "admin" : "tenant " + who.tenant;
  if (who.is_admin) {
    tenantSel.append(el("option", {value: "", text: "all tenants"}), ...who.tenants.map((t) => el("option", {value: t, text: t})));
  } else {
    tenantSel.append(el("option", {value: who.tenant, text: who.tenant}));
    tenantSel.disabled = true;
  }
  if (p.get("tenant")) {
    if (![...tenantSel.options].some((o) => o.value === p.get("tenant"))) tenantSel.append(el("option", {value: p.get("tenant"), text: p.get("tenant")}));
    tenantSel.value = p.get("tenant");
  }
  // only the pages this key may open (a tenant's key has no Plans tab)
  for (const a of document.querySelectorAll("nav a")) if (who.pages && !(a.dataset.nav in who.pages)) a.remove();
  // carry range and tenant across pages
  for (const a of document.querySelectorAll("nav a")) a.addEventListener("click", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    q.set("range", rangeSel.value);
    if (tenantSel.value && who.is_admin) q.set("tenant", tenantSel.value);
    location.href = a.getAttribute("href") + "?" + q;
  });
  rangeSel.addEventListener("change", () => { setParam("range", rangeSel.value); refresh(); });
  tenantSel.addEventListener("change", () => { setParam("tenant", tenantSel.value); refresh(); });
  document.getElementById("auto").addEventListener("change", schedule);
  for (const id of ["api-json", "api-csv"]) document.getElementById(id).addEventListener("click", download);
  document.getElementById("logout").addEventListener("click", () => { sessionStorage.removeItem(KEY); location.href = "/dashboard/login"; });
  window.addEventListener("resize", () => { clearTimeout(state.rs); state.rs = setTimeout(refresh, 300); });
  await refresh();
  schedule();
}

document.addEventListener("DOMContentLoaded", init);
