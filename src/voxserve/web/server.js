// Server view: /health and /metrics (both open), polled while the tab is shown.

import { errorText, showError } from "./api.js";

const $ = (id) => document.getElementById(id);
const PERIOD_MS = 2000;
let timer = null;

/** Prometheus text as {metric: {model: value}} for the per-model series we show. */
export function parseMetrics(text) {
  const out = {};
  for (const line of text.split("\n")) {
    const match = /^(voxserve_[a-z_]+?)(?:_total)?\{([^}]*)\} ([0-9.e+-]+|NaN)$/.exec(line);
    if (!match) continue;
    const model = /model="([^"]*)"/.exec(match[2])?.[1];
    if (model === undefined) continue;
    (out[match[1]] ||= {})[model] = ((out[match[1]] || {})[model] || 0) + Number(match[3]);
  }
  return out;
}

async function text(path) {
  const response = await fetch(path);
  const body = await response.text();
  if (!response.ok) throw new Error(errorText(response.status, response.statusText, body));
  return body;
}

const sum = (series) => Object.values(series || {}).reduce((a, b) => a + b, 0);

async function refresh() {
  try {
    const [health, metrics] = await Promise.all([text("/health").then(JSON.parse), text("/metrics").then(parseMetrics)]);
    $("srv-status").textContent = health.status;
    $("srv-busy").textContent = health.busy_workers;
    $("srv-queue").textContent = sum(metrics.voxserve_queue_depth);
    $("srv-slots").textContent = sum(metrics.voxserve_slots_busy);
    const loaded = health.loaded_models.map((id) => Object.assign(document.createElement("li"), { textContent: id }));
    if (!loaded.length) loaded.push(Object.assign(document.createElement("li"), { textContent: "none yet (models load on first use)" }));
    $("srv-models").replaceChildren(...loaded);
    const names = new Set(["voxserve_queue_depth", "voxserve_slots_busy", "voxserve_admitted", "voxserve_rejected", "voxserve_audio_seconds"]
      .flatMap((m) => Object.keys(metrics[m] || {})));
    const rows = [...names].sort().map((model) => {
      const row = document.createElement("tr");
      const cells = [model, ...["voxserve_queue_depth", "voxserve_slots_busy", "voxserve_admitted", "voxserve_rejected"]
        .map((m) => metrics[m]?.[model] ?? 0), (metrics.voxserve_audio_seconds?.[model] ?? 0).toFixed(1)];
      row.replaceChildren(...cells.map((c) => Object.assign(document.createElement("td"), { textContent: c })));
      return row;
    });
    $("srv-table").tBodies[0].replaceChildren(...rows);
    $("srv-updated").textContent = `Updated ${new Date().toLocaleTimeString()}; refreshed every 2 s while this tab is open.`;
    showError($("srv-error"), "");
  } catch (err) {
    showError($("srv-error"), `Could not read the server's state: ${err.message}`);
  }
}

export function initServer() {
  document.addEventListener("tabchange", (e) => {
    clearInterval(timer);
    timer = null;
    if (e.detail === "server") {
      refresh();
      timer = setInterval(() => { if (!document.hidden) refresh(); }, PERIOD_MS);
    }
  });
}
