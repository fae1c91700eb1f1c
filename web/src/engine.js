// The engine panel: GET /api/engine every second; rates are the change between two reads.

import { call } from "./api.js";

const n = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const ms = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const pct = new Intl.NumberFormat(undefined, { style: "percent", maximumFractionDigits: 1 });

export function enginePanel(dl) {
  let previous = null;
  const sum = (e, f) => (e.trades[f] ?? 0) + (e.quotes[f] ?? 0);
  return async function refresh() {
    const { status, json: e } = await call("GET", "/api/engine");
    if (status !== 200) {
      dl.replaceChildren(row("engine", e.error ?? `HTTP ${status}`));
      return;
    }
    const rate = (f) => {
      if (!previous) return "…";
      const dt = e.uptime_s - previous.uptime_s;
      return dt > 0 ? `${n.format((sum(e, f) - sum(previous, f)) / dt)}/s` : "…";
    };
    const spool = sum(e, "spool_max_bytes");
    const replica = e.replica.configured
      ? `${e.replica.reads_on_replica ? "reads on replica" : "reads on primary (replica lags > " + e.replica.max_lag_ms + " ms or down)"}`
      : "no replica";
    const lag = !e.replica.configured
      ? "no replica"
      : e.replica.lag_ms == null
        ? "unreachable"
        : `${ms.format(e.replica.lag_ms)} ms`;
    dl.replaceChildren(
      row("ticks in", rate("accepted")),
      row("committed", rate("committed")),
      row("ring depth", `${n.format(sum(e, "ring_depth"))} / ${n.format(sum(e, "ring_capacity"))}`),
      row("spool", spool ? pct.format(sum(e, "spool_bytes") / spool) : "off"),
      row("fan-out drops", n.format(sum(e, "fanout_dropped"))),
      row("replica", replica),
      row("replica lag", lag),
      row("stream clients", e.stream ? `${e.stream.clients} (${e.stream.dropped_slow} dropped)` : "no Redis"),
    );
    previous = e;
  };
}

function row(name, value) {
  const div = document.createElement("div");
  const dt = document.createElement("dt");
  const dd = document.createElement("dd");
  dt.textContent = name;
  dd.textContent = value;
  div.append(dt, dd);
  return div;
}
