-- Callbacks (notifications) as the platform sends them: a JSON body
-- whose resource is encrypted with AES-256-GCM under the APIv3 key,
-- signed like a response (WECHATPAY2-SHA256-RSA2048 over timestamp,
-- nonce and the raw body), and POSTed to the merchant's URL.  POST
-- /sandbox/notify (control.lua) checks a request with check(), builds
-- the callback with build() and sends it with deliver().
--
-- Callbacks go only to http URLs whose host is literally a loopback
-- address (see http_client.parse_url), and no host name is resolved.
local core = require("wechatpay.core")
local faults = require("wechatpay.sandbox.faults")
local http_client = require("wechatpay.sandbox.http_client")
local util = require("wechatpay.sandbox.util")

local _M = {}

local SIGNATURE_TYPE = "WECHATPAY2-SHA256-RSA2048"
local USER_AGENT = "wechatpay-sandbox"
local DEFAULT_EVENT_TYPE = "TRANSACTION.SUCCESS"
local DEFAULT_ORIGINAL_TYPE = "transaction"
-- The platform waits 5 s for the merchant's reply before it counts the
-- delivery as failed.
local DELIVERY_TIMEOUT = 5
local MAX_RESPONSE_BODY = 1024
local MAX_FIELD_BYTES = 256
local SIGNERS = { certificate = true, public_key = true }

-- Callback faults.  Each runs at one stage of build(): "encrypt" before
-- the resource is encrypted, "body" before the body is encoded,
-- "signing" before the signature and "headers" after it.  The last
-- five are the response faults of faults.lua, which work on the same
-- draft fields (timestamp, key, signature, serial, omit).
local KINDS = {
    wrong_apiv3_key = {
        stage = "encrypt",
        apply = function(_, draft)
            draft.aead_key = assert(core.new_aead_key(util.random_alphanumeric(32)))
        end,
    },
    -- Changing the first base64 character changes the first ciphertext
    -- byte, so the GCM tag no longer matches.
    tampered_ciphertext = {
        stage = "body",
        apply = function(_, draft)
            local ciphertext = draft.resource.ciphertext
            local replacement = ciphertext:sub(1, 1) == "A" and "B" or "A"
            draft.resource.ciphertext = replacement .. ciphertext:sub(2)
        end,
    },
    signtest = faults.KINDS.signtest,
    bad_signature = faults.KINDS.bad_signature,
    stale_timestamp = faults.KINDS.stale_timestamp,
    missing_header = faults.KINDS.missing_header,
    unknown_serial = faults.KINDS.unknown_serial,
}

