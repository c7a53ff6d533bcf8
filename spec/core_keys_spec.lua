-- Keys and certificates of wechatpay.core: loading PEM in its common shapes,
-- rejecting what is not an RSA-2048 private key, public keys, certificate
-- serials and validity dates, cross-checked with the openssl command line.
local core = require("wechatpay.core")
local helper = require("helper")

local q = helper.shell_quote

local MONTHS = {
    Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6,
    Jul = 7, Aug = 8, Sep = 9, Oct = 10, Nov = 11, Dec = 12,
}

-- Runs openssl with its stderr discarded, and fails the test when it exits non-zero.
local function openssl(args)
    local out, ok = helper.openssl(args)
    assert(ok, "openssl " .. args .. " failed")
    return out
end

-- Converts a proleptic Gregorian UTC date to Unix seconds (H. Hinnant's
-- days_from_civil), independently of os.time and the local time zone.
local function utc_to_unix(year, month, day, hour, min, sec)
    if month <= 2 then
        year = year - 1
    end
    local era = year // 400
    local year_of_era = year - era * 400
    local shifted_month = month > 2 and month - 3 or month + 9
    local day_of_year = (153 * shifted_month + 2) // 5 + day - 1
    local day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100
        + day_of_year
    local days = era * 146097 + day_of_era - 719468
    return days * 86400 + hour * 3600 + min * 60 + sec
end

-- Parses the output of `openssl x509 -startdate` or `-enddate`, such as
-- "notBefore=Dec  4 15:45:48 2026 GMT", into Unix seconds.
local function parse_openssl_date(text)
    local mon, day, hour, min, sec, year =
        text:match("=(%a+)%s+(%d+)%s+(%d+):(%d+):(%d+)%s+(%d+)%s+GMT")
    assert(mon, "unexpected openssl date output: " .. text)
    return utc_to_unix(tonumber(year), MONTHS[mon], tonumber(day), tonumber(hour),
        tonumber(min), tonumber(sec))
end

