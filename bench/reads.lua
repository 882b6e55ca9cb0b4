-- wrk: alternate the two reads the benchmark measures, through the gateway.
local order_path = "/api/orders/" .. os.getenv("BENCH_ORDER_ID")
local account_path = "/api/accounts/" .. os.getenv("BENCH_USER_ID")
-- The reading user's token (scripts/bench.sh signs them in).
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
local n = 0
request = function()
  n = n + 1
  if n % 2 == 0 then
    return wrk.format("GET", order_path)
  end
  return wrk.format("GET", account_path)
end
