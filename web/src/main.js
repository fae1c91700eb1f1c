// The page: wires the panels, the symbol picker, the key and the keyboard shortcuts
// ("/" symbol, "o" order ticket).

import "./style.css";
import { apiKey, saveKey } from "./api.js";
import { enginePanel } from "./engine.js";
import { MarketPanel } from "./market.js";
import { blotter, orderTicket } from "./orders.js";

const $ = (id) => document.getElementById(id);
const SYMBOL = "christmas.symbol";

const market = new MarketPanel({
  chart: $("chart"),
  title: $("market-symbol"),
  lastTrade: $("last-trade"),
  bid: $("bid"),
  ask: $("ask"),
  ticks: $("tick-count"),
  gaps: $("gap-count"),
  status: $("feed-status"),
});

const symbolInput = $("symbol");
function showSymbol(symbol) {
  symbol = symbol.trim();
  if (!symbol) return;
  localStorage.setItem(SYMBOL, symbol);
  symbolInput.value = symbol;
  const url = new URL(location.href);
  url.searchParams.set("symbol", symbol);
  history.replaceState(null, "", url);
  market.show(symbol);
}
$("symbol-form").addEventListener("submit", (e) => {
  e.preventDefault();
  showSymbol(symbolInput.value);
});
$("symbols").append(
  ...["ESU4", "SYM0000", "SYM0001", "SYM0002"].map((s) => Object.assign(document.createElement("option"), { value: s })),
);

const keyInput = $("key");
keyInput.value = apiKey() ?? "";
const refreshOrders = blotter($("orders"), $("blotter-answer"));
const refreshEngine = enginePanel($("engine-figures"));
orderTicket($("order-form"), $("order-answer"), () => market.symbol, refreshOrders);

let started = false;
/** Loads the panels and keeps them fresh; runs once a key (possibly empty) is saved. */
function start() {
  showSymbol(symbolInput.value || initialSymbol());
  refreshOrders();
  refreshEngine();
  if (started) return;
  started = true;
  setInterval(refreshEngine, 1000);
  setInterval(refreshOrders, 5000);
}

function initialSymbol() {
  return new URLSearchParams(location.search).get("symbol") ?? localStorage.getItem(SYMBOL) ?? "SYM0000";
}

$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  saveKey(keyInput.value.trim());
  // The stream's cookie changed: start, or reconnect with it.
  start();
});

document.addEventListener("keydown", (e) => {
  const typing = e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement;
  if (typing || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === "/") {
    e.preventDefault();
    symbolInput.select();
  } else if (e.key === "o") {
    e.preventDefault();
    $("quantity").select();
  }
});

symbolInput.value = initialSymbol();
if (apiKey() === null) {
  // Nothing is asked of the daemon before the key is known: a keyed daemon would only
  // answer 401s.
  $("feed-status").textContent = "enter your API key (leave it empty if the daemon needs none) and press Enter";
  keyInput.focus();
} else {
  saveKey(apiKey());
  start();
}
