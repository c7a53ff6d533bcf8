-- Builds with `luarocks --lua-version 5.4 make rockspec/lua-wechatpay-0.1.0-1.rockspec`
-- from a checkout; nothing is downloaded.
rockspec_format = "3.0"
package = "lua-wechatpay"
version = "0.1.0-1"

source = {
    url = "git+https://github.com/lua-wechatpay/lua-wechatpay.git",
    tag = "v0.1.0",
}

description = {
    summary = "WeChat Pay APIv3 client with a C core, for the smartguide staff calls",
    detailed = [[
Signs requests, verifies responses, encrypts and decrypts sensitive fields
and manages platform certificates or the WeChat Pay public key; covers the
"Pay as a Service" (/v3/smartguide) staff calls and any other APIv3 call.
Includes a local sandbox of the platform for offline development.]],
    license = "MIT",
}

-- The client needs nothing more.  The sandbox (wechatpay.sandbox,
-- bin/wechatpay-sandbox) also needs cqueues and luaossl, and the command
-- line tool (bin/wechatpay-guide) argparse, dkjson, luafilesystem and
-- lua-term; they are not listed here so that `luarocks make` stays
-- offline (Debian: lua-cqueues lua-luaossl lua-argparse lua-dkjson
-- lua-filesystem lua-term).
dependencies = {
    "lua >= 5.4",
}

-- Debian keeps libcurl's headers under the multiarch include folder, where
-- LuaRocks does not look, so libcurl is found by its library.
external_dependencies = {
    OPENSSL = { header = "openssl/evp.h" },
    CURL = { library = "curl" },
    CJSON = { header = "cjson/cJSON.h" },
}

build = {
    type = "builtin",
    modules = {
        ["wechatpay.core"] = {
            sources = {
                "csrc/wxp_util.c", "csrc/wxp_key.c", "csrc/wxp_crypto.c",
                "csrc/wxp_message.c", "csrc/wxp_store.c", "csrc/wxp_certs.c",
                "csrc/wxp_json.c", "csrc/wxp_http.c", "csrc/wxp_testca.c",
                "csrc/lwxp.c", "csrc/lwxp_json.c",
            },
            defines = { "_DEFAULT_SOURCE" },
            incdirs = { "$(OPENSSL_INCDIR)", "$(CJSON_INCDIR)" },
            libdirs = { "$(OPENSSL_LIBDIR)", "$(CURL_LIBDIR)", "$(CJSON_LIBDIR)" },
            libraries = { "ssl", "crypto", "curl", "cjson" },
        },
        ["resty.wechatpay"] = "lua/resty/wechatpay.lua",
        ["wechatpay"] = "lua/wechatpay.lua",
        ["wechatpay.cli"] = "lua/wechatpay/cli.lua",
        ["wechatpay.cli.calls"] = "lua/wechatpay/cli/calls.lua",
        ["wechatpay.cli.commands"] = "lua/wechatpay/cli/commands.lua",
        ["wechatpay.cli.config"] = "lua/wechatpay/cli/config.lua",
        ["wechatpay.cli.csv"] = "lua/wechatpay/cli/csv.lua",
        ["wechatpay.cli.fields"] = "lua/wechatpay/cli/fields.lua",
        ["wechatpay.cli.journal"] = "lua/wechatpay/cli/journal.lua",
        ["wechatpay.cli.output"] = "lua/wechatpay/cli/output.lua",
        ["wechatpay.cli.progress"] = "lua/wechatpay/cli/progress.lua",
        ["wechatpay.cli.sync"] = "lua/wechatpay/cli/sync.lua",
        ["wechatpay.cli.sync_file"] = "lua/wechatpay/cli/sync_file.lua",
        ["wechatpay.client"] = "lua/wechatpay/client.lua",
        ["wechatpay.compat"] = "lua/wechatpay/compat.lua",
        ["wechatpay.errors"] = "lua/wechatpay/errors.lua",
        ["wechatpay.keystore"] = "lua/wechatpay/keystore.lua",
        ["wechatpay.notification"] = "lua/wechatpay/notification.lua",
        ["wechatpay.retry"] = "lua/wechatpay/retry.lua",
        ["wechatpay.sandbox"] = "lua/wechatpay/sandbox.lua",
        ["wechatpay.sandbox.certificates"] = "lua/wechatpay/sandbox/certificates.lua",
        ["wechatpay.sandbox.cli"] = "lua/wechatpay/sandbox/cli.lua",
        ["wechatpay.sandbox.control"] = "lua/wechatpay/sandbox/control.lua",
        ["wechatpay.sandbox.faults"] = "lua/wechatpay/sandbox/faults.lua",
        ["wechatpay.sandbox.http_client"] = "lua/wechatpay/sandbox/http_client.lua",
        ["wechatpay.sandbox.http_server"] = "lua/wechatpay/sandbox/http_server.lua",
        ["wechatpay.sandbox.keys"] = "lua/wechatpay/sandbox/keys.lua",
        ["wechatpay.sandbox.loadgen"] = "lua/wechatpay/sandbox/loadgen.lua",
        ["wechatpay.sandbox.notify"] = "lua/wechatpay/sandbox/notify.lua",
        ["wechatpay.sandbox.platform"] = "lua/wechatpay/sandbox/platform.lua",
        ["wechatpay.sandbox.smartguide"] = "lua/wechatpay/sandbox/smartguide.lua",
        ["wechatpay.sandbox.state"] = "lua/wechatpay/sandbox/state.lua",
        ["wechatpay.sandbox.util"] = "lua/wechatpay/sandbox/util.lua",
        ["wechatpay.shared_keystore"] = "lua/wechatpay/shared_keystore.lua",
        ["wechatpay.smartguide"] = "lua/wechatpay/smartguide.lua",
        ["wechatpay.transport.cosocket"] = "lua/wechatpay/transport/cosocket.lua",
        ["wechatpay.transport.curl"] = "lua/wechatpay/transport/curl.lua",
        ["wechatpay.validate"] = "lua/wechatpay/validate.lua",
    },
    install = {
        bin = {
            ["wechatpay-guide"] = "bin/wechatpay-guide",
            ["wechatpay-sandbox"] = "bin/wechatpay-sandbox",
        },
    },
}
