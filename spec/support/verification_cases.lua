-- The verification failures that both runtimes must report alike: each
-- case arms one sandbox fault on a query and checks the error of that
-- query.  e2e_spec.lua runs them through libcurl, openresty_spec.lua
-- through cosockets in nginx.
local assert = require("luassert")

-- Each case: a test name, the fault, and check(err, downloads), where
-- downloads counts the certificate downloads the query caused.
local cases = {
    {
        name = "fails on a signature over other bytes",
        fault = { fault = "bad_signature" },
        check = function(err)
            assert.equals("verify", err.kind)
            assert.equals("signature", err.reason)
        end,
    },
    {
        name = "fails on a signature by another key",
        fault = { fault = "wrong_key" },
        check = function(err)
            assert.equals("signature", err.reason)
        end,
    },
    {
        name = "refuses the SIGNTEST probe",
        fault = { fault = "signtest" },
        check = function(err)
            assert.equals("verify", err.kind)
            assert.equals("probe", err.reason)
        end,
    },
    {
        name = "refuses a response ten minutes old",
        fault = { fault = "stale_timestamp", skew = -600 },
        check = function(err)
            assert.equals("stale", err.reason)
            assert.matches("clock", err.message)
        end,
    },
    {
        name = "refuses an unknown serial after one download",
        fault = { fault = "unknown_serial" },
        check = function(err, downloads)
            assert.equals("verify", err.kind)
            assert.equals("serial", err.reason)
            assert.is_true(downloads <= 1)
        end,
    },
    {
        name = "reports a 2xx body that is not JSON",
        fault = { fault = "invalid_json" },
        check = function(err)
            assert.equals("api", err.kind)
            assert.matches("not valid JSON", err.message)
        end,
    },
    {
        name = "passes 500 through once retries run out",
        fault = { fault = "status", status = 500, code = "SYSTEM_ERROR",
            message = "系统错误", count = 3 },
        check = function(err)
            assert.equals("api", err.kind)
            assert.equals(500, err.status)
            assert.equals("SYSTEM_ERROR", err.code)
            assert.equals(3, err.attempts)
        end,
    },
}

for _, name in ipairs({ "Wechatpay-Timestamp", "Wechatpay-Nonce",
    "Wechatpay-Signature", "Wechatpay-Serial" }) do
    cases[#cases + 1] = {
        name = "fails when " .. name .. " is missing",
        fault = { fault = "missing_header", header = name },
        check = function(err)
            assert.equals("verify", err.kind)
            assert.equals("missing", err.reason)
            assert.matches(name, err.message, 1, true)
        end,
    }
end

-- Every fault targets the query that the cases make.
for _, case in ipairs(cases) do
    case.fault.path = "/v3/smartguide/guides"
end

return cases
