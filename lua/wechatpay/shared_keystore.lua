-- Platform certificates shared by the nginx workers through a
-- lua_shared_dict, so that one download serves every worker.
--
-- A keystore (keystore.lua) keeps its rules: what it trusts, one
-- download a minute, no retry for a merchant without certificates.  This
-- module adds the dict to it.  Each worker still verifies with its own C
-- store, which it reloads when the dict's version changes:
--
--   PREFIX.."version"       bumped on every change of the entries below
--   PREFIX.."certificates"  "<download time>\n<body>": the last verified
--                           /v3/certificates body, still encrypted with
--                           the APIv3 key, so that no worker installs what
--                           that key does not authenticate
--   PREFIX.."unavailable"   JSON { status, code, request_id } of the
--                           platform's response to a merchant without
--                           certificates
--   PREFIX.."attempt"       when the last download started
--   PREFIX.."lock"          held (with an expiry) by the worker downloading
--
-- PREFIX names the merchant and the base URL.  Other workers that need
-- certificates while one downloads wait for it; a refresh that is merely
-- due is skipped by the others.
local core = require("wechatpay.core")
local errors = require("wechatpay.errors")
local keystore = require("wechatpay.keystore")

local error = error
local format = string.format
local match = string.match
local pcall = pcall
local setmetatable = setmetatable
local tonumber = tonumber
local tostring = tostring
local type = type

local _M = {}

-- The methods: those of keystore.lua, with the ones below in front.
local Shared = setmetatable({}, { __index = keystore })

local mt = { __index = Shared }

-- How often a worker looks whether another worker's download finished.
local WAIT_STEP = 0.05

-- Attaches dict to ks (a keystore of certificate mode) and returns ks.
-- prefix names the merchant and base URL in the dict's keys.  The lock
-- expires after lock_timeout seconds, so that a worker that died while
-- downloading does not keep it.
function _M.attach(ks, dict, prefix, lock_timeout)
    ks.dict = dict
    ks.key_version = prefix .. "version"
    ks.key_certificates = prefix .. "certificates"
    ks.key_unavailable = prefix .. "unavailable"
    ks.key_attempt = prefix .. "attempt"
    ks.key_lock = prefix .. "lock"
    ks.lock_timeout = lock_timeout
    ks.shared_version = nil     -- the dict version this worker last read
    ks.installed = nil          -- the certificates entry it installed
    ks.background = false       -- set by refresh_if_due: skip when locked
    return setmetatable(ks, mt)
end

function Shared:warn(message)
    if self.log then
        self.log("warn", message)
    end
end

-- Rebuilds the config error of a merchant without certificates from its
-- dict entry, with the same message the downloading worker got.
function Shared:unavailable_error(value)
    local fields = core.json_decode(value)
    if type(fields) ~= "table" then
        return nil
    end
    local _, err = keystore.download_failed(self, errors.new("api", "no certificates", {
        status = fields.status, code = fields.code, request_id = fields.request_id,
    }))
    return err
end

-- Installs the certificates another worker downloaded, once the dict's
-- version moves.
function Shared:sync()
    local dict = self.dict
    local version = dict:get(self.key_version)
    if version == self.shared_version then
        return
    end
    self.shared_version = version

    local value = dict:get(self.key_certificates)
    if value and value ~= self.installed then
        self.installed = value
        local success, body = match(value, "^(%d+)\n(.*)$")
        local certs, why = self.apiv3_key:parse_certificates(body or "")
        if certs then
            self:install(certs, self.clock())
            self.last_success = tonumber(success)
        else
            self:warn("platform certificates in shared dict not accepted: " .. tostring(why))
        end
    end
    local unavailable = dict:get(self.key_unavailable)
    self.unavailable = unavailable and self:unavailable_error(unavailable) or nil
end

-- Reads when any worker last started a download, for the rate limit.
function Shared:sync_attempt()
    local attempt = self.dict:get(self.key_attempt)
    if attempt and (not self.last_attempt or attempt > self.last_attempt) then
        self.last_attempt = attempt
    end
end

