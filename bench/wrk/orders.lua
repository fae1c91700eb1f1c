-- wrk script: POST /api/orders with a unique client_order_id per request.
--   wrk -t2 -c400 -d30s -s bench/wrk/orders.lua http://127.0.0.1:PORT
-- Prints one line "CHRISTMAS ..." with the figures christmas-bench reads.

local threads = {}
local run = tostring(os.time())

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  created = 0
  other = 0
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"client_order_id":"w%s-%d-%d","symbol":"ESZ6","side":"%s","type":"limit","quantity":%d,"limit_price":6000.25,"time_in_force":"day"}',
    run, tid, counter, (counter % 2 == 0) and "buy" or "sell", 1 + counter % 5)
  return wrk.format("POST", "/api/orders", {["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
  if status == 201 then
    created = created + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local created_total, other_total = 0, 0
  for _, t in ipairs(threads) do
    created_total = created_total + t:get("created")
    other_total = other_total + t:get("other")
  end
  io.write(string.format(
    "CHRISTMAS requests=%d created=%d other=%d duration_us=%d p50_us=%d p99_us=%d p999_us=%d socket_errors=%d\n",
    summary.requests, created_total, other_total, summary.duration,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
