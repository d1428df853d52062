"""The Redis script that puts job events on devices' timelines and current jobs.

Pure: the script's text and its arguments. scheduler/devices.py (the registry) runs it;
scheduler/timeline.py is the entries' form.
"""

from __future__ import annotations

from ota.records import JobEventRecord
from scheduler import keys, timeline

# Job events in log order: each becomes the device's current job (if newer) and goes on
# its timeline, a list, newest first. The timeline keeps the job-events log's order (one
# partition per device), never the stamps: records stamped by different services (gateway,
# edge, sweeper) may reach the log out of time order. A replayed entry is found (in either
# of its forms) and not added again. Within one task, newer means a later attempt or a
# higher job version; time decides only between different tasks.
# An entry leaves its task id out (the short form, scheduler/timeline.py) when the entry
# below it is of the same task; the oldest entry kept always names its task: trimming
# turns a short entry that becomes the oldest into its full form, the task id spliced in
# (a short entry's task id is plain: its JSON is the id in quotes).
# A download fact that reached a finished try after its result (`before_result`) is
# placed just below that result's entry, the device having downloaded before it reported;
# several such facts in the order of their fractions (DOWNLOADING below DOWNLOADED). The
# device hash remembers the last closing entry's try (`tl_close` = task|attempt|version).
# A try that succeeds is folded into one entry as it closes, its summary (the result with
# the earlier entries' states and times, scheduler/timeline.py): a finished device's
# timeline is most of its memory. An event of a folded try is taken as stored (a replay,
# or a download fact after the result: the log has it).
# A timeline stored as a sorted set before (three times the bytes) becomes a list when
# next written.
# Only the newest `cap` entries stay: the hash counts those trimmed (`tl_cut`) and keeps the
# log position of the device's first job event (`tl_log`, scheduler/timeline.py), where
# the full history is read. The timeline expires `retention` ms after its newest stamp
# (0: never; from stamps, so a replay sets the same expiry); an event finding it gone
# after earlier ones marks the hash (`tl_expired`). KEYS[1] all-devices zset. ARGV[1]
# timeline cap, ARGV[3] retention (ms), ARGV[2] a JSON array of [device hash, timeline,
# device id, at_ms, task id, attempt, job_version, state, cause, task type, full entry,
# placement ('' | 'close' | a fraction below the closing entry), log position ('' unknown),
# short entry ('' when the task id is never left out)], all strings (one argument is far
# cheaper to send than fourteen per event)
JOB_SCRIPT = """
local cap = tonumber(ARGV[1])
local retention = tonumber(ARGV[3])
$STATE_TABLES
-- an entry's task id, try (task|attempt|version), from and to states (codes, or names in
-- older entries), detail, attempt, job version, stamp and cause; `older` is the task of the entry
-- below it, which a short entry is of. Forms: [task, id, at, attempt, version, from, to,
-- detail, cause] (full; a succeeded try's summary adds its steps), [id, at, attempt, ...]
-- (short), [id, at, task, attempt, version, from, to, cause, detail] (older), or an object
local function read(raw, older)
  local e = cjson.decode(raw)
  local task, a, v, from, to, detail, at, cause
  if e[1] == nil then
    task, a, v, from, to, detail = e.task_id, e.attempt, e.job_version, e['from'], e.to, e.detail
    at, cause = e.at_ms, e.cause
  elseif type(e[2]) == 'string' then
    task, a, v, from, to, detail, at, cause = e[1], e[4], e[5], e[6], e[7], e[8], e[3], e[9]
  elseif type(e[3]) == 'string' then
    task, a, v, from, to, detail, at, cause = e[3], e[4], e[5], e[6], e[7], e[9], e[2], e[8]
  else
    task, a, v, from, to, detail, at, cause = older, e[3], e[4], e[5], e[6], e[7], e[2], e[8]
  end
  local try = tostring(task) .. '|' .. tostring(a) .. '|' .. tostring(v)
  return task, try, from, to, detail, a, v, at, cause
end
-- the (task|attempt) a succeeded try's summary is of; nil for any other entry (only a
-- summary ends in ']]': its steps, an array, come last)
local function summary_of(raw)
  if string.sub(raw, -2) ~= ']]' then return nil end
  local e = cjson.decode(raw)
  if type(e[2]) ~= 'string' or type(e[10]) ~= 'table' then return nil end
  return tostring(e[1]) .. '|' .. tostring(e[4])
end
-- a value as JSON: a state's code or older name, a job version
local function js(x)
  if type(x) == 'string' then return '"' .. x .. '"' end
  if type(x) ~= 'number' then return 'null' end
  return tostring(x)
end
-- the task an entry names; nil for a short entry (told by its start without decoding it
-- when its event id is plain)
local function named(raw)
  if string.find(raw, '^%["[%w_.:%-]*",%-?%d+,%-?%d') then return nil end
  local e = cjson.decode(raw)
  if e[1] == nil then return e.task_id end
  if type(e[2]) == 'string' then return e[1] end
  if type(e[3]) == 'string' then return e[3] end
  return nil
end
-- the task of items[i]: the one it names, or the nearest older entry's
local function task_at(items, i)
  for j = i, #items do
    local t = named(items[j])
    if t ~= nil then return t end
  end
  return nil
end
-- the task of the newest entry; nil for an empty timeline
local function head_task(tl)
  local head = redis.call('LINDEX', tl, 0)
  if not head then return nil end
  local t = named(head)
  if t ~= nil then return t end
  return task_at(redis.call('LRANGE', tl, 1, -1), 1)
end
-- an entry without its task id when it names `task` (a full entry compares as its short
-- form with the short forms of its try)
local function bare(raw, task)
  local prefix = '["' .. task .. '",'
  if string.sub(raw, 1, #prefix) == prefix then return '[' .. string.sub(raw, #prefix + 1) end
  return raw
end
-- how far below its try's result a before-result fact sits; nil for any other entry
local function fraction(raw, older)
  local _, _, _, to, detail = read(raw, older)
  if type(detail) == 'table' and detail.before_result == true then return below[to] or 0.5 end
  return nil
end
-- the timeline's entries, newest first, and the task each is of
local function entries_with_tasks(tl)
  local items = redis.call('LRANGE', tl, 0, -1)
  local tasks, t = {}, nil
  for i = #items, 1, -1 do
    t = named(items[i]) or t
    tasks[i] = t
  end
  return items, tasks
end
-- puts a before-result fact below the closing entry of try `this`; false when that is gone
local function under_result(tl, full, short, task, this, f)
  local items, tasks = entries_with_tasks(tl)
  local k = nil
  for i, raw in ipairs(items) do
    local _, try, from, to = read(raw, tasks[i + 1])
    if try == this and from ~= to and closing[to] then k = i + 1; break end
  end
  if k == nil then return false end
  while items[k] do
    local g = fraction(items[k], tasks[k + 1])
    if g == nil or g > f or (g == f and bare(items[k], task) < short) then break end
    k = k + 1
  end
  if items[k] then
    local entry = full
    if tasks[k] == task then entry = short end
    redis.call('LINSERT', tl, 'BEFORE', items[k], entry)
  else redis.call('RPUSH', tl, full) end
  return true
end
-- folds a succeeded try into one entry: its closing entry (at the head; `full`, its full
-- form) with the try's earlier entries as steps [job_version, from, to, ms before the
-- result, cause (only when there is one)], oldest first. Their event ids and details stay
-- in the log. False when the try has no earlier entry here (nothing to fold).
local function summarise(tl, full, task, attempt, at)
  local items, tasks = entries_with_tasks(tl)
  local steps, k = {}, 2
  while items[k] and tasks[k] == task and summary_of(items[k]) == nil do
    local _, _, from, to, _, a, v, stamp, why = read(items[k], tasks[k + 1])
    if tostring(a) ~= attempt or type(stamp) ~= 'number' then break end
    local step = js(v) .. ',' .. js(from) .. ',' .. js(to) .. ',' .. js(at - stamp)
    if type(why) == 'number' then step = step .. ',' .. js(why) end
    table.insert(steps, 1, '[' .. step .. ']')
    k = k + 1
  end
  if k == 2 then return false end
  local pad = ({[7] = ',{},null', [8] = ',null', [9] = ''})[#cjson.decode(full)]
  redis.call('LTRIM', tl, k - 1, -1)
  redis.call('LPUSH', tl, string.sub(full, 1, -2) .. pad .. ',[' .. table.concat(steps, ',') .. ']]')
  return true
end
local function job(dev, tl, id, at_ms, task, attempt, version, state, cause, kind, full,
                   place, position, short)
  redis.call('ZADD', KEYS[1], 0, id)
  if redis.call('EXISTS', tl) == 0 and redis.call('HEXISTS', dev, 'tl_log') == 1 then
    redis.call('HSET', dev, 'tl_expired', '1')
  end
  if position ~= '' then redis.call('HSETNX', dev, 'tl_log', position) end
  if redis.call('TYPE', tl).ok == 'zset' then
    local old = redis.call('ZREVRANGE', tl, 0, -1)
    redis.call('DEL', tl)
    redis.call('RPUSH', tl, unpack(old))
    redis.call('HDEL', dev, 'tl_close_at')
  end
  if short == '' then short = full end
  local at = tonumber(at_ms)
  local this = task .. '|' .. attempt .. '|' .. version
  local stored = redis.call('LPOS', tl, short) or (short ~= full and redis.call('LPOS', tl, full))
  if not stored then
    for _, raw in ipairs(redis.call('LRANGE', tl, 0, -1)) do
      if summary_of(raw) == task .. '|' .. attempt then stored = true; break end  -- folded
    end
  end
  if not stored then
    local placed, folded = false, false
    if place ~= '' and place ~= 'close' and redis.call('HGET', dev, 'tl_close') == this then
      placed = under_result(tl, full, short, task, this, tonumber(place))
    end
    if not placed then
      if short ~= full and head_task(tl) == task then redis.call('LPUSH', tl, short)
      else redis.call('LPUSH', tl, full) end
      if place == 'close' and state == 'SUCCEEDED' then
        folded = summarise(tl, full, task, attempt, at)
      end
    end
    local n = redis.call('LLEN', tl)
    if n > cap then
      local last = redis.call('LINDEX', tl, cap - 1)
      local t = nil
      if named(last) == nil then t = task_at(redis.call('LRANGE', tl, cap, -1), 1) end
      redis.call('LTRIM', tl, 0, cap - 1)
      redis.call('HINCRBY', dev, 'tl_cut', n - cap)
      if t ~= nil then redis.call('LSET', tl, cap - 1, '["' .. t .. '",' .. string.sub(last, 2)) end
    end
    if folded then redis.call('HDEL', dev, 'tl_close')  -- nothing goes below a summary
    elseif place == 'close' then redis.call('HSET', dev, 'tl_close', this) end
    if retention == 0 then redis.call('PERSIST', tl)
    elseif redis.call('PEXPIRETIME', tl) < at + retention then
      redis.call('PEXPIREAT', tl, at + retention)  -- in the past: beyond retention, gone now
    end
  end
  local a, v = tonumber(attempt), tonumber(version)
  if redis.call('HGET', dev, 'task') == task then
    local a0 = tonumber(redis.call('HGET', dev, 'attempt') or '0')
    local v0 = tonumber(redis.call('HGET', dev, 'job_version') or '0')
    if a < a0 or (a == a0 and v <= v0) then return end
  else
    if at < tonumber(redis.call('HGET', dev, 'job_at_ms') or '0') then return end
  end
  redis.call('HSET', dev, 'job_at_ms', at_ms, 'task', task, 'attempt', attempt,
    'job_version', version, 'state', state, 'cause', cause)
  if kind ~= '' then redis.call('HSET', dev, 'task_type', kind) end
end
for _, e in ipairs(cjson.decode(ARGV[2])) do
  job(e[1], e[2], e[3], e[4], e[5], e[6], e[7], e[8], e[9], e[10], e[11], e[12], e[13], e[14])
end
return 1
""".replace("$STATE_TABLES", timeline.lua_state_tables())


def job_args(event: JobEventRecord, task_type: str, position: str) -> list[str]:
    """One event's fields for the `JOB_SCRIPT` script, all strings."""
    full, short = timeline.forms(event)
    return [
        keys.device(event.device_id),
        keys.timeline(event.device_id),
        event.device_id,
        str(event.at_ms),
        event.task_id,
        str(event.attempt),
        str(event.job_version),
        event.to_state,
        "" if event.cause is None else str(event.cause),
        task_type,
        full.decode(),
        timeline.place(event),
        position,
        "" if short == full else short.decode(),
    ]