-- Returns the base64 lines inside the PEM blocks of text.
local function pem_body_lines(text)
    local lines = {}
    for line in text:gmatch("[^\r\n]+") do
        if not line:find("-----", 1, true) and #line >= 16 then
            lines[#lines + 1] = line
        end
    end
    return lines
end

describe("wechatpay.core keys", function()
    local dir
    local pkcs8_pem      -- RSA-2048, "PRIVATE KEY"
    local pkcs1_pem      -- the same key, "RSA PRIVATE KEY"
    local spki_pem       -- its public key, "PUBLIC KEY"
    local rsa_public_pem -- its public key, "RSA PUBLIC KEY"
    local cert_pem       -- a self-signed certificate for it
    local other_pem      -- a second RSA-2048 key
    local other_public_pem

    setup(function()
        dir = helper.tmpdir()
        openssl("genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "
            .. q(dir .. "/key.pem"))
        openssl("pkey -in " .. q(dir .. "/key.pem") .. " -traditional -out "
            .. q(dir .. "/key_pkcs1.pem"))
        openssl("pkey -in " .. q(dir .. "/key.pem") .. " -pubout -out "
            .. q(dir .. "/pub.pem"))
        openssl("rsa -in " .. q(dir .. "/key.pem") .. " -RSAPublicKey_out -out "
            .. q(dir .. "/pub_pkcs1.pem"))
        openssl("req -x509 -new -key " .. q(dir .. "/key.pem")
            .. " -subj /CN=test -days 30 -set_serial 0x1234 -out "
            .. q(dir .. "/cert.pem"))
        openssl("genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "
            .. q(dir .. "/other.pem"))
        openssl("pkey -in " .. q(dir .. "/other.pem") .. " -pubout -out "
            .. q(dir .. "/other_pub.pem"))

        pkcs8_pem = helper.read(dir .. "/key.pem")
        pkcs1_pem = helper.read(dir .. "/key_pkcs1.pem")
        spki_pem = helper.read(dir .. "/pub.pem")
        rsa_public_pem = helper.read(dir .. "/pub_pkcs1.pem")
        cert_pem = helper.read(dir .. "/cert.pem")
        other_pem = helper.read(dir .. "/other.pem")
        other_public_pem = helper.read(dir .. "/other_pub.pem")
    end)

    teardown(function()
        helper.cleanup()
    end)

    -- Signs a fixed message.  PKCS#1 v1.5 is deterministic, so equal
    -- signatures mean that the same key was loaded.
    local function signature_of(pem)
        local key = assert(core.load_private_key(pem))
        return assert(key:sign("message to sign\n"))
    end

    it("rejects PEM text over 1 MiB", function()
        local huge = ("A"):rep(1024 * 1024 + 1)
        for _, load in ipairs({ core.load_private_key, core.load_public_key,
            core.load_certificate }) do
            local value, message = load(huge)
            assert.is_nil(value)
            assert.matches("too large", message)
        end
    end)

    describe("load_private_key", function()
        it("loads PKCS#8 PEM", function()
            assert.truthy(pkcs8_pem:find("-----BEGIN PRIVATE KEY-----", 1, true))
            local key, message = core.load_private_key(pkcs8_pem)
            assert.is_nil(message)
            assert.is_not_nil(key)
            assert.equal(2048, key:bits())
        end)

        it("loads PKCS#1 PEM", function()
            assert.truthy(pkcs1_pem:find("-----BEGIN RSA PRIVATE KEY-----", 1, true))
            local key, message = core.load_private_key(pkcs1_pem)
            assert.is_nil(message)
            assert.is_not_nil(key)
            assert.equal(2048, key:bits())
            assert.equal(signature_of(pkcs8_pem), signature_of(pkcs1_pem))
        end)

        it("accepts CRLF line endings", function()
            local crlf8 = pkcs8_pem:gsub("\n", "\r\n")
            local crlf1 = pkcs1_pem:gsub("\n", "\r\n")
            assert.equal(signature_of(pkcs8_pem), signature_of(crlf8))
            assert.equal(signature_of(pkcs8_pem), signature_of(crlf1))
        end)

        it("accepts blank lines and text around the block", function()
            local wrapped = "Bag Attributes\n    friendlyName: merchant\n\n\n"
                .. pkcs8_pem .. "\n\n-- copied from the merchant platform --\n"
            local wrapped1 = "\n\n" .. pkcs1_pem .. "\n\ntrailing note\n"
            assert.equal(signature_of(pkcs8_pem), signature_of(wrapped))
            assert.equal(signature_of(pkcs8_pem), signature_of(wrapped1))
        end)

        it("finds the key in a bundle with a certificate", function()
            assert.equal(signature_of(pkcs8_pem), signature_of(cert_pem .. pkcs8_pem))
            assert.equal(signature_of(pkcs8_pem), signature_of(pkcs8_pem .. cert_pem))
            assert.equal(signature_of(pkcs8_pem), signature_of(cert_pem .. pkcs1_pem))
        end)

        it("rejects a certificate", function()
            local key, message = core.load_private_key(cert_pem)
            assert.is_nil(key)
            assert.matches('found a PEM "CERTIFICATE" block', message, 1, true)
            assert.matches("expected a private key", message, 1, true)
        end)

        it("rejects a public key", function()
            local key, message = core.load_private_key(spki_pem)
            assert.is_nil(key)
            assert.matches('found a PEM "PUBLIC KEY" block', message, 1, true)
            assert.matches("expected a private key", message, 1, true)
        end)

        it("rejects a PKCS#1 public key", function()
            local key, message = core.load_private_key(rsa_public_pem)
            assert.is_nil(key)
            assert.matches('found a PEM "RSA PUBLIC KEY" block', message, 1, true)
        end)

        it("rejects an encrypted PKCS#8 key", function()
            openssl("pkey -in " .. q(dir .. "/key.pem") .. " -aes256 -passout pass:secret"
                .. " -out " .. q(dir .. "/enc8.pem"))
            local pem = helper.read(dir .. "/enc8.pem")
            assert.truthy(pem:find("-----BEGIN ENCRYPTED PRIVATE KEY-----", 1, true))
            local key, message = core.load_private_key(pem)
            assert.is_nil(key)
            assert.matches("protected by a passphrase", message, 1, true)
        end)

        it("rejects an encrypted PKCS#1 key", function()
            openssl("rsa -in " .. q(dir .. "/key.pem") .. " -traditional -aes256"
                .. " -passout pass:secret -out " .. q(dir .. "/enc1.pem"))
            local pem = helper.read(dir .. "/enc1.pem")
            assert.truthy(pem:find("Proc-Type: 4,ENCRYPTED", 1, true))
            local key, message = core.load_private_key(pem)
            assert.is_nil(key)
            assert.matches("protected by a passphrase", message, 1, true)
        end)

        it("never prompts for a passphrase", function()
            -- `script` gives the child a terminal, so a library that asked
            -- OpenSSL for a passphrase would print "Enter pass phrase" and
            -- wait until `timeout` kills it.
            local _, has_script = helper.run("command -v script >/dev/null 2>&1")
            if not has_script then
                pending("the script command (util-linux) is not installed")
                return
            end
            openssl("pkey -in " .. q(dir .. "/key.pem") .. " -aes256 -passout pass:secret"
                .. " -out " .. q(dir .. "/prompt8.pem"))
            openssl("rsa -in " .. q(dir .. "/key.pem") .. " -traditional -aes256"
                .. " -passout pass:secret -out " .. q(dir .. "/prompt1.pem"))
            local child = helper.write(dir .. "/load_encrypted.lua", string.format([[
package.cpath = %q
local core = require("wechatpay.core")
for _, path in ipairs({ %q, %q }) do
    local f = assert(io.open(path, "rb"))
    local key, message = core.load_private_key(f:read("a"))
    f:close()
    io.write(tostring(key), ": ", tostring(message), "\n")
end
]], package.cpath, dir .. "/prompt8.pem", dir .. "/prompt1.pem"))
            local command = "timeout 20 script -qec " .. q("lua5.4 " .. q(child))
                .. " /dev/null < /dev/null 2>&1"
            local out, ok = helper.run(command)
            assert.is_true(ok, "child failed or timed out: " .. out)
            assert.is_nil(out:find("pass phrase", 1, true))
            local _, rejections = out:gsub("nil: private key is protected by a passphrase", "")
            assert.equal(2, rejections)
        end)

        it("rejects garbage", function()
            local key, message = core.load_private_key("this is not a key\n")
            assert.is_nil(key)
            assert.matches("private key is not PEM", message, 1, true)
            assert.matches("BEGIN PRIVATE KEY", message, 1, true)
        end)

        it("rejects an empty string", function()
            local key, message = core.load_private_key("")
            assert.is_nil(key)
            assert.matches("private key is not PEM", message, 1, true)
        end)

        it("rejects a truncated PEM", function()
            local half = pkcs8_pem:sub(1, #pkcs8_pem // 2)
            local key, message = core.load_private_key(half)
            assert.is_nil(key)
            assert.matches('invalid "PRIVATE KEY" PEM block', message, 1, true)
        end)

        it("rejects a PEM with the end line cut", function()
            local cut = pkcs8_pem:gsub("%-%-%-%-%-END PRIVATE KEY%-%-%-%-%-\n?$", "")
            assert.is_nil(cut:find("END", 1, true))
            local key, message = core.load_private_key(cut)
            assert.is_nil(key)
            assert.matches('invalid "PRIVATE KEY" PEM block', message, 1, true)
        end)

        it("rejects an EC key", function()
            openssl("genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "
                .. q(dir .. "/ec.pem"))
            local key, message = core.load_private_key(helper.read(dir .. "/ec.pem"))
            assert.is_nil(key)
            assert.matches("not an RSA key", message, 1, true)
            assert.matches("RSA-2048", message, 1, true)
        end)

        it("rejects an EC key in SEC1 form", function()
            openssl("ec -in " .. q(dir .. "/ec.pem") .. " -out " .. q(dir .. "/ec_sec1.pem"))
            local pem = helper.read(dir .. "/ec_sec1.pem")
            assert.truthy(pem:find("BEGIN EC PRIVATE KEY", 1, true))
            local key, message = core.load_private_key(pem)
            assert.is_nil(key)
            assert.matches('found a PEM "EC PRIVATE KEY" block', message, 1, true)
        end)

        it("rejects an RSA-1024 key", function()
            openssl("genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out "
                .. q(dir .. "/rsa1024.pem"))
            local key, message = core.load_private_key(helper.read(dir .. "/rsa1024.pem"))
            assert.is_nil(key)
            assert.matches("1024 bits", message, 1, true)
            assert.matches("at least 2048", message, 1, true)
        end)

        it("accepts an RSA-4096 key", function()
            local pem = assert(core.generate_test_key(4096))
            local key = assert(core.load_private_key(pem))
            assert.equal(4096, key:bits())
        end)
    end)

    describe("load_public_key", function()
        -- Returns whether public verifies a signature made with the test key.
        local function verifies_test_signature(public)
            local signature = signature_of(pkcs8_pem)
            return public:verify("message to sign\n", signature)
        end

        it("loads SPKI PEM", function()
            local public, message = core.load_public_key(spki_pem)
            assert.is_nil(message)
            assert.equal(2048, public:bits())
            assert.is_true(verifies_test_signature(public))
        end)

        it("loads PKCS#1 RSA PUBLIC KEY PEM", function()
            assert.truthy(rsa_public_pem:find("-----BEGIN RSA PUBLIC KEY-----", 1, true))
            local public, message = core.load_public_key(rsa_public_pem)
            assert.is_nil(message)
            assert.equal(2048, public:bits())
            assert.is_true(verifies_test_signature(public))
        end)

        it("loads the key of a certificate", function()
            local public, message = core.load_public_key(cert_pem)
            assert.is_nil(message)
            assert.is_true(verifies_test_signature(public))
        end)

        it("accepts CRLF and surrounding text", function()
            local text = "WeChat Pay public key\r\n\r\n" .. spki_pem:gsub("\n", "\r\n") .. "\r\n"
            local public = assert(core.load_public_key(text))
            assert.is_true(verifies_test_signature(public))
        end)

        it("rejects a private key", function()
            local public, message = core.load_public_key(pkcs8_pem)
            assert.is_nil(public)
            assert.matches('found a PEM "PRIVATE KEY" block', message, 1, true)
            assert.matches("expected a public key", message, 1, true)
        end)

        it("rejects garbage and empty text", function()
            local public, message = core.load_public_key("garbage")
            assert.is_nil(public)
            assert.matches("public key is not PEM", message, 1, true)
            public, message = core.load_public_key("")
            assert.is_nil(public)
            assert.matches("public key is not PEM", message, 1, true)
        end)

        it("rejects an EC public key", function()
            openssl("genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "
                .. q(dir .. "/ec2.pem"))
            openssl("pkey -in " .. q(dir .. "/ec2.pem") .. " -pubout -out "
                .. q(dir .. "/ec2_pub.pem"))
            local public, message = core.load_public_key(helper.read(dir .. "/ec2_pub.pem"))
            assert.is_nil(public)
            assert.matches("not an RSA key", message, 1, true)
        end)
    end)

    describe("private:matches", function()
        it("is true for a key pair", function()
            local private = assert(core.load_private_key(pkcs8_pem))
            assert.is_true(private:matches(assert(core.load_public_key(spki_pem))))
            assert.is_true(private:matches(assert(core.load_public_key(rsa_public_pem))))
            local cert = assert(core.load_certificate(cert_pem))
            assert.is_true(private:matches(cert:public_key()))
        end)

        it("is false for another key", function()
            local private = assert(core.load_private_key(pkcs8_pem))
            local other = assert(core.load_private_key(other_pem))
            assert.is_false(private:matches(assert(core.load_public_key(other_public_pem))))
            assert.is_false(other:matches(assert(core.load_public_key(spki_pem))))
        end)
    end)

    describe("tostring", function()
        it("never shows key material", function()
            local private = assert(core.load_private_key(pkcs8_pem))
            local public = assert(core.load_public_key(spki_pem))
            local cert = assert(core.load_certificate(cert_pem))
            local cases = {
                { tostring(private), pkcs8_pem },
                { tostring(public), spki_pem },
                { tostring(cert), cert_pem },
            }
            for _, case in ipairs(cases) do
                local text, pem = case[1], case[2]
                assert.is_true(#text < 80, text)
                for _, line in ipairs(pem_body_lines(pem)) do
                    assert.is_nil(text:find(line:sub(1, 16), 1, true), text)
                end
            end
            assert.equal("wechatpay.PrivateKey (RSA 2048 bits)", tostring(private))
            assert.equal("wechatpay.PublicKey (RSA 2048 bits)", tostring(public))
            assert.equal("wechatpay.Certificate (serial 1234)", tostring(cert))
        end)
    end)

    describe("load_certificate", function()
        local vectors = helper.vectors()

        it("rejects a private key", function()
            local cert, message = core.load_certificate(pkcs8_pem)
            assert.is_nil(cert)
            assert.matches('expected a certificate, found a PEM "PRIVATE KEY" block',
                message, 1, true)
        end)

        it("rejects garbage and a truncated certificate", function()
            local cert, message = core.load_certificate("nothing here")
            assert.is_nil(cert)
            assert.matches("certificate is not PEM", message, 1, true)
            cert, message = core.load_certificate(cert_pem:sub(1, #cert_pem // 2))
            assert.is_nil(cert)
            assert.matches('invalid "CERTIFICATE" PEM block', message, 1, true)
        end)

        it("rejects a certificate for an RSA-1024 key", function()
            openssl("genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out "
                .. q(dir .. "/small.pem"))
            openssl("req -x509 -new -key " .. q(dir .. "/small.pem")
                .. " -subj /CN=small -days 1 -out " .. q(dir .. "/small_cert.pem"))
            local cert, message = core.load_certificate(helper.read(dir .. "/small_cert.pem"))
            assert.is_nil(cert)
            assert.matches("1024 bits", message, 1, true)
        end)

        if not vectors then
            pending("known-answer vectors not found in " .. helper.vectors_dir)
        else
            for _, case in ipairs(vectors.serials) do
                it("reads the serial of " .. case.certificate, function()
                    local pem = helper.vector_file(case.certificate)
                    local cert = assert(core.load_certificate(pem))
                    assert.equal(case.serial_no, cert:serial())
                    local path = helper.vectors_dir .. "/" .. case.certificate
                    local printed = openssl("x509 -serial -noout -in " .. q(path))
                    assert.equal("serial=" .. case.serial_no .. "\n", printed)
                end)
            end

            it("matches openssl validity dates on vector certificates", function()
                for _, case in ipairs(vectors.serials) do
                    local path = helper.vectors_dir .. "/" .. case.certificate
                    local cert = assert(core.load_certificate(helper.read(path)))
                    local start = openssl("x509 -startdate -noout -in " .. q(path))
                    local finish = openssl("x509 -enddate -noout -in " .. q(path))
                    assert.equal(parse_openssl_date(start), cert:not_before())
                    assert.equal(parse_openssl_date(finish), cert:not_after())
                end
            end)
        end

        -- Serials as given to openssl, and as the platform writes them: upper
        -- case, two digits a byte, with a leading zero kept within a byte.
        -- The DER sign byte (the 00 before FF01) is not part of the number.
        local serial_cases = {
            { "0x0A1B", "0A1B" },
            { "0xABC", "0ABC" },
            { "0x00FF01", "FF01" },
            { "0x80", "80" },
            { "0x01", "01" },
            { "0x7f", "7F" },
            { "0x5dea10ef55877e3cf6c33255c2e7defff7e427ec",
              "5DEA10EF55877E3CF6C33255C2E7DEFFF7E427EC" },
            { "0xFFEEDDCCBBAA99887766554433221100FFEEDDCC",
              "FFEEDDCCBBAA99887766554433221100FFEEDDCC" },
        }

        for _, case in ipairs(serial_cases) do
            local openssl_serial, expected = case[1], case[2]

            it("reads serial " .. openssl_serial .. " as openssl prints it", function()
                local path = dir .. "/serial_" .. openssl_serial .. ".pem"
                openssl("req -x509 -new -key " .. q(dir .. "/key.pem")
                    .. " -subj /CN=serial -days 2 -set_serial " .. openssl_serial
                    .. " -out " .. q(path))
                local printed = openssl("x509 -serial -noout -in " .. q(path))
                local cert = assert(core.load_certificate(helper.read(path)))
                assert.equal("serial=" .. expected .. "\n", printed)
                assert.equal(expected, cert:serial())
            end)
        end

        it("reads serials of issue_test_certificate", function()
            for _, case in ipairs(serial_cases) do
                local hex = case[1]:sub(3)
                local pem = assert(core.issue_test_certificate({
                    key = pkcs8_pem,
                    serial = hex,
                    common_name = "serial",
                    not_before = 1700000000,
                    not_after = 1800000000,
                }))
                local path = helper.write(dir .. "/issued_" .. hex .. ".pem", pem)
                local printed = openssl("x509 -serial -noout -in " .. q(path))
                local cert = assert(core.load_certificate(pem))
                assert.equal("serial=" .. case[2] .. "\n", printed)
                assert.equal(case[2], cert:serial())
            end
        end)

        -- Both sides of 2038 and of 2050, where X.509 switches from
        -- UTCTime to GeneralizedTime.
        local date_cases = {
            { 946684800, 1700000000 },     -- 2000-01-01 to 2023-11-14
            { 2147483647, 2524607999 },    -- 2038-01-19 to 2049-12-31 23:59:59
            { 2524608000, 4102444800 },    -- 2050-01-01 to 2100-01-01
        }

        for _, case in ipairs(date_cases) do
            it("reads validity " .. case[1] .. " to " .. case[2], function()
                local pem = assert(core.issue_test_certificate({
                    key = pkcs8_pem,
                    serial = "01",
                    common_name = "dates",
                    not_before = case[1],
                    not_after = case[2],
                }))
                local path = helper.write(dir .. "/dates_" .. case[1] .. ".pem", pem)
                local cert = assert(core.load_certificate(pem))
                local start = openssl("x509 -startdate -noout -in " .. q(path))
                local finish = openssl("x509 -enddate -noout -in " .. q(path))
                assert.equal(case[1], parse_openssl_date(start))
                assert.equal(case[2], parse_openssl_date(finish))
                assert.equal(case[1], cert:not_before())
                assert.equal(case[2], cert:not_after())
            end)
        end

        it("matches openssl dates on an openssl certificate", function()
            local cert = assert(core.load_certificate(cert_pem))
            local path = dir .. "/cert.pem"
            local start = openssl("x509 -startdate -noout -in " .. q(path))
            local finish = openssl("x509 -enddate -noout -in " .. q(path))
            assert.equal(parse_openssl_date(start), cert:not_before())
            assert.equal(parse_openssl_date(finish), cert:not_after())
            assert.equal(30 * 86400, cert:not_after() - cert:not_before())
        end)
    end)
end)
