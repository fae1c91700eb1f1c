"""Locust version of the `orders` scenario of christmas-bench (not run by the harness).

POST /api/orders with a unique client_order_id per request (like bench/wrk/orders.lua), and
GET /api/market-data?symbol=ESZ6 (like the harness's siege run), against a running
christmas-ingest:

    pip install locust
    locust -f bench/locust/locustfile.py --headless -u 200 -r 50 -t 60s \
        --host http://127.0.0.1:8080

Set CHRISTMAS_API_KEY when the daemon requires keys (sent as `Authorization: Bearer …`).
Locust's Python clients need far more CPU per request than wrk: on the 2-core machine of
bench/RESULTS.md they saturate long before the daemon does, which is why the harness
measures with wrk and siege. Use this file to reproduce the load shape from another host.
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
