"""Locust version of the `orders` scenario of christmas-bench: the seed's mix.

POST /api/orders with a unique client_order_id per request (like bench/wrk/orders.lua), and
GET /api/market-data?symbol=ESZ6 (like the harness's siege run), 4 : 1. `christmas-bench
orders` (and `all`) runs it headless against its daemon from the bench's venv
(.state/bench-venv, where the bench installs Locust) and puts its figures in the table:

    locust -f bench/locust/locustfile.py --headless -u 100 -r 100 -t 30s \
        --host http://127.0.0.1:8080 --csv /tmp/locust

Set CHRISTMAS_API_KEY when the daemon requires keys (sent as `Authorization: Bearer …`).
Locust's Python clients need far more CPU per request than wrk: on the 2-core machine of
bench/RESULTS.md they saturate long before the daemon does, so its figures measure Locust
as much as the daemon (the open-loop generator and wrk measure the daemon's capacity). Use
this file to reproduce the load shape from another host.
"""

import itertools
import os
import uuid

from locust import HttpUser, between, task

API_KEY = os.environ.get("CHRISTMAS_API_KEY", "")
RUN = uuid.uuid4().hex[:8]
COUNTER = itertools.count(1)


class Trader(HttpUser):
    # Closed loop, as wrk and siege -b: the next request as soon as the last is answered.
    wait_time = between(0, 0)

    def on_start(self):
        if API_KEY:
            self.client.headers["Authorization"] = f"Bearer {API_KEY}"

    @task(4)
    def place_order(self):
        n = next(COUNTER)
        order = {
            "client_order_id": f"locust-{RUN}-{n}",
            "symbol": "ESZ6",
            "side": "buy" if n % 2 == 0 else "sell",
            "type": "limit",
            "quantity": 1 + n % 5,
            "limit_price": 6000.25,
            "time_in_force": "day",
        }
        with self.client.post("/api/orders", json=order, name="POST /api/orders",
                              catch_response=True) as r:
            if r.status_code != 201:
                r.failure(f"status {r.status_code}: {r.text[:200]}")

    @task(1)
    def latest(self):
        self.client.get("/api/market-data?symbol=ESZ6", name="GET /api/market-data")
