-- When a failed request may be sent again, and how long to wait first.
--
-- A request is retried only when sending it twice is harmless, or when
-- it provably was not carried out: a refused connection, an unresolved
-- host, or 429, which the platform documents as "not processed".
-- Retryable failures are network failures that can pass (a timeout, a
-- reset, a truncated answer) and the statuses the platform documents as
-- "retry later" (429 and 5xx).  A verification failure is never retried:
-- the request may have been carried out.
local floor = math.floor
local min = math.min
local random = math.random

local _M = {}

-- Defaults of the client options retries, retry_delay, retry_max_delay.
_M.DEFAULT_RETRIES = 2
_M.DEFAULT_DELAY = 0.2
_M.DEFAULT_MAX_DELAY = 2

-- Network failures after which the request cannot have reached the
-- server, so even a registration may go again, and the backup host may
-- be tried.
local NOT_SENT = { connect = true, resolve = true }

-- Network failures that can pass, for requests safe to repeat.
local TRANSIENT = { timeout = true, reset = true, truncated = true }

local RETRY_STATUS = { [429] = true, [500] = true, [502] = true, [503] = true, [504] = true }

-- Decides about err, the failure of one attempt.  Returns nil (give up),
-- "retry", or "backup" (retry, on the backup host when there is one).
function _M.decide(err, idempotent)
    if err.kind == "network" then
        if NOT_SENT[err.reason] and err.sent ~= true then
            return "backup"
        end
        if idempotent and TRANSIENT[err.reason] then
            return "retry"
        end
        return nil
    end
    if err.kind == "api" and (err.status == 429
        or (idempotent and RETRY_STATUS[err.status])) then
        return "retry"
    end
    return nil
end

-- Returns the seconds to wait before attempt number attempt + 1: the
-- platform's Retry-After when it sent one, else exponential back-off from
-- base, capped at max, with full jitter so that many clients that failed
-- together do not retry together.
function _M.delay(attempt, base, max, err)
    if err.retry_after then
        return min(err.retry_after, 60)
    end
    local ceiling = min(max, base * 2 ^ (attempt - 1))
    return ceiling / 2 + random() * ceiling / 2
end

-- Parses a Retry-After header in seconds (the HTTP-date form is not used
-- by the platform and is ignored).
function _M.retry_after(value)
    local seconds = value and tonumber(value:match("^%s*(%d+)%s*$"))
    if seconds then
        return floor(seconds)
    end
    return nil
end

return _M
