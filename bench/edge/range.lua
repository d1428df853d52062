-- wrk script: GET random aligned ranges of one package with a download token.
-- Arguments after `--`: <path> <package size> <range length> <token>
local path, size, span, token

function init(args)
    path = args[1]
    size = tonumber(args[2])
    span = tonumber(args[3])
    token = args[4]
    -- a table's address differs per wrk thread, so each thread draws its own offsets
    math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)"), 16))
end

function request()
    local slots = math.floor(size / span)
    local start = math.random(0, slots - 1) * span
    local headers = {
        ["Range"] = string.format("bytes=%d-%d", start, start + span - 1),
        ["Authorization"] = "Bearer " .. token,
    }
    return wrk.format("GET", path, headers)
end

function done(summary, latency, requests)
    io.write(string.format("bad_status %d\n", summary.errors.status))
end
