"""Schemathesis hooks for scripts/schemathesis.sh (loaded through SCHEMATHESIS_HOOKS).

They drop exactly the failures that are rules OpenAPI cannot state, and nothing else:

- ST202 (schema-valid request rejected) where the 400 is for a rule between two
  parameters: POST /api/ticks takes `Idempotency-Key` or `Producer-Id` with `Producer-Seq`,
  not a mix of them; GET /api/market-data/{symbol}/bars refuses `from` after `to`.
- ST202 for POST /api/ticks where `time_ns` or `exchange_seq` was sent as a JSON number
  with a decimal point or exponent (`-3670.0`): JSON Schema counts that as an integer,
  the server refuses it rather than round a nanosecond time through a double.
- ST301 (deleted resource still available) for DELETE /api/orders/{id}: DELETE cancels an
  order, which stays readable with status `cancelled`.

Every dropped failure is counted in schemathesis' summary. So that POST /api/ticks is not
mostly refused for these rules, the map hooks also make its generated requests keep them
(one way of naming the producer; integers written as integers) where they apply; the
filter stays for the phases that do not run map hooks.
"""

import os
import sys

import schemathesis

PRODUCER_HEADERS = {"idempotency-key", "producer-id", "producer-seq"}


def _json(response):
    try:
        return response.json()
    except Exception:  # not JSON: never dropped
        return None


def _headers(case):
    return {k.lower(): v for k, v in (case.headers or {}).items()}


def _producer_mix(case):
    """The headers name no producer or one way, yet the server says they do not."""
    given = PRODUCER_HEADERS & set(_headers(case))
    return given not in (set(), {"idempotency-key"}, {"producer-id", "producer-seq"})


def _float_integer(case, index, field):
    """Tick `index` of the request carries `field` as a float (not an int)."""
    ticks = case.body if isinstance(case.body, list) else [case.body]
    if not isinstance(index, int) or not 0 <= index < len(ticks):
        return False
    tick = ticks[index]
    return isinstance(tick, dict) and isinstance(tick.get(field), float)


def _is_ticks(context):
    op = context.operation
    return op is not None and op.method.upper() == "POST" and op.path == "/api/ticks"


@schemathesis.hook
def map_headers(context, headers):
    """POST /api/ticks: keep Idempotency-Key alone, or Producer-Id with Producer-Seq."""
    if not _is_ticks(context) or headers is None:
        return headers
    names = {k.lower(): k for k in headers}
    given = PRODUCER_HEADERS & set(names)
    if given in (set(), {"idempotency-key"}, {"producer-id", "producer-seq"}):
        return headers
    if "producer-id" in given and "producer-seq" in given:
        headers.pop(names["idempotency-key"], None)
    else:
        for name in given - {"idempotency-key"}:
            headers.pop(names[name], None)
    return headers


@schemathesis.hook
def map_body(context, body):
    """POST /api/ticks: `time_ns` and `exchange_seq` as JSON integers."""
    if not _is_ticks(context):
        return body
    for tick in body if isinstance(body, list) else [body]:
        for field in ("time_ns", "exchange_seq"):
            if isinstance(tick, dict) and isinstance(tick.get(field), float):
                tick[field] = max(-(2**63), min(2**63 - 1, int(tick[field])))
    return body


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """True keeps the failure; False drops it (printed with SCHEMATHESIS_HOOKS_VERBOSE=1)."""
    keep = _keep(failure, case, response)
    if not keep and os.environ.get("SCHEMATHESIS_HOOKS_VERBOSE"):
        print(f"dropped {failure.code} {case.method} {case.operation.path}: "
              f"{response.text[:160]} headers={sorted(_headers(case))}", file=sys.stderr)
    return keep


def _keep(failure, case, response):
    label = f"{case.method.upper()} {case.operation.path}"
    body = _json(response)
    if failure.code == "ST202" and response.status_code == 400 and isinstance(body, dict):
        field = body.get("field")
        if label == "POST /api/ticks" and field in ("Idempotency-Key", "Producer-Id", "Producer-Seq"):
            return not _producer_mix(case)
        if label == "POST /api/ticks" and field in ("time_ns", "exchange_seq"):
            return not _float_integer(case, body.get("index"), field)
        if label == "GET /api/market-data/{symbol}/bars" and field == "from":
            return body.get("error") != "must not be after to"
    if failure.code == "ST301" and "/api/orders/" in str(getattr(failure, "free", "")):
        return not (isinstance(body, dict) and body.get("status") == "cancelled")
    return True
