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

Every dropped failure is counted in schemathesis' summary.
"""

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


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """True keeps the failure; False drops it."""
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
