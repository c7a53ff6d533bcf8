-- The keys a client verifies responses with and encrypts fields with:
-- the WeChat Pay public key (by its ID), platform certificates (by serial,
-- downloaded from /v3/certificates with the APIv3 key, or given in the
-- options), or both while a merchant migrates to the public key.
--
-- Downloads happen on first need, when the refresh interval has passed
-- (checked lazily on use: there is no background thread), and when a
-- response names a serial the store does not hold.  A failed download
-- keeps what the store had.
local core = require("wechatpay.core")
local errors = require("wechatpay.errors")

local error = error
local huge = math.huge
local min = math.min
local tostring = tostring
local ipairs = ipairs
local pairs = pairs
local pcall = pcall
local setmetatable = setmetatable
local sort = table.sort
local format = string.format

local _M = {}

local mt = { __index = _M }

-- A response whose timestamp is this far from the local clock is refused.
local WINDOW = 300

-- Downloads start at most this often, whatever triggers them (a flood of
-- unknown serials, a failing platform), except refresh() on request.
local MIN_DOWNLOAD_INTERVAL = 60
_M.MIN_DOWNLOAD_INTERVAL = MIN_DOWNLOAD_INTERVAL

-- The default refresh interval: the platform advises polling more often
-- than every 12 hours, and publishes a new certificate days ahead of use.
_M.DEFAULT_REFRESH_INTERVAL = 12 * 3600

-- How often a caller that waits for another coroutine's download looks
-- whether it finished, in seconds.
local WAIT_STEP = 0.05

-- opts: public_key (a core PublicKey) and public_key_id; apiv3_key (a
-- core AeadKey); certificates (core Certificates given in the options);
-- clock returns Unix seconds; refresh_interval in seconds; sleep(seconds)
-- yields to a scheduler while another coroutine downloads; wait_limit in
-- seconds.
function _M.new(opts)
    local store = core.new_store()
    if opts.public_key then
        store:put(opts.public_key_id, opts.public_key, 0, nil, "public_key")
    end
    for _, cert in ipairs(opts.certificates or {}) do
        store:put(cert:serial(), cert:public_key(), cert:not_before(), cert:not_after(),
            "config")
    end
    return setmetatable({
        store = store,
        public_key = opts.public_key,
        public_key_id = opts.public_key_id,
        apiv3_key = opts.apiv3_key,
        clock = opts.clock,
        refresh_interval = opts.refresh_interval or _M.DEFAULT_REFRESH_INTERVAL,
        sleep = opts.sleep,
        wait_limit = opts.wait_limit or 10,
        log = opts.log,
        last_attempt = nil,     -- when the last download started
        last_success = nil,     -- when a download last succeeded
        downloading = false,
        unavailable = nil,      -- the config error of a merchant without certificates
    }, mt)
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

local function verify_error(res, code, message, what)
    return nil, errors.new("verify", (what or "response") .. " signature not accepted: "
        .. message, {
            reason = code,
            status = res.status,
            request_id = header(res, "request-id"),
        })
end

-- Turns a failed /v3/certificates answer into an error.  A merchant that
-- has only the WeChat Pay public key gets 404 RESOURCE_NOT_EXISTS there
-- (403 and 500 have been reported for the same case).  That is a
-- configuration problem, not worth downloading again for: it is kept
-- until refresh() is called.
function _M:download_failed(err)
    -- Only a platform error body counts: a bare 404 may come from a wrong
    -- base_url.
    local no_certificates = err.kind == "api" and err.code ~= nil
        and (err.status == 404 or err.status == 403 or err.code == "RESOURCE_NOT_EXISTS"
            or err.code == "NOT_FOUND")
    if not no_certificates then
        return nil, err
    end
    self.unavailable = errors.new("config", "this merchant has no platform certificates "
        .. "(/v3/certificates answered " .. (err.code or err.status) .. "); configure "
        .. "public_key and public_key_id, the WeChat Pay public key", {
            status = err.status, code = err.code, request_id = err.request_id,
        })
    return nil, self.unavailable
end

