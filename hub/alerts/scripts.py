"""The Lua scripts of alerts: every change of a rule or an alert is one of these, atomic in Redis.

All scripts of an organization take the same KEYS (``hub.alerts.store.AlertKeys``), all in its hash slot:
rules hash, alerts stream (the ``alerts`` channel), event log, alert sequence, alert indexes (all, active,
acknowledged, resolved), rules version, rules order. Common ARGV: events min id (ms), the key prefix of alert
hashes, how many resolved alerts to keep, the key prefix of rule states; then each script's own.

A change writes the alert's hash, moves it between indexes, appends it to the alerts stream (``d`` device,
``p`` the channel data: the alert as REST shows it plus ``type``, the event) and an ``alert.<what>`` event to
the event log (``e``, ``d``, ``b`` 0, ``f`` JSON: ``type``, ``device_id``, ``alert_id`` and the alert's other
fields), in the same script: what REST shows, dashboards and webhooks see alike.
"""

from __future__ import annotations

__all__ = ["ACK", "APPLY", "CREATE_RULE", "DELETE_DEVICE", "DELETE_RULE"]

_COMMON = """
local rules_key, stream, events, seq_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local by_all, by_active, by_ack, by_resolved = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local version_key, order_key = KEYS[9], KEYS[10]
local events_min, alert_prefix, max_resolved, state_prefix = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]

local function int(n) return string.format('%d', n) end

-- ms since the epoch -> 2026-11-22T10:30:00.123Z (days to civil date: H. Hinnant's algorithm).
local function iso(ms)
  local secs = math.floor(ms / 1000)
  local days = math.floor(secs / 86400)
  local sod = secs - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, m, d, math.floor(sod / 3600),
    math.floor(sod % 3600 / 60), sod % 60, ms - secs * 1000)
end

-- The shortest text that reads back as the same double, always with a '.' or an exponent (a JSON float).
local function num(v)
  local text = string.format('%.15g', v)
  if tonumber(text) ~= v then text = string.format('%.16g', v) end
  if tonumber(text) ~= v then text = string.format('%.17g', v) end
  if not string.find(text, '[.eEn]') then text = text .. '.0' end
  return text
end

local function str(v) if v and v ~= '' then return cjson.encode(v) else return 'null' end end

local function publish(key, kind)
  local flat = redis.call('HGETALL', key)
  local a = {}
  for i = 1, #flat, 2 do a[flat[i]] = flat[i + 1] end
  local body = '"rule_id":' .. str(a.rule_id) .. ',"device_id":' .. str(a.device_id) .. ',"metric":' .. str(a.metric)
    .. ',"value":' .. a.value .. ',"severity":' .. str(a.severity) .. ',"status":' .. str(a.status)
    .. ',"triggered_at":' .. str(a.triggered_at) .. ',"resolved_at":' .. str(a.resolved_at)
    .. ',"acknowledged_at":' .. str(a.acknowledged_at) .. '}'
  redis.call('XADD', stream, 'MAXLEN', '~', 100000, '*', 'd', a.device_id,
    'p', '{"type":' .. str(kind) .. ',"id":' .. str(a.id) .. ',' .. body)
  redis.call('XADD', events, 'MINID', '~', events_min, '*', 'e', kind, 'd', a.device_id, 'b', '0',
    'f', '{"type":' .. str(kind) .. ',"alert_id":' .. str(a.id) .. ',' .. body)
end

-- Resolve an open alert at ts (ms); false when it is not open.
local function resolve(id, ts)
  local key = alert_prefix .. id
  local status = redis.call('HGET', key, 'status')
  if not status or status == 'resolved' then return false end
  redis.call('HSET', key, 'status', 'resolved', 'resolved_ms', int(ts), 'resolved_at', iso(ts))
  redis.call('ZREM', by_active, id)
  redis.call('ZREM', by_ack, id)
  redis.call('ZADD', by_resolved, redis.call('HGET', key, 'seq'), id)
  publish(key, 'alert.resolved')
  while redis.call('ZCARD', by_resolved) > max_resolved do
    local oldest = redis.call('ZPOPMIN', by_resolved)[1]
    redis.call('DEL', alert_prefix .. oldest)
    redis.call('ZREM', by_all, oldest)
  end
  return true
end
"""

