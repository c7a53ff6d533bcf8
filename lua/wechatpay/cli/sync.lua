-- `wechatpay-guide sync FILE.csv`: makes the staff of the stores named
-- in a CSV file match it.  Rows are matched to registered staff by
-- userid, ignoring case as WeCom does, which is also how sync_file.lua
-- finds duplicate rows.  New staff are registered, changed ones updated,
-- and the rest reported as unchanged.  Nothing is deleted, since the
-- platform has no call for it.
--
-- The platform's query returns name and mobile (compared after
-- decryption) but not qr_code, avatar or group_qrcode.  Those are
-- compared with the values the journal records as last sent, and sent
-- again when the journal has no record of them.  An empty group_qrcode
-- cell leaves the platform's value as it is.
local calls = require("wechatpay.cli.calls")
local journal_module = require("wechatpay.cli.journal")
local output = require("wechatpay.cli.output")
local progress_module = require("wechatpay.cli.progress")
local sync_file = require("wechatpay.cli.sync_file")

local EXIT = calls.EXIT

local _M = {}

-- The run stops after this many network errors in a row, because the
-- platform is then most likely unreachable; the rows left are reported.
local MAX_NETWORK_ERRORS = 3

local URL_FIELDS = { "qr_code", "avatar", "group_qrcode" }

_M.REPORT_COLUMNS = { "line", "store_id", "userid", "result", "guide_id", "detail" }

-- Returns the values of the fields that the query does not return.
local function url_values(values)
    local sent = {}
    for _, name in ipairs(URL_FIELDS) do
        sent[name] = values[name]
    end
    return sent
end

-- Lists every store named by a valid row.  Returns the listings by store
-- (calls.userid_key of the userid to the guide, or to "duplicate" when
-- several staff have it), the errors by store, and a fatal network error.
local function list_stores(ctx, rows)
    local listings, failures = {}, {}
    for _, row in ipairs(rows) do
        local store_id = row.store_id
        if #row.problems == 0 and not listings[store_id] and not failures[store_id] then
            local guides, err = calls.list_store(ctx.client, { store_id = store_id })
            if not guides then
                if err.kind == "network" then
                    return nil, nil, err
                end
                failures[store_id] = err
            else
                local by_userid = {}
                for _, guide in ipairs(guides) do
                    if guide.userid then
                        local key = calls.userid_key(guide.userid)
                        by_userid[key] = by_userid[key] and "duplicate" or guide
                    end
                end
                listings[store_id] = by_userid
            end
        end
    end
    return listings, failures
end