-- The keys a download response may be signed with.  The public key, when
-- configured, always.  While the store contains a valid certificate that a
-- recent download confirmed, those certificates: a new certificate is
-- trusted only when a key already trusted signs the list that brings it.
-- Otherwise (the first download, every certificate expired, or a client
-- idle for two refresh intervals, which may have slept through a
-- rotation) a certificate from the list itself: each entry has already
-- been authenticated by its AES-GCM tag under the APIv3 key, which only
-- the merchant and the platform know.
--
-- bootstrap applies the first-download rule on request: an operator who
-- knows the platform rotated before this client learnt the new
-- certificate calls refresh_certificates({ accept_new_signer = true }).
function _M:signers_for(certs, now, bootstrap)
    local recent = not bootstrap and self.last_success ~= nil
        and now - self.last_success < 2 * self.refresh_interval
    local signers = core.new_store()
    local certificates = 0
    for _, entry in ipairs(self.store:list()) do
        if (entry.not_after or huge) > now and entry.not_before <= now then
            local _, key = self.store:find(entry.serial)
            signers:put(entry.serial, key, entry.not_before, entry.not_after, entry.source)
            if (entry.source == "config" and not bootstrap)
                or (entry.source == "download" and recent) then
                certificates = certificates + 1
            end
        end
    end
    if certificates > 0 then
        return signers, "a key already trusted"
    end
    for _, cert in ipairs(certs) do
        signers:put(cert:serial(), cert:public_key(), cert:not_before(), cert:not_after(),
            "download")
    end
    return signers, "a certificate from the same list or the public key"
end

