// The Kiln dashboard's page: reads /api/state once, then each `state` event of /events (one a
// second), and draws the window. No build step, no library: DOM and canvas only.
"use strict";

const colors = { ok: "#2f8a4c", error: "#c2412d", timeout: "#c98a12", rejected: "#7a5bb5",
                 idle: "#2f7ebc", busy: "#d2691e", target: "#888888", waiting: "#c2412d",
                 warmP50: "#2f7ebc", warmP99: "#9cc3e6", coldP50: "#c2412d", coldP99: "#eba89c" };
const openInvocations = new Set();
let firstRender = true;

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

const ms = (us) => (us / 1000).toFixed(us < 10000 ? 2 : 1);
const percent = (fraction) => (fraction * 100).toFixed(0) + "%";
function bytesPerSecond(bps) {
  if (bps >= 1e6) return (bps / 1e6).toFixed(1) + " MB/s";
  if (bps >= 1e3) return (bps / 1e3).toFixed(1) + " kB/s";
  return bps + " B/s";
}
function ago(nowUs, atUs) {
  const seconds = Math.max(0, (nowUs - atUs) / 1e6);
  return seconds < 60 ? seconds.toFixed(0) + " s ago" : (seconds / 60).toFixed(0) + " min ago";
}

// A line chart: series of [x, y] points (x in seconds relative to now), on a shared y scale.
function lineChart(canvas, series, { xSpan, yLabel }) {
  const context = canvas.getContext("2d");
  const width = canvas.width, height = canvas.height, left = 44, bottom = 20, top = 8, right = 8;
  context.clearRect(0, 0, width, height);
  const values = series.flatMap((s) => s.points.map((p) => p[1])).filter((v) => v != null);
  const yMax = Math.max(1, ...values) * 1.1;
  const x = (seconds) => left + ((seconds + xSpan) / xSpan) * (width - left - right);
  const y = (value) => height - bottom - (value / yMax) * (height - top - bottom);
  context.strokeStyle = "#deded8"; context.fillStyle = "#6b6b66"; context.font = "11px system-ui"; context.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const value = (yMax / 4) * i;
    context.beginPath(); context.moveTo(left, y(value)); context.lineTo(width - right, y(value)); context.stroke();
    context.fillText(value >= 100 ? value.toFixed(0) : value.toFixed(1), 4, y(value) + 4);
  }
  for (let seconds = -xSpan; seconds <= 0; seconds += xSpan / 5) {
    context.fillText(seconds === 0 ? "now" : seconds.toFixed(0) + " s", x(seconds) - 10, height - 5);
  }
  if (yLabel) context.fillText(yLabel, left + 4, top + 10);
  for (const s of series) {
    context.strokeStyle = s.color; context.lineWidth = s.width || 2; context.beginPath();
    let drawing = false;
    for (const [px, py] of s.points) {
      if (py == null) { drawing = false; continue; }
      if (drawing) context.lineTo(x(px), y(py)); else context.moveTo(x(px), y(py));
      drawing = true;
    }
    context.stroke();
    // Dots too: a lone point (one bucket with invocations) has no line to show it.
    context.fillStyle = s.color;
    for (const [px, py] of s.points) {
      if (py == null) continue;
      context.beginPath(); context.arc(x(px), y(py), 1.8, 0, 2 * Math.PI); context.fill();
    }
  }
}

// Predicted against measured, both axes logarithmic in ms, with the diagonal.
function scatterChart(canvas, points) {
  const context = canvas.getContext("2d");
  const width = canvas.width, height = canvas.height, pad = 34;
  context.clearRect(0, 0, width, height);
  // Each point is [predicted_us, measured_us, cold].
  const all = points.flatMap((p) => [p[0], p[1]]).filter((v) => v > 0);
  if (all.length === 0) return;
  const low = Math.log10(Math.min(...all) / 1.5), high = Math.log10(Math.max(...all) * 1.5);
  const scale = (us, size) => pad + ((Math.log10(Math.max(us, 1)) - low) / Math.max(high - low, 1e-9)) * (size - 2 * pad);
  const x = (us) => scale(us, width), y = (us) => height - scale(us, height);
  context.strokeStyle = "#deded8"; context.beginPath(); context.moveTo(x(10 ** low), y(10 ** low)); context.lineTo(x(10 ** high), y(10 ** high)); context.stroke();
  context.fillStyle = "#6b6b66"; context.font = "11px system-ui";
  context.fillText("predicted " + ms(10 ** low) + "–" + ms(10 ** high) + " ms →", pad, height - 6);
  context.save(); context.translate(11, height - pad); context.rotate(-Math.PI / 2); context.fillText("measured →", 0, 0); context.restore();
  for (const p of points) {
    context.fillStyle = p[2] ? "rgba(194,65,45,0.7)" : "rgba(47,126,188,0.6)";
    context.beginPath(); context.arc(x(p[0]), y(p[1]), 2.5, 0, 2 * Math.PI); context.fill();
  }
}

