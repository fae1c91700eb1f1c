// The order ticket (POST /api/orders) and the blotter of the account's orders
// (GET /api/orders, DELETE /api/orders/{id} to cancel).

import { call } from "./api.js";

const OPEN = new Set(["accepted", "working", "partially_filled"]);

/** Wires the ticket; `symbol()` names the symbol shown; `placed()` runs after an answer. */
export function orderTicket(form, answer, symbol, placed) {
  const type = form.elements.type;
  const price = form.elements.limit_price;
  const sync = () => {
    price.disabled = type.value === "market";
    price.required = type.value === "limit";
  };
  type.addEventListener("change", sync);
  sync();
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = form.elements;
    const order = {
      client_order_id: `web-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`,
      symbol: symbol(),
      side: f.side.value,
      type: f.type.value,
      quantity: Number(f.quantity.value),
      time_in_force: f.time_in_force.value,
    };
    if (order.type === "limit") order.limit_price = Number(f.limit_price.value);
    form.elements.place.disabled = true;
    const { status, json } = await call("POST", "/api/orders", order);
    form.elements.place.disabled = false;
    if (status === 200 || status === 201) {
      answer.dataset.tone = "ok";
      answer.dataset.orderId = String(json.id);
      answer.textContent = `#${json.id} ${json.side} ${json.quantity} ${json.symbol}: ${json.status}`;
    } else {
      answer.dataset.tone = "bad";
      delete answer.dataset.orderId;
      answer.textContent = `${status || "network"}: ${json.error ?? "refused"}${json.field ? ` (${json.field})` : ""}`;
    }
    placed();
  });
}

/** Keeps the blotter in step: `refresh()` reloads it; a cancel button per open order. */
export function blotter(tbody, answer) {
  const cell = (text) => {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  };
  async function cancel(id) {
    const { status, json } = await call("DELETE", `/api/orders/${id}`);
    answer.dataset.tone = status < 300 ? "ok" : "bad";
    answer.textContent = status < 300 ? `#${id}: ${json.status}` : `cancel #${id}: ${json.error ?? status}`;
    await refresh();
  }
  async function refresh() {
    const { status, json } = await call("GET", "/api/orders?limit=50");
    if (status !== 200) {
      answer.dataset.tone = "bad";
      answer.textContent = `orders: ${json.error ?? status}`;
      return;
    }
    const rows = json.orders.map((o) => {
      const tr = document.createElement("tr");
      tr.dataset.orderId = String(o.id);
      tr.dataset.status = o.status;
      tr.append(
        cell(o.id),
        cell(o.symbol),
        cell(o.side),
        cell(o.type),
        cell(o.quantity),
        cell(o.limit_price ?? "mkt"),
        cell(o.time_in_force),
        cell(o.status),
      );
      const td = document.createElement("td");
      if (OPEN.has(o.status)) {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = "Cancel";
        b.setAttribute("aria-label", `Cancel order ${o.id}`);
        b.addEventListener("click", () => cancel(o.id));
        td.append(b);
      }
      tr.append(td);
      return tr;
    });
    tbody.replaceChildren(...rows);
  }
  return refresh;
}
