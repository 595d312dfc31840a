-- bench/wrk/charge_create.lua — POST /api/v1/charge/create with a unique charge_nummer per
-- request (PREFIX-thread-sequence; give each round its own PREFIX), the article and unit
-- cycling over the seeded ones, the MHD left to the server (defaulted from the article's
-- shelf life, or none).
--   wrk ... -s bench/wrk/charge_create.lua http://127.0.0.1:PORT -- PREFIX [ARTICLES [UNITS
--   [NUMBERS]]]   (NUMBERS "generated": no charge_nummer, the server numbers each batch)
-- Anything but a 201 shows in wrk's "Non-2xx or 3xx responses".
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  prefix = args[1] or "B"
  articles = tonumber(args[2]) or 20
  units = tonumber(args[3]) or 8
  generated = args[4] == "generated"
  seq = 0
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  seq = seq + 1
  if generated then
    return wrk.format("POST", "/api/v1/charge/create", nil, string.format(
      '{"artikel_id":%d,"menge":12.5,"einheit_id":%d,"herstellungsdatum":"2026-11-24T08:00:00Z",'
        .. '"bemerkungen":"bench"}', seq % articles + 1, seq % units + 1))
  end
  local body = string.format(
    '{"artikel_id":%d,"menge":12.5,"einheit_id":%d,"herstellungsdatum":"2026-11-24T08:00:00Z",'
      .. '"charge_nummer":"%s-%d-%d","bemerkungen":"bench"}',
    seq % articles + 1, seq % units + 1, prefix, tid or 0, seq)
  return wrk.format("POST", "/api/v1/charge/create", nil, body)
end