# ARGV[5]: a fresh random base for the ids of the alerts this call makes, ARGV[6]: the key prefix of device
# records, ARGV[7]: MessagePack, per (rule, device) {rule id, device id, leading false ts or false, newest ts,
# runs}, each run {start ts, start value, trigger ts or false, trigger value, last ts, last value, ended ts or
# false, prefix} (ingest.alert_eval.ConditionSummary). Returns {triggered, resolved, device types read (device,
# type or '', ...)}.
#
# State per (rule, device), a field of the rule's state hash once its condition has held: when it began holding
# (pending), the open alert (active or acknowledged), the newest ts evaluated (seen). A false sample at or
# after seen clears pending and resolves the open alert; a run whose last sample is at or after seen starts or
# continues pending and, with no alert open, triggers one at the first sample at least for_s after pending.
# Segments older than seen are left out, so samples applied late (another process's, a backfill) and summaries
# applied again (a retry after a lost reply) change nothing. Back to idle, only seen is kept (',,<seen>') and no
# longer advanced: a device whose condition never holds costs one HGET per flush and no write.
APPLY = (
    _COMMON
    + """
local id_base, device_prefix = ARGV[5], ARGV[6]
local batch = cmsgpack.unpack(ARGV[7])
local made, triggered, resolved = 0, 0, 0
local rules, types, learned = {}, {}, {}

local function rule_of(id)
  local rule = rules[id]
  if rule == nil then
    local json = redis.call('HGET', rules_key, id)
    rule = json and cjson.decode(json) or false
    rules[id] = rule
  end
  return rule
end

local function type_of(device)
  local kind = types[device]
  if kind == nil then
    kind = redis.call('HGET', device_prefix .. device, 'type') or false
    types[device] = kind
    learned[#learned + 1] = device
    learned[#learned + 1] = kind or ''
  end
  return kind
end

local function trigger(rule, device, at, value)
  made = made + 1
  triggered = triggered + 1
  local id = 'alr_' .. id_base .. made
  local seq = redis.call('INCR', seq_key)
  local key = alert_prefix .. id
  redis.call('HSET', key, 'id', id, 'rule_id', rule.id, 'device_id', device, 'metric', rule.metric,
    'value', num(value), 'severity', rule.severity, 'status', 'active', 'triggered_ms', int(at),
    'triggered_at', iso(at), 'seq', seq)
  redis.call('ZADD', by_all, seq, id)
  redis.call('ZADD', by_active, seq, id)
  publish(key, 'alert.triggered')
  return id
end

-- The first sample of the run at or after ms `due`: (ts, value), or nil when the run ends before.
local function sample_from(due, run)
  if due <= run[1] then return run[1], run[2] end
  local prefix = run[8]
  local lo, hi, found = 1, math.floor(#prefix / 16), nil
  while lo <= hi do
    local mid = math.floor((lo + hi) / 2)
    if struct.unpack('<d', prefix, (mid - 1) * 16 + 1) >= due then found, hi = mid, mid - 1 else lo = mid + 1 end
  end
  if found then return struct.unpack('<dd', prefix, (found - 1) * 16 + 1) end
  if run[3] and run[3] >= due then return run[3], run[4] end
  if run[5] >= due then return run[5], run[6] end
  return nil
end

for _, s in ipairs(batch) do
  local rule_id, device, leading_false, newest, runs = s[1], s[2], s[3], s[4], s[5]
  local rule = rule_of(rule_id)
  if rule and (type(rule.device_type) ~= 'string' or type_of(device) == rule.device_type) then
    local state_key = state_prefix .. rule_id
    local raw = redis.call('HGET', state_key, device)
    local pending, alert, seen = nil, nil, -math.huge
    if raw then
      local p, a, n = string.match(raw, '^([^,]*),([^,]*),([^,]*)$')
      pending, seen = tonumber(p), tonumber(n) or seen
      if a and a ~= '' then alert = a end
    end
    local for_ms = tonumber(rule.for_s) * 1000
    local function stops(ts)
      if ts >= seen then
        seen, pending = ts, nil
        if alert then
          if resolve(alert, ts) then resolved = resolved + 1 end
          alert = nil
        end
      end
    end
    if leading_false then stops(leading_false) end
    for _, run in ipairs(runs) do
      if run[5] >= seen then
        local since = pending or run[1]
        if not alert then
          local at, value = sample_from(since + for_ms, run)
          if at then alert = trigger(rule, device, at, value) end
        end
        pending, seen = since, math.max(seen, run[5])
      end
      if run[7] then stops(run[7]) end
    end
    seen = math.max(seen, newest)
    if pending or alert then
      local state = (pending and int(pending) or '') .. ',' .. (alert or '') .. ',' .. int(seen)
      redis.call('HSET', state_key, device, state)
    elseif raw and string.sub(raw, 1, 2) ~= ',,' then
      redis.call('HSET', state_key, device, ',,' .. int(seen))  -- idle again: only seen is kept
    end
  end
end
return {triggered, resolved, learned}
"""
)