-- Returns the fields of row that differ from guide, as a list of
-- { name, reason }.  reason is nil for a known difference, and explains
-- that the journal has no record of the value last sent otherwise.
local function changes_of(row, guide, state)
    local changes = {}
    local v = row.values
    for _, name in ipairs({ "name", "mobile" }) do
        if guide[name] ~= v[name] then
            changes[#changes + 1] = { name = name }
        end
    end
    local known = {}
    if state and state.guide_id == guide.guide_id then
        known = state.sent
    elseif state and state.pending and state.pending.action == "register" then
        -- A dry run does not resolve the pending registration, but the
        -- values it sent are the ones the listed guide most likely has.
        known = state.pending.sent or {}
    end
    for _, name in ipairs(URL_FIELDS) do
        if v[name] ~= nil and known[name] ~= v[name] then
            changes[#changes + 1] = { name = name,
                reason = known[name] == nil and "last value sent not known" or nil }
        end
    end
    return changes
end

local function describe_changes(changes)
    local parts = {}
    for i, change in ipairs(changes) do
        parts[i] = change.name .. (change.reason and (" (" .. change.reason .. ")") or "")
    end
    return table.concat(parts, ", ")
end

-- Resolves a registration whose outcome an earlier run did not record,
-- by what the platform lists now (found_by: listing or query).  Writes
-- the result to the journal.
local function resolve_pending(ctx, row, state, guide, found_by)
    local pending = state and state.pending
    if not pending or pending.action ~= "register" then
        return
    end
    if guide then
        ctx.journal:record("done", "register", row.store_id, row.userid, {
            guide_id = guide.guide_id, sent = pending.sent, resolved = found_by,
        })
        row.resolved = "registered by an earlier run that was stopped before it recorded "
            .. "the result"
    else
        ctx.journal:record("failed", "register", row.store_id, row.userid, {
            resolved = found_by, error = "not registered: the platform does not list it",
        })
    end
end

-- Decides what to do with a valid row: sets row.action to register,
-- update or unchanged, or row.failure.
local function plan_row(ctx, row)
    local listing = ctx.listings[row.store_id]
    if not listing then
        row.failure = "listing store " .. row.store_id .. " failed: "
            .. calls.describe(ctx.store_failures[row.store_id])
        return
    end
    local guide = listing[calls.userid_key(row.userid)]
    if guide == "duplicate" then
        row.failure = "the platform lists more than one staff member with this userid"
        return
    end
    local state = ctx.journal:state(row.store_id, row.userid)
    local found_by = "listing"
    if not guide and state and (state.pending or state.guide_id) then
        -- The journal has a record of this row, so query the platform for
        -- it directly rather than trust a listing that may lag behind.
        local found, err = calls.find_userid(ctx.client, row.store_id, row.userid)
        if found == nil then
            row.failure = "checking the journal's record failed: " .. calls.describe(err)
            row.network = type(err) == "table" and err.kind == "network"
            return
        end
        guide = found or nil
        found_by = "query"
    end
    if not ctx.dry_run then
        resolve_pending(ctx, row, state, guide, found_by)
        state = ctx.journal:state(row.store_id, row.userid)
    end
    if guide then
        row.guide = guide
        row.changes = changes_of(row, guide, state)
        row.action = #row.changes > 0 and "update" or "unchanged"
    elseif state and state.guide_id then
        row.failure = string.format("the journal records this userid as registered "
            .. "(guide_id %s) but the platform does not list it yet; run sync again later",
            state.guide_id)
    else
        row.action = "register"
    end
end

local function register_row(ctx, row)
    local v = row.values
    local sent = url_values(v)
    local journal = ctx.journal
    local ok, jerr = journal:record("intent", "register", row.store_id, row.userid, {
        line = row.line, sent = sent,
    })
    if not ok then
        return nil, jerr, true
    end
    local guide, err = ctx.client:register_guide({
        store_id = row.store_id, corpid = v.corpid, userid = row.userid, name = v.name,
        mobile = v.mobile, qr_code = v.qr_code, avatar = v.avatar,
        group_qrcode = v.group_qrcode,
    })
    if not guide and calls.outcome_unknown(err) then
        -- The registration may have taken effect, so query before
        -- reporting a failure.
        local found, find_err = calls.find_userid(ctx.client, row.store_id, row.userid)
        if found then
            guide = found
            row.resolved = "the call failed (" .. calls.describe(err) .. ") but the "
                .. "platform lists the staff member"
        elseif found == nil then
            journal:record("unknown", "register", row.store_id, row.userid, {
                error = calls.describe(err),
            })
            row.network = err.kind == "network"
            return nil, calls.describe(err) .. "; the outcome is unknown and checking it "
                .. "failed (" .. calls.describe(find_err) .. "); the next run checks again"
        end
    end
    if not guide then
        journal:record("failed", "register", row.store_id, row.userid, {
            error = calls.describe(err),
        })
        row.network = err.kind == "network"
        return nil, calls.describe(err)
    end
    journal:record("done", "register", row.store_id, row.userid, {
        guide_id = guide.guide_id, resolved = row.resolved and "query" or nil,
    })
    row.guide_id = guide.guide_id
    return "registered", row.resolved
end

local function update_row(ctx, row)
    local v = row.values
    local changes = {}
    local names = {}
    local sent = {}
    for i, change in ipairs(row.changes) do
        changes[change.name] = v[change.name]
        names[i] = change.name
        if v[change.name] and change.name ~= "name" and change.name ~= "mobile" then
            sent[change.name] = v[change.name]
        end
    end
    local guide = row.guide
    row.guide_id = guide.guide_id
    local journal = ctx.journal
    local ok, jerr = journal:record("intent", "update", row.store_id, row.userid, {
        line = row.line, guide_id = guide.guide_id, fields = names, sent = sent,
    })
    if not ok then
        return nil, jerr, true
    end
    local updated, err = guide:update(changes)
    if not updated then
        -- An update sent twice leaves the same result, so an unknown
        -- outcome is simply sent again by the next run.
        local event = calls.outcome_unknown(err) and "unknown" or "failed"
        journal:record(event, "update", row.store_id, row.userid, {
            guide_id = guide.guide_id, error = calls.describe(err),
        })
        row.network = err.kind == "network"
        return nil, calls.describe(err)
    end
    journal:record("done", "update", row.store_id, row.userid, { guide_id = guide.guide_id })
    return "updated", describe_changes(row.changes)
end

local function report_entry(row, result, detail)
    return {
        line = row.line,
        store_id = row.store_id or tonumber(row.values.store_id) or row.values.store_id,
        userid = row.userid,
        result = result,
        guide_id = row.guide_id or (row.guide and row.guide.guide_id) or nil,
        detail = detail,
    }
end

-- Carries out one planned row.  Returns its report entry, and true when
-- the journal could not be written (which stops the run).
local function run_row(ctx, row)
    if row.failure then
        return report_entry(row, "failed", row.failure)
    end
    if row.action == "unchanged" then
        return report_entry(row, "unchanged", row.resolved)
    end
    if ctx.dry_run then
        local detail = row.action == "update" and describe_changes(row.changes) or nil
        return report_entry(row, "would " .. row.action, detail)
    end
    local result, detail, fatal
    if row.action == "register" then
        result, detail, fatal = register_row(ctx, row)
    else
        result, detail, fatal = update_row(ctx, row)
    end
    if not result then
        return report_entry(row, "failed", detail), fatal
    end
    return report_entry(row, result, detail)
end

local function summary_of(entries, extra)
    local summary = { registered = 0, updated = 0, unchanged = 0, failed = 0 }
    for _, entry in ipairs(entries) do
        local key = entry.result:match("^would (%a+)$") or entry.result
        key = ({ register = "registered", update = "updated" })[key] or key
        summary[key] = (summary[key] or 0) + 1
    end
    for k, v in pairs(extra) do
        summary[k] = v
    end
    return summary
end

local function summary_line(summary, dry_run)
    local line = string.format("%sregistered %d, updated %d, unchanged %d, failed %d",
        dry_run and "dry run, nothing registered or updated: would be " or "",
        summary.registered, summary.updated, summary.unchanged, summary.failed)
    if summary.not_in_file and summary.not_in_file > 0 then
        line = line .. string.format("; %d registered staff are not in the file",
            summary.not_in_file)
    end
    if summary.blank_lines and summary.blank_lines > 0 then
        line = line .. string.format("; %d blank lines skipped", summary.blank_lines)
    end
    return line
end

local function print_report(ctx, entries, summary)
    local out = ctx.stdout
    if ctx.format == "json" then
        local report = { rows = setmetatable(entries, { __jsontype = "array" }),
            summary = summary, dry_run = ctx.dry_run }
        local order = { "rows", "summary", "dry_run", "registered", "updated", "unchanged",
            "failed", "not_in_file", "blank_lines", "interrupted" }
        for _, column in ipairs(_M.REPORT_COLUMNS) do
            order[#order + 1] = column
        end
        out:write(output.json(report, order), "\n")
        return
    end
    out:write(output.render(entries, _M.REPORT_COLUMNS, ctx.format))
    local line = summary_line(summary, ctx.dry_run)
    if ctx.format == "table" then
        out:write(line, "\n")
    else
        ctx.stderr:write("sync: ", line, "\n")
    end
end

-- Counts the listed staff that no row of the file names.
local function count_not_in_file(ctx, rows)
    local named = {}
    for _, row in ipairs(rows) do
        if row.store_id and row.userid then
            named[row.store_id .. "/" .. calls.userid_key(row.userid)] = true
        end
    end
    local count = 0
    for store_id, listing in pairs(ctx.listings) do
        for userid in pairs(listing) do
            if not named[store_id .. "/" .. userid] then
                count = count + 1
            end
        end
    end
    return count
end

-- Plans and runs every row, adding report entries to entries and
-- reporting progress.  Returns the reason that stopped the run early, if
-- any.
local function run_rows(ctx, rows, entries)
    local network_errors = 0
    local stop_reason
    for i, row in ipairs(rows) do
        if stop_reason then
            entries[i] = report_entry(row, "failed", "not attempted: " .. stop_reason)
        else
            if #row.problems > 0 then
                row.failure = table.concat(row.problems, "; ")
            else
                plan_row(ctx, row)
            end
            local entry, fatal = run_row(ctx, row)
            entries[i] = entry
            network_errors = row.network and network_errors + 1 or 0
            if fatal then
                stop_reason = "the journal could not be written"
            elseif network_errors >= MAX_NETWORK_ERRORS then
                stop_reason = MAX_NETWORK_ERRORS .. " network errors in a row"
            end
        end
        ctx.progress:row(entries[i])
    end
    return stop_reason
end

-- Completes the report after an interruption (Ctrl-C): the row being
-- processed has an unknown outcome, and the rows after it were not
-- attempted.
local function interrupted_entries(rows, entries)
    local current = #entries + 1
    for i = current, #rows do
        local detail = "not attempted: interrupted"
        if i == current then
            detail = "interrupted while being processed; the next run checks its outcome"
        end
        entries[i] = report_entry(rows[i], "failed", detail)
    end
end

-- Runs the command.  ctx: client, settings, stdout, stderr, format,
-- show_personal_data, terminal (standard error is a terminal).  args:
-- file, journal, dry_run, store_id, corpid, extra_columns, quiet.
-- Returns the exit status.
function _M.run(ctx, args)
    local settings = ctx.settings
    ctx.dry_run = args.dry_run
    local rows, blank_or_err = sync_file.read(args.file, {
        store_id = args.store_id or settings.store_id,
        corpid = args.corpid or settings.corpid,
        extra_columns = args.extra_columns,
        show_personal_data = ctx.show_personal_data,
    })
    if not rows then
        ctx.stderr:write("wechatpay-guide: ", blank_or_err, "\n")
        return EXIT.usage
    end

    local journal_path = args.journal or (args.file .. ".journal")
    local journal, warnings = journal_module.open(journal_path, {
        mchid = settings.mchid, sub_mchid = settings.sub_mchid,
        base_url = (settings.base_url:gsub("/+$", "")),
    }, args.dry_run)
    if not journal then
        ctx.stderr:write("wechatpay-guide: ", warnings, "\n")
        return EXIT.usage
    end
    for _, warning in ipairs(warnings) do
        ctx.stderr:write("wechatpay-guide: warning: ", warning, "\n")
    end

    local listings, failures, network_err = list_stores(ctx, rows)
    if not listings then
        journal:close()
        ctx.stderr:write("wechatpay-guide: listing the stores failed, nothing was sent: ",
            calls.describe(network_err), "\n")
        return EXIT.network
    end

    local run = {
        client = ctx.client, journal = journal, listings = listings,
        store_failures = failures, dry_run = args.dry_run,
        progress = progress_module.new({ stream = ctx.stderr, total = #rows,
            terminal = ctx.terminal, quiet = args.quiet }),
    }
    run.progress:start()
    local entries = {}
    -- The standalone lua interpreter turns SIGINT into the error
    -- "interrupted!", caught here to report the rows done so far.
    local ok, stop_reason = pcall(run_rows, run, rows, entries)
    run.progress:finish()
    journal:close()
    local interrupted = false
    if not ok then
        if not tostring(stop_reason):find("interrupted!", 1, true) then
            error(stop_reason, 0)
        end
        interrupted = true
        stop_reason = nil
        interrupted_entries(rows, entries)
        ctx.stderr:write("wechatpay-guide: interrupted; the journal ", journal_path,
            " records what was sent, and the next run carries on from it\n")
    end

    local summary = summary_of(entries, {
        not_in_file = count_not_in_file(run, rows),
        blank_lines = blank_or_err,
    })
    summary.interrupted = interrupted or nil
    print_report(ctx, entries, summary)
    if interrupted then
        return EXIT.interrupted
    end
    if stop_reason and stop_reason:find("network") then
        return EXIT.network
    end
    if summary.failed > 0 then
        return EXIT.failed
    end
    return EXIT.ok
end

return _M