-- Replaces the downloaded certificates with certs; returns the changes.
function _M:install(certs, now)
    local before = {}
    for _, entry in ipairs(self.store:list()) do
        if entry.source == "download" then
            before[entry.serial] = true
        end
    end
    local changes = { added = {}, removed = {}, kept = {} }
    local fresh = {}
    for _, cert in ipairs(certs) do
        local serial = cert:serial()
        if cert:not_after() > now then
            fresh[serial] = true
            self.store:put(serial, cert:public_key(), cert:not_before(), cert:not_after(),
                "download")
            local list = before[serial] and changes.kept or changes.added
            list[#list + 1] = serial
        end
    end
    for serial in pairs(before) do
        if not fresh[serial] then
            self.store:remove(serial)
            changes.removed[#changes.removed + 1] = serial
        end
    end
    for _, list in pairs(changes) do
        sort(list)
    end
    return changes
end

-- Downloads and installs the platform certificates (see fetch_and_install),
-- and logs the outcome.
function _M:download(fetch, bootstrap)
    local changes, err = self:fetch_and_install(fetch, bootstrap)
    if self.log then
        if changes then
            self.log("info", format("platform certificates downloaded: %d added, %d removed, "
                .. "%d kept", #changes.added, #changes.removed, #changes.kept))
        else
            self.log("warn", "platform certificate download failed, keeping the "
                .. self.store:count() .. " keys held: " .. tostring(err))
        end
    end
    return changes, err
end

-- Downloads and installs the platform certificates with fetch(), which
-- sends a signed GET /v3/certificates and returns the raw response (or
-- nil, err).  Returns the changes, or nil and an error; on an error the
-- store keeps what it had.
function _M:fetch_and_install(fetch, bootstrap)
    local now = self.clock()
    self.last_attempt = now
    self.downloading = true
    local done, res, err = pcall(fetch)
    self.downloading = false
    if not done then
        error(res, 0)
    end
    if not res then
        return self:download_failed(err)
    end

    local certs, why, what = self.apiv3_key:parse_certificates(res.body)
    if not certs then
        return nil, errors.new(what == "decrypt" and "decrypt" or "api",
            "platform certificates not accepted: " .. why, {
                status = res.status, request_id = header(res, "request-id"),
            })
    end
    local signers, rule = self:signers_for(certs, now, bootstrap)
    local ok, code, message = verify_with(signers, res, now)
    if not ok then
        local hint = ""
        if code == "serial" and rule == "a key already trusted" then
            hint = "; if the platform rotated its certificate before this client learnt "
                .. "the new one, call refresh_certificates({ accept_new_signer = true })"
        end
        return verify_error(res, code, message .. " (a certificate list must be signed by "
            .. rule .. hint .. ")", "certificate list")
    end

    self.last_success = now
    self.unavailable = nil
    return self:install(certs, now)
end

-- Returns how long a caller may wait for another download: wait_limit,
-- and no longer than the call's deadline, which fetch carries.
function _M:wait_budget(fetch)
    local limit = self.wait_limit
    if type(fetch) == "table" and fetch.deadline then
        limit = min(limit, fetch.deadline - core.monotonic())
    end
    return limit
end

-- Returns true while a download runs elsewhere (another coroutine here).
function _M:download_running()
    return self.downloading
end

-- Waits for the download that runs elsewhere, at most until the call's
-- deadline.  Returns {} (nothing changed here), or nil and an error.
function _M:wait_for_download(fetch)
    if not self.sleep then
        return nil, errors.new("verify", "a certificate download is already running "
            .. "in another coroutine; pass a sleep function in the options to wait "
            .. "for it")
    end
    local waited = 0
    local limit = self:wait_budget(fetch)
    while self.downloading and waited < limit do
        self.sleep(WAIT_STEP)
        waited = waited + WAIT_STEP
    end
    if self.downloading then
        return nil, errors.new("network", format("waited %g s for a certificate "
            .. "download that another coroutine runs", waited), { reason = "timeout" })
    end
    -- That download may have found a merchant without certificates.
    if self.unavailable then
        return nil, self.unavailable
    end
    return {}
end

-- Runs one download, or waits for the one running elsewhere.  force skips
-- the minimum interval; bootstrap is passed to download.
function _M:download_once(fetch, force, bootstrap)
    if self:download_running() then
        return self:wait_for_download(fetch)
    end

    local now = self.clock()
    if not force and self.last_attempt and now - self.last_attempt < MIN_DOWNLOAD_INTERVAL then
        return nil, errors.new("verify", format("certificates were downloaded %d s ago; the "
            .. "next download may start in %d s", now - self.last_attempt,
            MIN_DOWNLOAD_INTERVAL - (now - self.last_attempt)), { reason = "serial" })
    end
    return self:download(fetch, bootstrap)
end

-- Downloads now, whatever the schedule says (client:refresh_certificates).
-- accept_new_signer trusts the list as a first download would be.
function _M:refresh(fetch, accept_new_signer)
    if not self.apiv3_key then
        return nil, errors.new("config", "refreshing platform certificates needs apiv3_key")
    end
    self.unavailable = nil
    return self:download_once(fetch, true, accept_new_signer)
end

-- Refreshes when the interval has passed since the last success, at most
-- once a minute.  A failure here is not the caller's: the store keeps its
-- keys and the next attempt comes a minute later.
function _M:refresh_if_due(fetch)
    if not self.apiv3_key or self.unavailable or self.last_success == nil
        or self.downloading then
        return
    end
    local now = self.clock()
    if now - self.last_success < self.refresh_interval then
        return
    end
    if self.last_attempt and now - self.last_attempt < MIN_DOWNLOAD_INTERVAL then
        return
    end
    self:download(fetch)
end

-- Verifies a 2xx response or a callback.  An unknown serial leads to one
-- download, at most one a minute whatever the serial (forged responses
-- and callbacks name serials at will), and a second attempt.  A failure
-- stays a verify error, because the request may have been carried out;
-- a failed download is its cause.
function _M:verify(res, fetch, what)
    local now = self.clock()
    self.store:expire(now)
    local ok, code, message = verify_with(self.store, res, now)
    local cause
    if not ok and code == "serial" and self.apiv3_key then
        local downloaded
        if self.unavailable then
            cause = self.unavailable
        else
            downloaded, cause = self:download_once(fetch, false)
        end
        if downloaded then
            ok, code, message = verify_with(self.store, res, now)
        end
    end
    if not ok then
        if cause then
            message = message .. ", and the certificates could not be downloaded: "
                .. cause.message
        end
        local _, err = verify_error(res, code, message, what)
        err.cause = cause
        return nil, err
    end
    return true
end

-- Returns the serial and key to encrypt sensitive fields with: the
-- public key when configured, else the valid platform certificate with
-- the latest expiry, downloading the certificates when none is held.
function _M:encryption_key(fetch)
    local now = self.clock()
    self.store:expire(now)
    local entry, key = self.store:newest(now)
    if not entry and self.apiv3_key then
        if self.unavailable then
            return nil, self.unavailable
        end
        local ok, err = self:download_once(fetch, self.last_success == nil)
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

-- Lists the keys: serial, not_before, not_after (absent for the public
-- key) and source ("public_key", "download" or "config").
function _M:list()
    return self.store:list()
end

function _M:close()
    self.store:close()
end

return _M