function legend(container, entries) {
  container.replaceChildren(...entries.map(([label, color]) => {
    const swatch = element("i"); swatch.style.background = color;
    return element("span", {}, swatch, label);
  }));
}

function renderFeed(state) {
  const feed = document.getElementById("feed");
  const status = !state.feed.connected ? "broker unreachable, retrying"
    : state.feed.reading ? "broker connected" : "connected, waiting for a worker to make the telemetry exchange";
  const last = state.feed.last_event_us ? "last event " + ago(state.now_us, state.feed.last_event_us) : "no event yet";
  feed.replaceChildren(
    element("span", { class: state.feed.connected && state.feed.reading ? "up" : "down", id: "feed-status", text: status }),
    ` · ${state.totals.events} events · ${last} · VMs created ${state.totals.vms_created}, destroyed ${state.totals.vms_destroyed}`);
  document.getElementById("window-seconds").textContent = state.window_seconds;
}

function renderWorkers(state) {
  const body = document.querySelector("#workers tbody");
  body.replaceChildren(...state.workers.map((w) => element("tr", { class: w.gone ? "worker gone" : "worker", "data-worker": w.worker },
    element("td", { text: w.worker }), element("td", { text: w.host }), element("td", { text: w.backend }),
    element("td", { class: "cpu", text: percent(w.cpu_util) }),
    element("td", { class: "memory", text: w.mem_total_mb ? `${w.mem_available_mb} of ${w.mem_total_mb} MiB` : `${w.mem_available_mb} MiB` }),
    element("td", { text: percent(w.mem_pressure) }),
    element("td", { text: `${bytesPerSecond(w.net_rx_bps)} / ${bytesPerSecond(w.net_tx_bps)}` }),
    element("td", { class: "vms", text: `${w.vms_idle} / ${w.vms_busy}` }),
    element("td", { text: w.pools.map((p) => `${p.profile} ${p.idle}/${p.busy}/${p.target}/${p.waiting}`).join(", ") }),
    element("td", { text: w.gone ? "gone, " + ago(state.now_us, w.last_seen_us) : ago(state.now_us, w.last_seen_us) }))));
}

function renderPools(state) {
  const container = document.getElementById("pools");
  container.replaceChildren(...state.pools.map((pool) => {
    // Each point is [unix_milliseconds, idle, busy, target, waiting].
    const keys = ["idle", "busy", "target", "waiting"];
    const newest = pool.points[pool.points.length - 1] || [0, 0, 0, 0, 0];
    const last = Object.fromEntries(keys.map((key, index) => [key, newest[index + 1]]));
    const canvas = element("canvas", { width: 320, height: 120 });
    const card = element("div", { class: "card pool", "data-pool": `${pool.worker}/${pool.profile}` },
      element("h3", { text: `${pool.profile} on ${pool.worker}` }),
      element("div", { class: "counts" },
        ...keys.map((key) => element("span", { class: key, text: `${key} ${last[key]}` }))),
      canvas);
    const series = keys.map((key, index) => ({
      color: colors[key], width: key === "target" ? 1 : 2,
      points: pool.points.map((p) => [(p[0] - state.now_us / 1e3) / 1e3, p[index + 1]]) }));
    lineChart(canvas, series, { xSpan: state.window_seconds });
    return card;
  }));
}

function renderRates(state) {
  const span = state.window_seconds, bucket = state.bucket_seconds, now = state.now_us / 1e6;
  const at = (r) => r.start_s + bucket - now;
  lineChart(document.getElementById("rates"), ["ok", "error", "timeout", "rejected"].map((status) => ({
    color: colors[status], points: state.rates.map((r) => [at(r), r[status] / bucket]) })), { xSpan: span, yLabel: "per s" });
  legend(document.getElementById("rates-legend"), ["ok", "error", "timeout", "rejected"].map((s) => [s, colors[s]]));
  const latest = [...state.rates].reverse().find((r) => r.warm + r.cold > 0);
  lineChart(document.getElementById("latency"), [
    ["warm p50", "warm_p50_ms", colors.warmP50], ["warm p99", "warm_p99_ms", colors.warmP99],
    ["cold p50", "cold_p50_ms", colors.coldP50], ["cold p99", "cold_p99_ms", colors.coldP99],
  ].map(([, key, color]) => ({ color, points: state.rates.map((r) => [at(r), r[key]]) })), { xSpan: span, yLabel: "ms" });
  legend(document.getElementById("latency-legend"), [["warm p50", colors.warmP50], ["warm p99", colors.warmP99],
    ["cold p50", colors.coldP50], ["cold p99", colors.coldP99]].map(([label, color]) => {
      const key = label.replace(" ", "_") + "_ms";
      return [latest && latest[key] != null ? `${label} ${latest[key]} ms` : label, color];
    }));
}

