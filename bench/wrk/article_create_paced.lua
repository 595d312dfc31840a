-- bench/wrk/article_create_paced.lua — POST /api/v1/article/create at a fixed total rate:
-- each connection waits CONNS/RATE seconds between its requests (wrk's delay()), so RATE
-- requests per second arrive as long as the server keeps up; a unique artikelnummer per
-- request (PREFIX-thread-sequence), unit 1.
--   wrk -c CONNS ... -s bench/wrk/article_create_paced.lua http://127.0.0.1:PORT -- PREFIX RATE CONNS
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  prefix = args[1] or "E"
  local rate = tonumber(args[2]) or 1000
  local conns = tonumber(args[3]) or 20
  gap_ms = 1000 * conns / rate
  seq = 0
  wrk.headers["Content-Type"] = "application/json"
end

function delay()
  return gap_ms
end

function request()
  seq = seq + 1
  local body = string.format(
    '{"artikelnummer":"%s-%d-%d","bezeichnung":"Artikel %d","einheit_id":1}',
    prefix, tid or 0, seq, seq)
  return wrk.format("POST", "/api/v1/article/create", nil, body)
end
