// The market panel: 1-minute candles from the bars endpoint, kept current by the live
// feed (GET /api/stream, Server-Sent Events), and the latest trade and quote.

import { CandlestickSeries, createChart } from "lightweight-charts";
import { call } from "./api.js";

const MINUTE = 60;
const fmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 6 });

/** Seconds of the minute holding `timeNs` (a number: a few hundred ns off is harmless). */
function minuteOf(timeNs) {
  return Math.floor(timeNs / 1e9 / MINUTE) * MINUTE;
}

export class MarketPanel {
  constructor(el) {
    this.el = el;
    this.chart = createChart(el.chart, {
      autoSize: true,
      layout: { attributionLogo: false },
      timeScale: { timeVisible: true, secondsVisible: false },
    });
    this.series = this.chart.addSeries(CandlestickSeries, {});
    this.bars = [];
    this.source = null;
    this.ticks = 0;
    this.gaps = 0;
    // For tests and the console: how many bars the chart holds.
    window.__christmasBars = () => this.series.data().length;
  }

  /** Shows `symbol`: its bars, then its live ticks. */
  async show(symbol) {
    this.symbol = symbol;
    this.el.title.textContent = symbol;
    this.ticks = 0;
    this.gaps = 0;
    this.el.lastTrade.textContent = "—";
    this.el.bid.textContent = "—";
    this.el.ask.textContent = "—";
    this.counts();
    // Open the feed first, so nothing is missed between the bars and the first event; ticks
    // older than the last bar are ignored by `onTrade`.
    this.listen(symbol);
    const { status, json } = await call("GET", `/api/market-data/${encodeURIComponent(symbol)}/bars?interval=1m`);
    if (symbol !== this.symbol) return;
    if (status !== 200) {
      this.status(`bars: ${json.error ?? status}`, "bad");
      return;
    }
    const loaded = json.bars.map((b) => ({
      // Bars start on a minute: rounding undoes the float error of the ns number.
      time: Math.round(b.start_ns / 1e9),
      open: b.open,
      high: b.high,
      low: b.low,
      close: b.close,
    }));
    // Bars built from ticks that arrived while the request ran are kept.
    const lastLoaded = loaded.at(-1)?.time ?? 0;
    this.bars = loaded.concat(this.bars.filter((b) => b.time > lastLoaded));
    this.series.setData(this.bars);
    this.chart.timeScale().fitContent();
  }

  listen(symbol) {
    this.source?.close();
    this.bars = [];
    this.series.setData([]);
    const source = new EventSource(`/api/stream?symbols=${encodeURIComponent(symbol)}`);
    this.source = source;
    source.onopen = () => this.status("live", "ok");
    source.onerror = () => {
      // EventSource reconnects by itself and sends Last-Event-ID: the feed resumes.
      this.status(source.readyState === EventSource.CLOSED ? "offline" : "reconnecting…", "bad");
    };
    source.addEventListener("trade", (e) => this.onTrade(JSON.parse(e.data)));
    source.addEventListener("quote", (e) => this.onQuote(JSON.parse(e.data)));
    source.addEventListener("gap", (e) => {
      const g = JSON.parse(e.data);
      this.gaps += 1;
      this.counts();
      this.status(`gap in ${g.kind}s: ${g.reason}`, "warn");
    });
    source.addEventListener("dropped", (e) => {
      this.status(`dropped: ${JSON.parse(e.data).reason}; resuming`, "warn");
    });
    source.addEventListener("closing", () => this.status("daemon restarting; resuming", "warn"));
  }

  onTrade(message) {
    for (const t of message.trades) {
      const time = minuteOf(t.time_ns);
      const last = this.bars.at(-1);
      if (last && time < last.time) continue;
      if (last && time === last.time) {
        last.high = Math.max(last.high, t.price);
        last.low = Math.min(last.low, t.price);
        last.close = t.price;
        this.series.update({ ...last });
      } else {
        const bar = { time, open: t.price, high: t.price, low: t.price, close: t.price };
        this.bars.push(bar);
        this.series.update({ ...bar });
      }
    }
    const t = message.trades.at(-1);
    if (t) {
      const side = { B: "buy", S: "sell" }[t.side] ?? "";
      this.el.lastTrade.textContent = `${fmt.format(t.price)} × ${fmt.format(t.volume)} ${side}`;
      this.el.lastTrade.dataset.price = String(t.price);
    }
    this.ticks += message.trades.length;
    this.counts();
  }

  onQuote(message) {
    const q = message.quotes.at(-1);
    if (q) {
      this.el.bid.textContent = `${fmt.format(q.bid)} (${fmt.format(q.bid_size)})`;
      this.el.ask.textContent = `${fmt.format(q.ask)} (${fmt.format(q.ask_size)})`;
    }
    this.ticks += message.quotes.length;
    this.counts();
  }

  counts() {
    this.el.ticks.textContent = String(this.ticks);
    this.el.gaps.textContent = String(this.gaps);
  }

  status(text, tone) {
    this.el.status.textContent = text;
    this.el.status.dataset.tone = tone;
  }
}
