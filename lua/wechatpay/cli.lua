-- The wechatpay-guide command: manages WeChat Pay "Pay as a Service"
-- (支付即服务) staff from a shell.  Parses the arguments with argparse,
-- loads the configuration, creates the client and runs the command.
local argparse = require("argparse")
local term = require("term")
local calls = require("wechatpay.cli.calls")
local commands = require("wechatpay.cli.commands")
local config = require("wechatpay.cli.config")
local output = require("wechatpay.cli.output")
local sync = require("wechatpay.cli.sync")

local EXIT = calls.EXIT

local _M = {}

local PROGRAM = "wechatpay-guide"

local DESCRIPTION = [[
Manages the staff ("guides") of WeChat Pay's Pay as a Service (支付即服务)
through the APIv3 /v3/smartguide calls: registers, lists, finds, assigns
and updates staff, and brings a store in line with a CSV file.]]

local EPILOG = [[
Configuration: --config PATH, else $WECHATPAY_CONFIG, else
$XDG_CONFIG_HOME/wechatpay/config.lua (or config.json there), with
XDG_CONFIG_HOME defaulting to ~/.config.  A .json file is JSON; any other
is Lua that returns a table.  The file, the private key file and the
APIv3 key file must be readable by their owner only (chmod 600).  The
sandbox's sandbox.json is a valid configuration.

Each setting may be overridden by its environment variable:

  mchid             WECHATPAY_MCHID             merchant ID
  serial_no         WECHATPAY_SERIAL_NO         merchant API certificate serial
  private_key_file  WECHATPAY_PRIVATE_KEY_FILE  merchant private key (PEM)
  apiv3_key_file    WECHATPAY_APIV3_KEY_FILE    file holding the APIv3 key
  public_key_file   WECHATPAY_PUBLIC_KEY_FILE   WeChat Pay public key (PEM)
  public_key_id     WECHATPAY_PUBLIC_KEY_ID     its ID (PUB_KEY_ID_...)
  base_url          WECHATPAY_BASE_URL          required; no default
  sub_mchid         WECHATPAY_SUB_MCHID         sub-merchant (service providers)
  ca_file           WECHATPAY_CA_FILE           CA bundle for TLS
  store_id          WECHATPAY_STORE_ID          default store
  corpid            WECHATPAY_CORPID            default WeCom corpid
  timeout           WECHATPAY_TIMEOUT           seconds per attempt (default 10)

The timeout bounds one attempt of a request.  A whole call, with its
retries and any certificate download, gets three times as long.

Exit status: 0 success; 1 the platform rejected a call or some sync rows
failed; 2 usage, configuration or input file error; 3 network error;
4 a response failed verification (the call may have been carried out);
130 interrupted.

Run "wechatpay-guide COMMAND --help" for the options of a command.]]

local function positive_integer(text)
    local value = text:match("^%d+$") and math.tointeger(tonumber(text))
    if not value then
        return nil, "expected a non-negative integer, got " .. text
    end
    return value
end

local function positive_number(text)
    local value = tonumber(text)
    if not value or not (value > 0) then
        return nil, "expected a number of seconds greater than 0, got " .. text
    end
    return value
end

-- Adds the output options shared by the commands that print staff.
local function add_output_options(command, personal)
    command:option("--format", "Output format: table for people, csv or json for scripts.")
        :choices(output.FORMATS):default("table")
    if personal then
        command:flag("--show-personal-data",
            "Show names and mobiles in full; they are masked otherwise (张*, 138****8000).")
    end
end

local function add_store_option(command)
    command:option("--store-id", "Store ID (default: store_id of the configuration).")
        :argname("<id>"):convert(positive_integer)
end