function Shared:bump_version()
    local version, err = self.dict:incr(self.key_version, 1, 0)
    if not version then
        self:warn("cannot update the shared dict: " .. tostring(err))
        return
    end
    -- This worker has installed what it publishes.
    if self.shared_version == version - 1 then
        self.shared_version = version
    end
end

-- Publishes the outcome of this worker's download.
function Shared:publish(changes, body)
    local dict = self.dict
    if changes then
        local value = format("%d\n%s", self.last_success, body)
        local ok, err = dict:set(self.key_certificates, value)
        if not ok then
            self:warn("cannot store platform certificates in the shared dict: "
                .. tostring(err))
            return
        end
        self.installed = value
        dict:delete(self.key_unavailable)
        self:bump_version()
    elseif self.unavailable then
        dict:set(self.key_unavailable, core.json_encode({
            status = self.unavailable.status, code = self.unavailable.code,
            request_id = self.unavailable.request_id,
        }))
        self:bump_version()
    end
end

-- Waits until the worker holding the lock is done, then takes what it
-- published.  Returns {} (no changes made here), or nil and an error.
function Shared:wait_for_other_worker(fetch)
    if not self.sleep then
        return nil, errors.new("verify", "another nginx worker is downloading the "
            .. "platform certificates; pass a sleep function to wait for it")
    end
    local waited = 0
    local limit = self:wait_budget(fetch)
    while self.dict:get(self.key_lock) and waited < limit do
        self.sleep(WAIT_STEP)
        waited = waited + WAIT_STEP
    end
    if self.dict:get(self.key_lock) then
        return nil, errors.new("network", format("waited %g s for a certificate download "
            .. "that another nginx worker runs", waited), { reason = "timeout" })
    end
    self:sync()
    if self.unavailable then
        return nil, self.unavailable
    end
    return {}
end

-- Downloads under the dict's lock, or waits for the worker that holds
-- it; a refresh that is merely due (self.background) is skipped instead.
function Shared:download(fetch, bootstrap)
    local background = self.background
    self.background = false
    local dict = self.dict
    local locked, err = dict:add(self.key_lock, true, self.lock_timeout)
    if not locked then
        if err ~= "exists" then
            -- A full dict: download alone rather than not at all.
            self:warn("cannot take the certificate download lock: " .. tostring(err))
        elseif background then
            return nil
        else
            return self:wait_for_other_worker(fetch)
        end
    end

    dict:set(self.key_attempt, self.clock())
    local body
    local done, changes, derr = pcall(keystore.download, self, function()
        local res, ferr = fetch()
        body = res and res.body
        return res, ferr
    end, bootstrap)
    -- Publish before releasing the lock, because a worker that finds the
    -- lock free and no outcome in the dict downloads again.
    if done then
        self:publish(changes, body)
    end
    if locked then
        dict:delete(self.key_lock)
    end
    if not done then
        error(changes, 0)
    end
    return changes, derr
end

-- A download runs elsewhere while another worker holds the lock, or
-- another coroutine of this worker downloads.
function Shared:download_running()
    return self.downloading or self.dict:get(self.key_lock) ~= nil
end

function Shared:wait_for_download(fetch)
    return self:wait_for_other_worker(fetch)
end

function Shared:verify(res, fetch, what)
    self:sync()
    return keystore.verify(self, res, fetch, what)
end

function Shared:encryption_key(fetch)
    self:sync()
    return keystore.encryption_key(self, fetch)
end

function Shared:download_once(fetch, force, bootstrap)
    self:sync()
    self:sync_attempt()
    return keystore.download_once(self, fetch, force, bootstrap)
end

function Shared:refresh_if_due(fetch)
    self:sync()
    self:sync_attempt()
    self.background = true
    keystore.refresh_if_due(self, fetch)
    self.background = false
end

-- Downloads now (client:refresh_certificates), and lifts a shared
-- "no certificates" state for every worker.
function Shared:refresh(fetch, accept_new_signer)
    if self.apiv3_key and self.dict:get(self.key_unavailable) then
        self.dict:delete(self.key_unavailable)
        self:bump_version()
    end
    return keystore.refresh(self, fetch, accept_new_signer)
end

function Shared:list()
    self:sync()
    return keystore.list(self)
end

return _M
