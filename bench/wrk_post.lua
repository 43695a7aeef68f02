-- wrk script: POST a small chat completion to /v1/chat/completions.
--
--   wrk -t2 -c64 -d10s -s bench/wrk_post.lua http://127.0.0.1:PORT/v1/chat/completions -- MODEL [stream|t0]
--
-- With "stream" the body asks for an SSE stream (with usage) and every response body is checked for
-- "data: [DONE]"; responses without it are counted as "incomplete".
-- At the end one machine-readable line is printed:  WRKJSON {...}

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

local streaming = false
incomplete = 0  -- global: read per thread in done() via thread:get

function init(args)
   local model = args[1] or "bench-fast"
   streaming = args[2] == "stream"
   local deterministic = args[2] == "t0"  -- temperature 0: cacheable by the response cache
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["Authorization"] = "Bearer x"
   local extra = ""
   if streaming then
      extra = ', "stream": true, "stream_options": {"include_usage": true}'
   elseif deterministic then
      extra = ', "temperature": 0'
   end
   wrk.body = '{"model": "' .. model .. '", "messages": [{"role": "user", "content": "Say hello"}]' .. extra .. '}'
end

if os.getenv("WRK_CHECK_DONE") == "1" then
   -- Defining response() makes wrk hand every body to Lua, so only do it when asked.
   function response(status, headers, body)
      if status == 200 and not string.find(body, "data: [DONE]", 1, true) then
         incomplete = incomplete + 1
      end
   end
end

function done(summary, latency, requests)
   local bad = 0
   for _, t in ipairs(threads) do
      bad = bad + (t:get("incomplete") or 0)
   end
   local e = summary.errors
   io.write(string.format(
      'WRKJSON {"requests": %.0f, "duration_us": %.0f, "bytes": %.0f, "connect": %.0f, "read": %.0f, '
         .. '"write": %.0f, "status": %.0f, "timeout": %.0f, "incomplete": %.0f, '
         .. '"lat_p50_us": %.0f, "lat_p99_us": %.0f, "lat_max_us": %.0f, "lat_mean_us": %.1f}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout, bad,
      latency:percentile(50), latency:percentile(99), latency.max, latency.mean))
end
