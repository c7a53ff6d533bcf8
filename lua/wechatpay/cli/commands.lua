-- The commands of wechatpay-guide other than sync: register, list, find,
-- assign, update, certs and sandbox.  Each takes the context (client,
-- settings, streams, format) and the parsed arguments, and returns the
-- exit status.
local calls = require("wechatpay.cli.calls")
local fields = require("wechatpay.cli.fields")
local output = require("wechatpay.cli.output")

local EXIT = calls.EXIT

local _M = {}

_M.GUIDE_COLUMNS = { "guide_id", "store_id", "userid", "work_id", "name", "mobile" }

local function fail(ctx, message, status)
    ctx.stderr:write("wechatpay-guide: ", message, "\n")
    return status
end

-- Reports a library error and returns its exit status.
local function call_failed(ctx, operation, err)
    local message = operation .. " failed: " .. calls.describe(err)
    if err.kind == "verify" or err.kind == "decrypt" then
        message = message .. "; the call may have been carried out"
    end
    return fail(ctx, message, calls.exit_status(err))
end

local function store_id_of(ctx, args)
    local store_id = args.store_id or ctx.settings.store_id
    if store_id == nil then
        return nil, fail(ctx, "no store: pass --store-id or set store_id in "
            .. "the configuration file or WECHATPAY_STORE_ID", EXIT.usage)
    end
    return store_id
end

local function print_rows(ctx, rows, columns, empty_message)
    local text = output.render(rows, columns, ctx.format)
    if text == "" then
        ctx.stderr:write(empty_message, "\n")
        return
    end
    ctx.stdout:write(text)
end

local function guide_rows(guides, show_personal_data)
    local rows = {}
    for i, guide in ipairs(guides) do
        rows[i] = output.personal({
            guide_id = guide.guide_id, store_id = guide.store_id, userid = guide.userid,
            work_id = guide.work_id, name = guide.name, mobile = guide.mobile,
        }, show_personal_data)
    end
    return rows
end

-- Checks the given text fields; returns true, or nil and a message.
local function check_fields(ctx, values, names)
    for _, name in ipairs(names) do
        if values[name] ~= nil then
            local problem = fields.problem(name, values[name], ctx.show_personal_data)
            if problem then
                return nil, problem
            end
        end
    end
    return true
end

-- wechatpay-guide register
function _M.register(ctx, args)
    local store_id, status = store_id_of(ctx, args)
    if not store_id then
        return status
    end
    local values = {
        store_id = store_id, corpid = args.corpid or ctx.settings.corpid,
        userid = args.userid, name = args.name, mobile = args.mobile,
        qr_code = args.qr_code, avatar = args.avatar, group_qrcode = args.group_qrcode,
    }
    if values.corpid == nil then
        return fail(ctx, "no corpid: pass --corpid or set corpid in the configuration "
            .. "file or WECHATPAY_CORPID", EXIT.usage)
    end
    local ok, problem = check_fields(ctx, values, { "corpid", "userid", "name", "mobile",
        "qr_code", "avatar", "group_qrcode" })
    if not ok then
        return fail(ctx, problem, EXIT.usage)
    end

    local client = ctx.client
    local guide, err = client:register_guide(values)
    if not guide and calls.outcome_unknown(err) then
        -- The staff member may have been registered although the response
        -- was lost, so query before reporting a failure.
        local found = calls.find_userid(client, store_id, values.userid)
        if found then
            ctx.stderr:write("wechatpay-guide: the registration call failed (",
                calls.describe(err), ") but the platform lists the staff member\n")
            guide = found
        end
    end
    if not guide then
        return call_failed(ctx, "registration", err)
    end
    print_rows(ctx, { { guide_id = guide.guide_id, store_id = store_id,
        userid = values.userid } }, { "guide_id", "store_id", "userid" }, "")
    return EXIT.ok
end

-- wechatpay-guide list
function _M.list(ctx, args)
    local store_id, status = store_id_of(ctx, args)
    if not store_id then
        return status
    end
    local guides, err = calls.list_store(ctx.client, { store_id = store_id })
    if not guides then
        return call_failed(ctx, "listing store " .. store_id, err)
    end
    print_rows(ctx, guide_rows(guides, ctx.show_personal_data), _M.GUIDE_COLUMNS,
        "no staff registered in store " .. store_id)
    return EXIT.ok
end

