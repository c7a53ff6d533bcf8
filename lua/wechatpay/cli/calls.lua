-- Helpers around the library's calls for wechatpay-guide: exit statuses,
-- one-line error descriptions, and finding a staff member by userid when
-- a registration's outcome is unknown.  The library itself retries a 429
-- (rate limit) response, honouring Retry-After, so nothing here does.
local _M = {}

-- Exit statuses of wechatpay-guide (the README lists them).
_M.EXIT = {
    ok = 0,
    failed = 1,       -- the platform rejected a call, or some sync rows failed
    usage = 2,        -- bad arguments, configuration, key files or CSV header
    network = 3,      -- the platform could not be reached, or sent no response
    unverified = 4,   -- a response failed verification: the outcome is unknown
    interrupted = 130,
}

-- Returns the exit status for a library error.
function _M.exit_status(err)
    local kind = type(err) == "table" and err.kind
    if kind == "network" then
        return _M.EXIT.network
    elseif kind == "verify" or kind == "decrypt" then
        return _M.EXIT.unverified
    elseif kind == "config" or kind == "input" then
        return _M.EXIT.usage
    end
    return _M.EXIT.failed
end

-- Describes a library error in one line, without the "wechatpay: "
-- prefix of its tostring.
function _M.describe(err)
    return (tostring(err):gsub("^wechatpay: ", ""))
end

-- Returns true when a failed call may still have been carried out,
-- because the request may have reached the platform while the response
-- was lost, failed verification or was a server error.
function _M.outcome_unknown(err)
    local kind = type(err) == "table" and err.kind
    if kind == "network" then
        return err.sent ~= false and err.reason ~= "connect" and err.reason ~= "resolve"
    elseif kind == "verify" or kind == "decrypt" then
        return true
    elseif kind == "api" then
        return (err.status or 0) >= 500
    end
    return false
end

-- Returns the form of a userid that comparisons use.  WeCom userids are
-- case-insensitive: WeCom's API documentation for creating a member
-- states that its uniqueness check ignores case (系统进行唯一性检查时会忽略大小写).
function _M.userid_key(userid)
    return userid:lower()
end

-- Queries the staff of a store by userid.  Returns the guide, false when
-- there is none, or nil and an error.  The returned staff are matched
-- ignoring case, and two matches are an error, since a userid names one
-- staff member in a store.
-- NOTE: the query sends the userid as given, and the platform does not
-- document whether it matches it ignoring case.
function _M.find_userid(client, store_id, userid, sub_mchid)
    local page, err = client:query_guides({
        store_id = store_id, userid = userid, sub_mchid = sub_mchid,
    })
    if not page then
        return nil, err
    end
    local key = _M.userid_key(userid)
    local matches = {}
    for _, guide in ipairs(page.data) do
        if guide.userid and _M.userid_key(guide.userid) == key then
            matches[#matches + 1] = guide
        end
    end
    if #matches > 1 then
        return nil, string.format("the platform lists %d staff with userid %s in store %s",
            #matches, userid, tostring(store_id))
    end
    return matches[1] or false
end

-- Lists every guide of a store.  Returns the list, or nil and an error.
function _M.list_store(client, params)
    local guides = {}
    for guide, err in client:each_guide(params) do
        if not guide then
            return nil, err
        end
        guides[#guides + 1] = guide
    end
    return guides
end

return _M
