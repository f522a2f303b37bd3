-- wrk script for the berth benchmarks: sets the method and Accept header from the
-- environment and prints one machine-readable result line when the run is over.
--   BENCH_WRK_METHOD  GET or HEAD (default GET)
--   BENCH_WRK_ACCEPT  Accept header value (optional)
--   BENCH_WRK_AUTH    Authorization header value (optional)

wrk.method = os.getenv("BENCH_WRK_METHOD") or "GET"

local accept = os.getenv("BENCH_WRK_ACCEPT")
if accept and accept ~= "" then
   wrk.headers["Accept"] = accept
end

local auth = os.getenv("BENCH_WRK_AUTH")
if auth and auth ~= "" then
   wrk.headers["Authorization"] = auth
end

function done(summary, latency, requests)
   local e = summary.errors
   local errors = e.connect + e.read + e.write + e.status + e.timeout
   io.write(string.format("bench-result %d %d %d %d\n",
      summary.requests, summary.duration, latency:percentile(99), errors))
end
