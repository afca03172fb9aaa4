-- wrk script for bench/load.sh: like the peers' bench.lua (bearer token from BENCH_TOKEN), and
-- it also counts the answers by status, so a run can prove that every answer was, say, 200 or 403.
-- Prints:  RESULT rps=... p50_ms=... p99_ms=... max_ms=... requests=... sock_errors=... statuses=200:n,403:m
local token = os.getenv("BENCH_TOKEN") or ""
local method = os.getenv("BENCH_METHOD") or ""
local body = os.getenv("BENCH_BODY") or ""
local ctype = os.getenv("BENCH_CTYPE") or ""

if method ~= "" then wrk.method = method end
if token ~= "" and token ~= "-" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
if body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = (ctype ~= "" and ctype) or "application/x-www-form-urlencoded"
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  counts = {}
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    for status, n in pairs(c) do
      total[status] = (total[status] or 0) + n
    end
  end
  local keys = {}
  for status, _ in pairs(total) do table.insert(keys, status) end
  table.sort(keys)
  local parts = {}
  for _, status in ipairs(keys) do table.insert(parts, status .. ":" .. total[status]) end
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "RESULT rps=%.0f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f requests=%d sock_errors=%d statuses=%s\n",
    summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.requests, e.connect + e.read + e.write + e.timeout, table.concat(parts, ",")))
end
