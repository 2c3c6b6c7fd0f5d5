-- Hearth's Lua shim: loads /code/<file>.lua and calls handler(event, context): a global
-- function, or a field of the table the file returns. JSON through lua-cjson.
--
-- Started as `lua5.4 shim.lua MODE HANDLER`; see hearth_types::runtime for the protocol.
local cjson = require("cjson")

local mode = arg[1] or "process"
local spec = arg[2] or "handler.handler"
local code = os.getenv("HEARTH_CODE_DIR") or "/code"
local file, name = spec:match("^(.*)%.([^.]+)$")
if not file then file, name = spec, "handler" end

-- Replies go to the real stdout; whatever the handler prints goes to stderr, the logs.
local replies = io.stdout
print = function(...)
  local parts = {}
  for i = 1, select("#", ...) do parts[#parts + 1] = tostring((select(i, ...))) end
  io.stderr:write(table.concat(parts, "\t"), "\n")
end
io.write = function(...) return io.stderr:write(...) end
io.stdout = io.stderr

local function failure(msg, stack)
  msg = tostring(msg)
  return { error = { message = msg, type = "Error", stack = stack or msg } }
end

local function reply(r)
  local ok, line = pcall(cjson.encode, r)
  if not ok then
    line = cjson.encode({ error = { message = "the handler's result is not JSON: " .. tostring(line), type = "TypeError" } })
  end
  io.stderr:flush()
  replies:write(line, "\n")
  replies:flush()
end

local fn, load_error
do
  local path = code .. "/" .. file .. ".lua"
  local chunk, err = loadfile(path)
  if not chunk then
    load_error = failure(err)
  else
    local ok, mod = xpcall(chunk, debug.traceback)
    if not ok then
      load_error = failure(mod)
    else
      fn = (type(mod) == "table" and mod[name]) or _G[name]
      if type(fn) ~= "function" then load_error = failure(path .. " defines no function " .. name) end
    end
  end
end

local function call(event, ctx)
  local c = {
    invocation_id = ctx.invocation_id or "",
    function_name = ctx.function_name or "",
    function_version = ctx.function_version,
    deadline_ms = tonumber(ctx.deadline_ms) or 0,
    memory_limit_mib = tonumber(ctx.memory_limit_mib) or 0,
  }
  local stack
  local ok, r = xpcall(fn, function(e) stack = debug.traceback(tostring(e), 2); return e end, event, c)
  if ok then return { ok = r == nil and cjson.null or r } end
  return failure(r, stack)
end

if mode == "persistent" then
  for line in io.lines() do
    if line:match("%S") then
      local ok, req = pcall(cjson.decode, line)
      local r
      if not ok then r = failure(req) else r = load_error or call(req.event, req.context or {}) end
      io.stderr:write("\30hearth-call-end\n")
      reply(r)
    end
  end
else
  local raw = io.read("a") or ""
  local event = cjson.null
  if raw:match("%S") then
    local ok, v = pcall(cjson.decode, raw)
    if not ok then reply(failure(v)); return end
    event = v
  end
  reply(load_error or call(event, {
    invocation_id = os.getenv("HEARTH_INVOCATION_ID"), function_name = os.getenv("HEARTH_FUNCTION"),
    function_version = os.getenv("HEARTH_VERSION"), deadline_ms = os.getenv("HEARTH_DEADLINE_MS"),
    memory_limit_mib = os.getenv("HEARTH_MEMORY_MIB"),
  }))
end
