-- wrk script: POST /api/orders with a unique client_order_id per request.
--   wrk -t2 -c400 -d30s -s bench/wrk/orders.lua http://127.0.0.1:PORT
-- Prints one line "CHRISTMAS ..." with the figures christmas-bench reads.
--
-- wrk shares the machine with the server it loads, so the script is kept cheap: each
-- request is one string concatenation (not wrk.format's header table), and there is no
-- response() callback, which would make wrk build a Lua table of every response's headers.
-- wrk itself counts answers with a status of 400 or more (summary.errors.status); the
-- rest are counted as `ok`. christmas-bench checks afterwards that every `ok` is a new row
-- in `orders` (the ids are unique, so a 200 "existing" answer would show up as a row
-- missing).

local threads = {}
local run = tostring(os.time())

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  local host = wrk.port and (wrk.host .. ":" .. wrk.port) or wrk.host
  head = "POST /api/orders HTTP/1.1\r\nHost: " .. host ..
    "\r\nContent-Type: application/json\r\nContent-Length: "
  id_prefix = '{"client_order_id":"w' .. run .. "-" .. tid .. "-"
end

function request()
  counter = counter + 1
  local side = (counter % 2 == 0) and "buy" or "sell"
  local body = id_prefix .. counter .. '","symbol":"ESZ6","side":"' .. side ..
    '","type":"limit","quantity":' .. (1 + counter % 5) ..
    ',"limit_price":6000.25,"time_in_force":"day"}'
  return head .. #body .. "\r\n\r\n" .. body
end

function done(summary, latency, requests)
  local refused = summary.errors.status
  io.write(string.format(
    "CHRISTMAS requests=%d ok=%d other=%d duration_us=%d p50_us=%d p99_us=%d p999_us=%d socket_errors=%d\n",
    summary.requests, summary.requests - refused, refused, summary.duration,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
