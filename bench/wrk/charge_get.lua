-- bench/wrk/charge_get.lua — GET /api/v1/charge/{id} with the id uniform in 1..N, so that the
-- reads spread over the table as a client's would (the same sequence on every server: each wrk
-- thread seeds its generator with its number).
--   wrk ... -s bench/wrk/charge_get.lua http://127.0.0.1:PORT -- N
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  n = tonumber(args[1]) or 1000
  math.randomseed(7919 * (tid or 1))
end

function request()
  return wrk.format("GET", "/api/v1/charge/" .. math.random(1, n))
end
