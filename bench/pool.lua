-- wrk script: replay a pool of pre-signed request heads (bench/pool.py), each at most
-- once when `unique` is set (replay protection stays on), with one shared body.
--   wrk ... -s bench/pool.lua -- POOL_FILE BODY_BYTES unique|cycle
-- Prints one JSON line (prefixed "BENCH-JSON ") with every figure the harness reads.
local threads = {}
local counter = 0

function setup(thread)
   thread:set("id", counter)
   table.insert(threads, thread)
   counter = counter + 1
end

function init(args)
   local f = assert(io.open(args[1], "rb"))
   local data = f:read("*a")
   f:close()
   local nthreads = counter > 0 and counter or 1
   heads, n, i, sent, exhausted = {}, 0, 0, 0, 0
   local k = 0
   for head in data:gmatch("[^%z]+") do
      if k % nthreads == id then
         n = n + 1
         heads[n] = head
      end
      k = k + 1
   end
   body = string.rep("x", tonumber(args[2]))
   unique = args[3] == "unique"
end

function request()
   i = i + 1
   if i > n then
      if unique then
         -- never send a signed request twice: stop this thread (counted as exhausted)
         exhausted = 1
         wrk.thread:stop()
         return heads[n] .. body  -- a replay the target refuses; not counted as sent
      end
      i = 1
   end
   sent = sent + 1
   return heads[i] .. body
end

function done(summary, latency, requests)
   local sent_total, exhausted_total, pool_total = 0, 0, 0
   for _, t in ipairs(threads) do
      sent_total = sent_total + t:get("sent")
      exhausted_total = exhausted_total + t:get("exhausted")
      pool_total = pool_total + t:get("n")
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH-JSON {"duration_us": %d, "requests": %d, "bytes": %d, "sent": %d, ' ..
      '"pool": %d, "exhausted_threads": %d, "errors": {"connect": %d, "read": %d, ' ..
      '"write": %d, "status": %d, "timeout": %d}, "latency_us": {"mean": %.1f, ' ..
      '"max": %d, "p50": %d, "p90": %d, "p99": %d, "p99.9": %d}}\n',
      summary.duration, summary.requests, summary.bytes, sent_total, pool_total,
      exhausted_total, e.connect, e.read, e.write, e.status, e.timeout, latency.mean,
      latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9)))
end
