-- bench/wrk/charge_mixed.lua — reads with writes mixed in: every WRITE_EVERY-th request is a
-- POST /api/v1/charge/create (unique charge_nummer, as charge_create.lua), the others
-- GET /api/v1/charge/{id} with the id uniform in 1..N (as charge_get.lua). Shows what the
-- lotmesh response cache is worth while every create invalidates (the FastAPI service has no
-- cache to lose).
--   wrk ... -s bench/wrk/charge_mixed.lua http://127.0.0.1:PORT -- N PREFIX [WRITE_EVERY [ARTICLES [UNITS]]]
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  n = tonumber(args[1]) or 1000
  prefix = args[2] or "M"
  every = tonumber(args[3]) or 10
  articles = tonumber(args[4]) or 20
  units = tonumber(args[5]) or 8
  math.randomseed(7919 * (tid or 1))
  seq = 0
  -- wrk.format's headers replace wrk.headers (the -H ones, Authorization among them): merge
  post_headers = {["Content-Type"] = "application/json"}
  for k, v in pairs(wrk.headers) do post_headers[k] = v end
end

function request()
  seq = seq + 1
  if seq % every == 0 then
    local body = string.format(
      '{"artikel_id":%d,"menge":12.5,"einheit_id":%d,"herstellungsdatum":"2026-11-24T08:00:00Z",'
        .. '"charge_nummer":"%s-%d-%d","bemerkungen":"bench"}',
      seq % articles + 1, seq % units + 1, prefix, tid or 0, seq)
    return wrk.format("POST", "/api/v1/charge/create", post_headers, body)
  end
  return wrk.format("GET", "/api/v1/charge/" .. math.random(1, n))
end