function candidatesTable(invocation) {
  return element("table", { class: "grid candidates" },
    element("thead", {}, element("tr", {}, ...["place", "warmth", "predicted ms", "± ms", "resource factor", "score", ""].map((h) => element("th", { text: h })))),
    element("tbody", {}, ...invocation.candidates.map((c) => element("tr", { class: c.chosen ? "candidate chosen" : "candidate" },
      element("td", { class: "place", text: c.place }), element("td", { text: c.warmth }),
      element("td", { class: "predicted", text: ms(c.predicted_us) }), element("td", { text: ms(c.uncertainty_us) }),
      element("td", { class: "resource-factor", text: c.resource_factor == null ? "–" : c.resource_factor.toFixed(3) }),
      element("td", { class: "score", text: c.suitability.toFixed(2) }), element("td", { text: c.chosen ? "chosen" : "" })))));
}

function renderInvocations(state) {
  const container = document.getElementById("invocations");
  if (firstRender && state.invocations.length > 0) openInvocations.add(state.invocations[0].id);
  // The newest 30 on the page; /api/state has the window's 50.
  container.replaceChildren(...state.invocations.slice(0, 30).map((inv) => {
    const details = element("details", { class: "invocation", "data-id": inv.id });
    if (openInvocations.has(inv.id)) details.open = true;
    details.addEventListener("toggle", () => details.open ? openInvocations.add(inv.id) : openInvocations.delete(inv.id));
    const measured = inv.exec_us + (inv.provision_us || 0);
    details.append(
      element("summary", {},
        element("span", { text: new Date(inv.at_us / 1000).toLocaleTimeString() }), element("span", { class: "method", text: inv.method }),
        element("span", { text: inv.worker }), element("span", { class: "status-" + inv.status, text: inv.status }),
        element("span", { text: inv.vm || "–" }), element("span", { text: inv.cold ? "cold" : "warm" }),
        element("span", { class: "measured", text: ms(measured) + " ms" }),
        element("span", { text: inv.predicted_us != null ? "pred. " + ms(inv.predicted_us) + " ms" : "" })),
      inv.candidates.length > 0 ? candidatesTable(inv) : element("p", { class: "placement-note", text: "no placement (refused before scoring)" }),
      element("p", { class: "placement-note", text:
        `model ${inv.model || "–"}; measured ${ms(measured)} ms (provisioning ${ms(inv.provision_us || 0)} + in the VM ${ms(inv.exec_us)}), ` +
        `${ms(inv.total_us)} ms in the worker in all` }));
    return details;
  }));
}

function renderScatter(state) {
  const container = document.getElementById("scatter");
  container.replaceChildren(...state.scatter.map((method) => {
    const canvas = element("canvas", { width: 320, height: 240 });
    const errors = method.points.filter((p) => p[1] > 0).map((p) => Math.abs(p[0] - p[1]) / p[1]);
    const mean = errors.length ? errors.reduce((a, b) => a + b, 0) / errors.length : 0;
    const card = element("div", { class: "card scatter", "data-method": method.method },
      element("h3", { text: method.method }),
      element("div", { class: "counts" }, element("span", { text: `${method.points.length} runs` }), element("span", { text: `mean error ${percent(mean)}` })),
      canvas);
    scatterChart(canvas, method.points);
    return card;
  }));
}

function renderVMEvents(state) {
  const body = document.querySelector("#vm-events tbody");
  body.replaceChildren(...state.vm_events.map((e) => element("tr", { class: "vm-event" },
    element("td", { text: new Date(e.at_us / 1000).toLocaleTimeString() }), element("td", { text: e.worker }),
    element("td", { class: "kind", text: e.kind }), element("td", { text: e.vm || "" }), element("td", { text: e.profile || "" }),
    element("td", { class: "reason", text: e.reason }), element("td", { text: e.detail }))));
}

function render(state) {
  renderFeed(state);
  renderWorkers(state);
  renderPools(state);
  renderRates(state);
  renderInvocations(state);
  renderScatter(state);
  renderVMEvents(state);
  firstRender = false;
  document.body.dataset.renderedAt = String(state.now_us);
}

fetch("api/state").then((response) => response.json()).then(render).catch(() => {});
// How many events and how many stream connections the page has had (the browser test reads
// them: live updates arrive over one stream, not by reconnecting).
document.body.dataset.events = "0";
document.body.dataset.streams = "0";
const events = new EventSource("events");
events.onopen = () => { document.body.dataset.streams = String(Number(document.body.dataset.streams) + 1); };
events.addEventListener("state", (message) => {
  document.body.dataset.events = String(Number(document.body.dataset.events) + 1);
  render(JSON.parse(message.data));
});
events.onerror = () => {
  const status = document.getElementById("feed-status");
  if (status) { status.textContent = "dashboard unreachable, retrying"; status.className = "down"; }
};
