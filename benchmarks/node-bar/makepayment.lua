-- wrk script: sends each prepared makePayment once, in file order split across wrk's threads.
-- REQUESTS (environment) names a file of lines "pspTransactionId<TAB>token<TAB>body" written by
-- `vipps-sim --export-requests`. Counts answers that are not 200 with "status":"OK" and no
-- errorMessage (every exported payment is an approved test card), and says if the file ran out
-- before the run did (then the last request is repeated, which a real worker answers from its
-- store without decrypting).
local threads = {}
local thread_count = 0

function setup(thread)
  thread:set("thread_index", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

local requests = {}
local next_index = 1
local not_ok = 0
local exhausted = 0

function init(args)
  local path = os.getenv("REQUESTS")
  local total = tonumber(os.getenv("WRK_THREADS") or "1")
  local i = 0
  for line in io.lines(path) do
    if i % total == thread_index then
      local _, token, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
      requests[#requests + 1] = wrk.format("POST", os.getenv("MAKE_PAYMENT_PATH") or "/makePayment",
        { ["Authorization"] = token, ["Content-Type"] = "application/json" }, body)
    end
    i = i + 1
  end
end

function request()
  local r = requests[next_index]
  if next_index < #requests then next_index = next_index + 1 else exhausted = exhausted + 1 end
  return r
end

function response(status, headers, body)
  -- An OK has no errorMessage (the API's; a body with both is no approval). Which request an
  -- answer is for wrk does not say, so its pspTransactionId is not checked here (vipps-sim does).
  if status ~= 200 or not body:find('"status":"OK"', 1, true) or body:find('errorMessage', 1, true) then not_ok = not_ok + 1 end
  wrk.thread:set("not_ok", not_ok)
  wrk.thread:set("exhausted", exhausted)
end

function done(summary, latency, requests)
  local bad, repeated = 0, 0
  for _, t in ipairs(threads) do
    bad = bad + (t:get("not_ok") or 0)
    repeated = repeated + (t:get("exhausted") or 0)
  end
  -- Requests without an answer (connect, read and write errors) are not in the latencies: they
  -- count as not ok, and on their own at the end of the line. (wrk's timeouts are answers slower
  -- than --timeout that still came and were counted: in the latencies, not here.)
  local e = summary.errors
  local errors = e.connect + e.read + e.write
  io.write(string.format("WRK requests %d seconds %.3f p50_ms %.3f p90_ms %.3f p99_ms %.3f max_ms %.3f not_ok %d repeated %d errors %d\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, bad + errors, repeated, errors))
end
