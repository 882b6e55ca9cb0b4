-- wrk: alternate the two reads the benchmark measures, through the gateway:
-- the reading user's orders in turn (up to 1,000 of them, so that
-- concurrent reads ask for different rows, as pgbench -S does) and their
-- account.
local orders = {}
for id in string.gmatch(os.getenv("BENCH_ORDER_IDS") or "", "%S+") do
  orders[#orders + 1] = "/api/orders/" .. id
end
local account_path = "/api/accounts/" .. os.getenv("BENCH_USER_ID")
-- The reading user's token (scripts/bench.sh signs them in).
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")

-- Each of wrk's threads starts at its own place in the list.
local threads = 0
setup = function(thread)
  thread:set("first", threads * 997)
  threads = threads + 1
end
local n = 0
init = function()
  n = first or 0
end
request = function()
  n = n + 1
  if n % 2 == 0 then
    return wrk.format("GET", orders[math.floor(n / 2) % #orders + 1])
  end
  return wrk.format("GET", account_path)
end