local function build_parser()
    local parser = argparse(PROGRAM, DESCRIPTION, EPILOG)
        :command_target("command")
        :help_max_width(80)
    parser:option("--config", "Configuration file (Lua or JSON; see below).")
        :argname("<path>")
    parser:option("--timeout", "Seconds allowed for each attempt of a request (default "
        .. "10).  A whole call, with its retries and any certificate download, gets "
        .. "three times that.")
        :argname("<seconds>"):convert(positive_number)

    local register = parser:command("register", "Register a staff member.")
    register:option("--userid", "WeCom userid of the staff member."):count(1)
    register:option("--name", "Name (sent encrypted)."):count(1)
    register:option("--mobile", "Mobile number (sent encrypted)."):count(1)
    register:option("--qr-code", "URL of the staff member's WeCom QR code."):count(1)
    register:option("--avatar", "URL of the avatar."):count(1)
    register:option("--group-qrcode", "URL of a group chat QR code.")
    register:option("--corpid", "WeCom corpid (default: corpid of the configuration).")
    add_store_option(register)
    add_output_options(register, false)

    local list = parser:command("list", "List every staff member of a store.")
    add_store_option(list)
    add_output_options(list, true)

    local find = parser:command("find", "Find staff by userid, mobile or work_id.")
    find:option("--userid", "WeCom userid.")
    find:option("--mobile", "Mobile number (sent encrypted).")
    find:option("--work-id", "Work ID (staff of merchants on personal WeChat).")
    add_store_option(find)
    add_output_options(find, true)

    local assign = parser:command("assign", "Assign a staff member to an order before "
        .. "it is paid.")
    assign:argument("guide_id", "Guide ID, as list prints it.")
    assign:argument("out_trade_no", "Merchant order number.")
    add_output_options(assign, false)

    local update = parser:command("update", "Update a staff member's details.")
    update:argument("guide_id", "Guide ID, as list prints it.")
    update:option("--name", "New name (sent encrypted).")
    update:option("--mobile", "New mobile number (sent encrypted).")
    update:option("--qr-code", "New URL of the WeCom QR code.")
    update:option("--avatar", "New URL of the avatar.")
    update:option("--group-qrcode", "New URL of a group chat QR code.")
    add_output_options(update, false)

    local sync_command = parser:command("sync", "Register and update staff from a CSV file.",
        [[
The header row names the columns: store_id, corpid, userid, name, mobile,
qr_code, avatar and group_qrcode (store_id and corpid may come from the
options instead).  Rows are matched to registered staff by userid,
ignoring case, as WeCom userids are.  Each call is recorded in the
journal before it is sent and after it returns, so that a run started
again after being killed registers nobody twice.
The exit status is 1 when any row failed.]])
    sync_command:argument("file", "CSV file (RFC 4180, UTF-8).")
    sync_command:flag("--dry-run", "Print what would be done; register and update "
        .. "nothing.  The stores are still listed, which may download certificates.")
    sync_command:option("--journal", "Journal file (default: FILE.journal).")
        :argname("<path>")
    sync_command:option("--corpid", "WeCom corpid for rows that have none.")
        :argname("<corpid>")
    sync_command:flag("--extra-columns", "Ignore columns other than the known ones.")
    sync_command:flag("--quiet", "No progress on standard error.")
    add_store_option(sync_command)
    add_output_options(sync_command, true)

    local certs = parser:command("certs", "List the keys that verify the platform's "
        .. "responses.")
    certs:flag("--refresh", "Download the platform certificates again and show what "
        .. "changed.")
    add_output_options(certs, false)

    local sandbox = parser:command("sandbox", "Run the bundled sandbox of the platform "
        .. "in the foreground.", [[
Every argument after "sandbox" goes to the sandbox (see the list below
with --help).  It writes sandbox.json into its --dir, and
"wechatpay-guide --config DIR/sandbox.json ..." then talks to it.]])
    sandbox:argument("sandbox_options", "Options of the sandbox."):args("*")
    sandbox:handle_options(false)
    return parser, sandbox
end

-- Builds the context the commands share, with the client.  Returns it,
-- or nil and the exit status.
local function new_context(args, streams)
    local ctx = {
        stdout = streams.stdout,
        stderr = streams.stderr,
        format = args.format or "table",
        show_personal_data = args.show_personal_data and true or false,
        terminal = term.isatty(streams.stderr),
    }
    local settings, sources = config.load({ config = args.config, env = streams.env })
    if not settings then
        ctx.stderr:write(PROGRAM, ": ", sources, "\n")
        return nil, EXIT.usage
    end
    if args.timeout then
        settings.timeout = args.timeout
        sources.timeout = "--timeout"
    end
    settings.apiv3_key_configured = settings.apiv3_key ~= nil
        or settings.apiv3_key_file ~= nil
    local client, err = config.new_client(settings, sources)
    if not client then
        ctx.stderr:write(PROGRAM, ": ", err, "\n")
        return nil, EXIT.usage
    end
    ctx.settings = settings
    ctx.client = client
    return ctx
end

local function dispatch(args, streams, sandbox_command)
    if args.command == "sandbox" then
        return commands.sandbox({ stdout = streams.stdout, stderr = streams.stderr }, args,
            sandbox_command:get_help())
    end
    local ctx, status = new_context(args, streams)
    if not ctx then
        return status
    end
    if args.command == "sync" then
        status = sync.run(ctx, args)
    else
        status = commands[args.command](ctx, args)
    end
    ctx.client:close()
    return status
end

-- Runs the command with argv (the arguments without the program name).
-- streams: stdout, stderr (files) and env (like os.getenv), for tests.
-- Returns the exit status.
function _M.main(argv, streams)
    streams = streams or {}
    streams.stdout = streams.stdout or io.stdout
    streams.stderr = streams.stderr or io.stderr
    local parser, sandbox_command = build_parser()
    local ok, args = parser:pparse(argv)
    if not ok then
        streams.stderr:write(parser:get_usage(), "\n\n", PROGRAM, ": ", args,
            "; see ", PROGRAM, " --help\n")
        return EXIT.usage
    end
    local interrupted = false
    local function handler(message)
        if tostring(message):find("interrupted!", 1, true) then
            interrupted = true
            return message
        end
        return debug.traceback(message, 2)
    end
    local finished, status = xpcall(dispatch, handler, args, streams, sandbox_command)
    if not finished then
        if interrupted then
            streams.stderr:write(PROGRAM, ": interrupted\n")
            return EXIT.interrupted
        end
        error(status, 0)
    end
    return status
end

return _M