# ARGV[5]: alert id, ARGV[6]: now (ms). Returns {'made', the alert's fields} when it was active and is now
# acknowledged; {its status, its fields} when it was not active (nothing changes); {'missing', {}}.
ACK = (
    _COMMON
    + """
local id, now = ARGV[5], tonumber(ARGV[6])
local key = alert_prefix .. id
local status = redis.call('HGET', key, 'status')
if not status then return {'missing', {}} end
if status ~= 'active' then return {status, redis.call('HGETALL', key)} end
redis.call('HSET', key, 'status', 'acknowledged', 'acknowledged_ms', int(now), 'acknowledged_at', iso(now))
redis.call('ZREM', by_active, id)
redis.call('ZADD', by_ack, redis.call('HGET', key, 'seq'), id)
publish(key, 'alert.acknowledged')
return {'made', redis.call('HGETALL', key)}
"""
)

# ARGV[5]: rule id, ARGV[6]: the rule as JSON, ARGV[7]: the most rules an organization may have.
# Returns 1, or 0 when the organization has that many already.
CREATE_RULE = """
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[7]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[5], ARGV[6])
redis.call('ZADD', KEYS[10], redis.call('INCR', KEYS[9]), ARGV[5])
return 1
"""

# ARGV[5]: rule id, ARGV[6]: now (ms). Its open alerts are resolved now; its state goes. Returns the number of
# alerts resolved, or -1 when there is no such rule.
DELETE_RULE = (
    _COMMON
    + """
local rule_id, now = ARGV[5], tonumber(ARGV[6])
if redis.call('HDEL', rules_key, rule_id) == 0 then return -1 end
redis.call('ZREM', order_key, rule_id)
redis.call('INCR', version_key)
local state_key = state_prefix .. rule_id
local flat = redis.call('HGETALL', state_key)
local resolved = 0
for i = 2, #flat, 2 do
  local alert = string.match(flat[i], '^[^,]*,([^,]*),')
  if alert and alert ~= '' and resolve(alert, now) then resolved = resolved + 1 end
end
redis.call('DEL', state_key)
return resolved
"""
)

# ARGV[5]: device id, ARGV[6]: now (ms). The device is gone: its open alert of every rule is resolved now and its
# field leaves every rule's state hash (state hashes exist only for the rules in the rules hash: APPLY writes one
# only for a rule it finds there, DELETE_RULE drops it). Returns the number of alerts resolved.
DELETE_DEVICE = (
    _COMMON
    + """
local device, now = ARGV[5], tonumber(ARGV[6])
local resolved = 0
for _, rule_id in ipairs(redis.call('HKEYS', rules_key)) do
  local state_key = state_prefix .. rule_id
  local raw = redis.call('HGET', state_key, device)
  if raw then
    local alert = string.match(raw, '^[^,]*,([^,]*),')
    if alert and alert ~= '' and resolve(alert, now) then resolved = resolved + 1 end
    redis.call('HDEL', state_key, device)
  end
end
return resolved
"""
)
