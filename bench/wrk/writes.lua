-- wrk script for the write-rate benchmark (bench/measurements/raft.sh): every request
-- is a new write, and one machine-readable result line is printed at the end.
--   BENCH_WRK_WRITES  "berth": PUT of a new small OCI manifest, by a new tag, into
--                     repository bench/puts; "etcd": a new key through etcd's v3 JSON
--                     gateway (POST /v3/kv/put)
--   BENCH_WRK_PREFIX  makes names unique across the wrk processes of one run
--   BENCH_WRK_CONFIG  berth: "DIGEST SIZE" of the config blob the manifests name,
--                     already in bench/puts

local kind = os.getenv("BENCH_WRK_WRITES") or "berth"
local prefix = os.getenv("BENCH_WRK_PREFIX") or "w"
local config_digest, config_size = (os.getenv("BENCH_WRK_CONFIG") or ""):match("(%S+)%s+(%d+)")

-- Threads are numbered in setup, so that names differ between them.
local threads = 0
function setup(thread)
   threads = threads + 1
   thread:set("thread_id", threads)
end

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(s)
   local out = {}
   for i = 1, #s, 3 do
      local a, b, c = s:byte(i, i + 2)
      local n = a * 65536 + (b or 0) * 256 + (c or 0)
      for k = 3, 0, -1 do
         local at = math.floor(n / 64 ^ k) % 64 + 1
         out[#out + 1] = alphabet:sub(at, at)
      end
      if not b then out[#out - 1], out[#out] = "=", "=" elseif not c then out[#out] = "=" end
   end
   return table.concat(out)
end

-- About the size of the berth manifest, so both sides move similar bytes.
local filler = string.rep("v", 300)
local counter = 0

function request()
   counter = counter + 1
   local name = string.format("%s-%d-%d", prefix, thread_id or 0, counter)
   if kind == "etcd" then
      local body = string.format('{"key":"%s","value":"%s"}', base64("bench/" .. name), base64(filler))
      return wrk.format("POST", "/v3/kv/put", { ["Content-Type"] = "application/json" }, body)
   end
   local body = string.format(
      '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",' ..
      '"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},' ..
      '"layers":[],"annotations":{"n":"%s"}}', config_digest, config_size, name)
   return wrk.format("PUT", "/v2/bench/puts/manifests/" .. name,
      { ["Content-Type"] = "application/vnd.oci.image.manifest.v1+json" }, body)
end

function done(summary, latency, requests)
   local e = summary.errors
   local errors = e.connect + e.read + e.write + e.status + e.timeout
   io.write(string.format("bench-result %d %d %d %d\n",
      summary.requests, summary.duration, latency:percentile(99), errors))
end