local function fault_names()
    local names = {}
    for name in pairs(KINDS) do
        names[#names + 1] = name
    end
    table.sort(names)
    return table.concat(names, ", ")
end

-- Returns body[name] as a string of min_bytes to MAX_FIELD_BYTES bytes
-- of UTF-8, or default when it is absent.  Returns nil and a message
-- otherwise.
local function text_field(body, name, min_bytes, default)
    local value = body[name]
    if value == nil then
        return default
    end
    if type(value) ~= "string" or #value < min_bytes or #value > MAX_FIELD_BYTES then
        return nil, name .. " must be a string of " .. min_bytes .. " to " .. MAX_FIELD_BYTES
            .. " bytes"
    end
    local valid, problem = core.utf8_check(value)
    if not valid then
        return nil, name .. ": " .. problem
    end
    return value
end

local function is_object(value)
    return type(value) == "table" and value[1] == nil and value ~= core.empty_array
end

-- Returns "certificate" or "public_key": the requested signer, or the
-- mode's (certificate in both mode).  Returns nil and a message when
-- the mode does not offer the requested key.
local function choose_signer(sign_with, keys)
    if sign_with == nil then
        return keys:uses_certificates() and "certificate" or "public_key"
    end
    if not SIGNERS[sign_with] then
        return nil, "sign_with must be \"certificate\" or \"public_key\""
    end
    if sign_with == "certificate" and not keys:uses_certificates() then
        return nil, "sign_with certificate needs a sandbox in certificate or both mode;"
            .. " this one runs in public_key mode"
    end
    if sign_with == "public_key" and not keys:uses_public_key() then
        return nil, "sign_with public_key needs a sandbox in public_key or both mode;"
            .. " this one runs in certificate mode"
    end
    return sign_with
end

-- Returns the prepared fault of the request, nil when it names none, or
-- false and a message.
local function prepare_fault(body)
    if body.fault == nil then
        return nil
    end
    local kind = KINDS[body.fault]
    if not kind then
        return false, "unknown fault " .. tostring(body.fault) .. "; expected one of "
            .. fault_names()
    end
    local fault = { name = body.fault, kind = kind }
    if kind.prepare then
        local ok, problem = kind.prepare(fault, body)
        if not ok then
            return false, problem
        end
    end
    return fault
end

-- Checks the body of POST /sandbox/notify against the key material.
-- Returns the callback request (url parsed, defaults applied, resource
-- encoded as the plaintext), or nil and a message.
function _M.check(body, keys)
    local request = {}
    local err
    request.url, err = http_client.parse_url(body.url)
    if not request.url then
        return nil, err
    end
    request.url_text = body.url

    if not is_object(body.resource) then
        return nil, "resource must be a JSON object: the plaintext of the callback"
    end
    request.plaintext, err = core.json_encode(body.resource)
    if not request.plaintext then
        return nil, "resource cannot be encoded as JSON: " .. tostring(err)
    end

    request.event_type, err = text_field(body, "event_type", 1, DEFAULT_EVENT_TYPE)
    if not request.event_type then
        return nil, err
    end
    request.original_type, err = text_field(body, "original_type", 1, DEFAULT_ORIGINAL_TYPE)
    if not request.original_type then
        return nil, err
    end
    local default_summary = request.event_type == DEFAULT_EVENT_TYPE and "支付成功"
        or request.event_type
    request.summary, err = text_field(body, "summary", 0, default_summary)
    if not request.summary then
        return nil, err
    end
    -- Absent stays absent and null stays null, so that receivers can be
    -- tested with each form of "no associated data".
    if body.associated_data ~= core.null then
        request.associated_data, err = text_field(body, "associated_data", 0, nil)
        if err then
            return nil, err
        end
    else
        request.associated_data = core.null
    end

    request.sign_with, err = choose_signer(body.sign_with, keys)
    if not request.sign_with then
        return nil, err
    end
    request.fault, err = prepare_fault(body)
    if request.fault == false then
        return nil, err
    end
    return request
end

local function apply_stage(fault, stage, draft)
    if fault and fault.kind.stage == stage then
        fault.kind.apply(fault, draft)
    end
end

-- Returns a random ID in the form of a UUID.
local function new_id()
    local hex = core.nonce():lower()
    return hex:sub(1, 8) .. "-" .. hex:sub(9, 12) .. "-" .. hex:sub(13, 16) .. "-"
        .. hex:sub(17, 20) .. "-" .. hex:sub(21, 32)
end

-- Builds the callback of a checked request at the sandbox time now.
-- Returns { headers (array of { name, value } in sending order), body }.
-- The body bytes are exactly the bytes that were signed.
function _M.build(request, keys, now)
    local fault = request.fault
    local draft = { aead_key = keys.aead_key, timestamp = now, nonce = core.nonce() }

    apply_stage(fault, "encrypt", draft)
    local aead_nonce = util.random_alphanumeric(12)
    local associated_data = request.associated_data
    local aad = type(associated_data) == "string" and associated_data or ""
    draft.resource = {
        original_type = request.original_type,
        algorithm = "AEAD_AES_256_GCM",
        ciphertext = assert(draft.aead_key:encrypt(aead_nonce, aad, request.plaintext)),
        nonce = aead_nonce,
        associated_data = associated_data,
    }
    apply_stage(fault, "body", draft)
    draft.body = assert(core.json_encode({
        id = new_id(),
        create_time = util.rfc3339_china(now),
        resource_type = "encrypt-resource",
        event_type = request.event_type,
        summary = request.summary,
        resource = draft.resource,
    }))

    draft.serial, draft.key = keys:callback_signer(request.sign_with)
    apply_stage(fault, "signing", draft)
    draft.signature = draft.key:sign(core.response_message(tostring(draft.timestamp),
        draft.nonce, draft.body))
    apply_stage(fault, "headers", draft)

    local headers, add = util.header_list(draft.omit)
    add("Host", request.url.authority)
    add("User-Agent", USER_AGENT)
    add("Content-Type", "application/json")
    add("Content-Length", tostring(#draft.body))
    add("Connection", "close")
    add("Wechatpay-Nonce", draft.nonce)
    add("Wechatpay-Serial", draft.serial)
    add("Wechatpay-Signature", draft.signature)
    add("Wechatpay-Signature-Type", SIGNATURE_TYPE)
    add("Wechatpay-Timestamp", tostring(draft.timestamp))
    return { headers = headers, body = draft.body }
end

-- Returns at most MAX_RESPONSE_BODY bytes of a response body as text
-- that JSON can carry: cut at a character boundary when it is UTF-8,
-- with other bytes escaped as \xNN when it is not.
local function printable_prefix(body)
    local prefix = body:sub(1, MAX_RESPONSE_BODY)
    for cut = 0, 3 do
        local candidate = prefix:sub(1, #prefix - cut)
        if core.utf8_check(candidate) then
            return util.printable(candidate)
        end
    end
    return util.printable(prefix)
end

-- POSTs a built callback to the request's URL and waits up to 5 s for
-- the reply.  Returns the control API result: status (0 when nothing
-- came back), response_body (the first 1 KB), error (why delivery
-- failed, if it did) and sent { headers (name to value), body }.
function _M.deliver(request, callback)
    local response, err = http_client.request(request.url, "POST", callback.headers,
        callback.body, DELIVERY_TIMEOUT, MAX_RESPONSE_BODY)
    local sent_headers = {}
    for _, header in ipairs(callback.headers) do
        sent_headers[header[1]] = header[2]
    end
    return {
        status = response and response.status or 0,
        response_body = response and printable_prefix(response.body) or "",
        error = err,
        sent = { headers = sent_headers, body = callback.body },
    }
end

return _M