-- wechatpay-guide find
function _M.find(ctx, args)
    local store_id, status = store_id_of(ctx, args)
    if not store_id then
        return status
    end
    local params = { store_id = store_id }
    local filters = {}
    for _, name in ipairs({ "userid", "mobile", "work_id" }) do
        if args[name] then
            params[name] = args[name]
            filters[#filters + 1] = name
        end
    end
    if #filters ~= 1 then
        return fail(ctx, "give exactly one of --userid, --mobile and --work-id", EXIT.usage)
    end
    local ok, problem = check_fields(ctx, params, filters)
    if not ok then
        return fail(ctx, problem, EXIT.usage)
    end
    local guides, err = calls.list_store(ctx.client, params)
    if not guides then
        return call_failed(ctx, "the query", err)
    end
    print_rows(ctx, guide_rows(guides, ctx.show_personal_data), _M.GUIDE_COLUMNS,
        "no staff matched in store " .. store_id)
    return EXIT.ok
end

-- wechatpay-guide assign
function _M.assign(ctx, args)
    local guide, err = ctx.client:guide(args.guide_id)
    if not guide then
        return fail(ctx, calls.describe(err), EXIT.usage)
    end
    local ok
    ok, err = guide:assign(args.out_trade_no)
    if not ok then
        return call_failed(ctx, "the assignment", err)
    end
    print_rows(ctx, { { guide_id = args.guide_id, out_trade_no = args.out_trade_no,
        result = "assigned" } }, { "guide_id", "out_trade_no", "result" }, "")
    return EXIT.ok
end

-- wechatpay-guide update
function _M.update(ctx, args)
    local changes = {}
    local names = {}
    for _, name in ipairs(fields.UPDATABLE) do
        if args[name] ~= nil then
            changes[name] = args[name]
            names[#names + 1] = name
        end
    end
    if #names == 0 then
        return fail(ctx, "nothing to update: give at least one of --name, --mobile, "
            .. "--qr-code, --avatar and --group-qrcode", EXIT.usage)
    end
    local ok, problem = check_fields(ctx, changes, names)
    if not ok then
        return fail(ctx, problem, EXIT.usage)
    end
    local guide, err = ctx.client:guide(args.guide_id)
    if not guide then
        return fail(ctx, calls.describe(err), EXIT.usage)
    end
    ok, err = guide:update(changes)
    if not ok then
        return call_failed(ctx, "the update", err)
    end
    print_rows(ctx, { { guide_id = args.guide_id, result = "updated",
        fields = table.concat(names, ", ") } }, { "guide_id", "result", "fields" }, "")
    return EXIT.ok
end

local function iso_time(seconds)
    if type(seconds) ~= "number" then
        return nil
    end
    return os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(seconds))
end

local function held_downloads(client)
    for _, entry in ipairs(client:certificates()) do
        if entry.source == "download" then
            return true
        end
    end
    return false
end

-- Returns the change of each serial in a refresh_certificates() result:
-- added, removed or kept.
local function change_by_serial(changes)
    local by_serial = {}
    for _, change in ipairs({ "added", "removed", "kept" }) do
        for _, serial in ipairs(type(changes) == "table" and changes[change] or {}) do
            by_serial[serial] = change
        end
    end
    return by_serial
end

-- wechatpay-guide certs
function _M.certs(ctx, args)
    local client = ctx.client
    local changes
    if args.refresh then
        if type(client.refresh_certificates) ~= "function" then
            return fail(ctx, "--refresh needs client:refresh_certificates(), which this "
                .. "version of lua-wechatpay does not have", EXIT.failed)
        end
        local err
        changes, err = client:refresh_certificates()
        if not changes then
            return call_failed(ctx, "the certificate refresh", err)
        end
    elseif ctx.settings.apiv3_key_configured and not held_downloads(client) then
        -- A new client has no platform certificate until its first call
        -- needs one.  This request makes the download any call would make.
        local res, err = client:request("GET", "/v3/certificates")
        if not res then
            return call_failed(ctx, "downloading the platform certificates", err)
        end
    end

    local by_serial = change_by_serial(changes)
    local rows = {}
    for _, entry in ipairs(client:certificates()) do
        rows[#rows + 1] = {
            serial = entry.serial, source = entry.source,
            not_before = iso_time(entry.not_before), not_after = iso_time(entry.not_after),
            change = by_serial[entry.serial],
        }
        by_serial[entry.serial] = nil
    end
    local removed = {}
    for serial in pairs(by_serial) do
        removed[#removed + 1] = serial
    end
    table.sort(removed)
    for _, serial in ipairs(removed) do
        rows[#rows + 1] = { serial = serial, source = "download", change = by_serial[serial] }
    end
    local columns = { "serial", "source", "not_before", "not_after" }
    if changes then
        columns[#columns + 1] = "change"
    end
    print_rows(ctx, rows, columns, "the client holds no key")
    return EXIT.ok
end

-- wechatpay-guide sandbox: runs bin/wechatpay-sandbox's command with the
-- arguments given after "sandbox".
function _M.sandbox(ctx, args, help_text)
    local argv = args.sandbox_options or {}
    for _, word in ipairs(argv) do
        if word == "--help" or word == "-h" then
            ctx.stdout:write(help_text, "\n\nOptions passed to the sandbox:\n\n")
            ctx.stdout:flush()
            break
        end
    end
    local loaded, sandbox_cli = pcall(require, "wechatpay.sandbox.cli")
    if not loaded then
        return fail(ctx, "the sandbox cannot start: " .. tostring(sandbox_cli)
            .. "; it needs the Lua modules cqueues and luaossl (Debian packages "
            .. "lua-cqueues and lua-luaossl)", EXIT.usage)
    end
    return sandbox_cli.main(argv)
end

return _M
