-- The keys a client verifies responses with and encrypts fields with:
-- the WeChat Pay public key (by its ID), platform certificates (by serial,
-- downloaded from /v3/certificates with the APIv3 key), or both while a
-- merchant migrates from certificates to the public key.
local core = require("wechatpay.core")
local errors = require("wechatpay.errors")

local ipairs = ipairs
local setmetatable = setmetatable
local format = string.format

local _M = {}

local mt = { __index = _M }

-- A response whose timestamp is this far from the local clock is refused.
local WINDOW = 300

-- An unknown serial triggers a download at most this often, so that
-- forged serials cannot cause a download per response.
local MIN_DOWNLOAD_INTERVAL = 60

-- opts: public_key (a core PublicKey) and public_key_id, and/or
-- apiv3_key (a core AeadKey); clock returns Unix seconds.
function _M.new(opts)
    local store = core.new_store()
    if opts.public_key then
        store:put(opts.public_key_id, opts.public_key, 0, nil, "public_key")
    end
    return setmetatable({
        store = store,
        public_key = opts.public_key,
        public_key_id = opts.public_key_id,
        apiv3_key = opts.apiv3_key,
        clock = opts.clock,
        last_download = nil,
    }, mt)
end

function _M:can_download(now)
    if not self.apiv3_key then
        return false
    end
    return self.last_download == nil
        or now - self.last_download >= MIN_DOWNLOAD_INTERVAL
end

local function header(res, name)
    return res.headers[name]
end

-- Verifies res against the keys of store; returns true or nil, code,
-- message.
local function verify_with(store, res, now)
    return store:verify(header(res, "wechatpay-serial"),
        header(res, "wechatpay-timestamp"), header(res, "wechatpay-nonce"),
        header(res, "wechatpay-signature"), res.body, now, WINDOW)
end

local function verify_error(res, code, message)
    return nil, errors.new("verify", "response signature not accepted: " .. message, {
        reason = code,
        status = res.status,
        request_id = header(res, "request-id"),
    })
end

-- Turns a failed /v3/certificates answer into an error.  A merchant that
-- has only the WeChat Pay public key gets 404 RESOURCE_NOT_EXISTS there.
local function download_failed(err)
    if err.kind == "api" and (err.status == 404 or err.code == "RESOURCE_NOT_EXISTS") then
        return nil, errors.new("config", "this merchant has no platform certificates "
            .. "(/v3/certificates answered " .. (err.code or err.status) .. "); configure "
            .. "public_key and public_key_id, the WeChat Pay public key", {
                status = err.status, code = err.code, request_id = err.request_id,
            })
    end
    return nil, err
end

-- Downloads the platform certificates with fetch(), a function that
-- sends a signed GET /v3/certificates and returns the raw response (or
-- nil, err).  Each certificate must decrypt with the APIv3 key, and the
-- response must be signed by a key already trusted or by one of the
-- certificates it carries, which the APIv3 key has just authenticated.
function _M:download(fetch)
    local now = self.clock()
    self.last_download = now

    local res, err = fetch()
    if not res then
        return download_failed(err)
    end

    local certs, why, what = self.apiv3_key:parse_certificates(res.body)
    if not certs then
        local kind = what == "decrypt" and "decrypt" or "api"
        return nil, errors.new(kind, "platform certificates not accepted: " .. why, {
            status = res.status, request_id = header(res, "request-id"),
        })
    end

    local candidates = core.new_store()
    for _, entry in ipairs(self.store:list()) do
        local _, key = self.store:find(entry.serial)
        candidates:put(entry.serial, key, entry.not_before, entry.not_after, entry.source)
    end
    for _, cert in ipairs(certs) do
        candidates:put(cert:serial(), cert:public_key(), cert:not_before(),
            cert:not_after(), "download")
    end
    local ok, code, message = verify_with(candidates, res, now)
    if not ok then
        return verify_error(res, code, "certificates download: " .. message)
    end

    for _, cert in ipairs(certs) do
        self.store:put(cert:serial(), cert:public_key(), cert:not_before(),
            cert:not_after(), "download")
    end
    self.store:expire(now)
    return true
end

-- Verifies a 2xx response.  An unknown serial in certificate mode leads
-- to one download (at most one a minute) and a second attempt.
function _M:verify(res, fetch)
    local now = self.clock()
    local ok, code, message = verify_with(self.store, res, now)
    if not ok and code == "serial" and self:can_download(now) then
        local downloaded, err = self:download(fetch)
        if not downloaded then
            return nil, err
        end
        ok, code, message = verify_with(self.store, res, now)
    end
    if not ok then
        return verify_error(res, code, message)
    end
    return true
end

-- Returns the serial and key to encrypt sensitive fields with: the
-- public key when configured, else the valid platform certificate with
-- the latest expiry, downloading the certificates when none is held.
function _M:encryption_key(fetch)
    local now = self.clock()
    local entry, key = self.store:newest(now)
    if not entry and self:can_download(now) then
        local ok, err = self:download(fetch)
        if not ok then
            return nil, err
        end
        entry, key = self.store:newest(now)
    end
    if not entry then
        return nil, errors.new("verify", format("no valid platform certificate or public "
            .. "key to encrypt with (the store holds %d)", self.store:count()))
    end
    return entry.serial, key
end

-- The serial every request announces in Wechatpay-Serial when it carries
-- no encrypted field: the public key ID, so that the platform signs the
-- response with the public key, or nil.
function _M:default_serial()
    return self.public_key_id
end

function _M:list()
    return self.store:list()
end

function _M:close()
    self.store:close()
end

return _M
