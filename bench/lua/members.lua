-- A different member every request, so that every request misses every cache.
-- args: PREFIX VENDORS   (VENDORS: comma-separated vendor ids that get the member's id)
-- The member is PREFIX-t<thread>-<n>; PREFIX differs per run, so no run hits a member an
-- earlier run cached.
package.path = debug.getinfo(1, "S").source:match("@(.*/)") .. "?.lua;" .. package.path
require "report"

local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local n = 0
local parts = {}
local prefix = ""

function init(args)
  prefix = args[1] .. "-t" .. tostring(tid) .. "-"
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  -- '{"member":{"ids":{"op":"' M '","hkl":"' M '"}}}'
  local first = true
  local head = '{"member":{"ids":{'
  for id in string.gmatch(args[2], "[^,]+") do
    if first then
      parts[#parts + 1] = head .. '"' .. id .. '":"'
      first = false
    else
      parts[#parts + 1] = '","' .. id .. '":"'
    end
  end
  parts[#parts + 1] = '"}}}'
end

function request()
  n = n + 1
  local m = prefix .. n
  local body = parts[1] .. m
  for i = 2, #parts - 1 do
    body = body .. parts[i] .. m
  end
  body = body .. parts[#parts]
  return wrk.format(nil, nil, nil, body)
end

done = bench_report
