-- Signatures, RSA-OAEP, AES-GCM and the /v3/certificates response in
-- wechatpay.core: the known-answer vectors, and cross-checks with the
-- openssl command line (and, for AES-GCM, Python's cryptography package).
local core = require("wechatpay.core")
local helper = require("helper")

local q = helper.shell_quote

local BASE64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

-- Standard base64 with padding, written here so that byte-level edits of
-- ciphertexts do not depend on the library under test.
local function base64_encode(data)
    local out = {}
    for i = 1, #data, 3 do
        local a, b, c = data:byte(i, i + 2)
        local n = (a << 16) | ((b or 0) << 8) | (c or 0)
        local chars = {}
        for k = 1, 4 do
            local index = (n >> (6 * (4 - k))) & 63
            chars[k] = BASE64_ALPHABET:sub(index + 1, index + 1)
        end
        if not b then
            chars[3] = "="
        end
        if not c then
            chars[4] = "="
        end
        out[#out + 1] = table.concat(chars)
    end
    return table.concat(out)
end

local function base64_decode(text)
    local out = {}
    local bits, count = 0, 0
    for char in text:gmatch("[^=]") do
        local index = BASE64_ALPHABET:find(char, 1, true)
        assert(index, "not base64: " .. text)
        bits = (bits << 6) | (index - 1)
        count = count + 6
        if count >= 8 then
            count = count - 8
            out[#out + 1] = string.char((bits >> count) & 0xFF)
        end
    end
    return table.concat(out)
end

local function to_hex(data)
    return (data:gsub(".", function(c)
        return string.format("%02x", c:byte())
    end))
end

local function from_hex(hex)
    return (hex:gsub("%x%x", function(pair)
        return string.char(tonumber(pair, 16))
    end))
end

-- Returns s with bit 0 of byte i flipped.
local function flip_byte(s, i)
    return s:sub(1, i - 1) .. string.char(s:byte(i) ~ 1) .. s:sub(i + 1)
end

-- Runs openssl with its stderr discarded, and fails the test when it exits non-zero.
local function openssl(args)
    local out, ok = helper.openssl(args)
    assert(ok, "openssl " .. args .. " failed")
    return out
end

local vectors = helper.vectors()

describe("wechatpay.core crypto", function()
    local dir
    local key_pem
    local private
    local public
    local other_private
    local other_public

    setup(function()
        dir = helper.tmpdir()
        openssl("genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "
            .. q(dir .. "/key.pem"))
        openssl("pkey -in " .. q(dir .. "/key.pem") .. " -pubout -out " .. q(dir .. "/pub.pem"))
        key_pem = helper.read(dir .. "/key.pem")
        private = assert(core.load_private_key(key_pem))
        public = assert(core.load_public_key(helper.read(dir .. "/pub.pem")))

        local other_pem = assert(core.generate_test_key())
        other_private = assert(core.load_private_key(other_pem))
        local other_cert = assert(core.issue_test_certificate({
            key = other_pem,
            serial = "0B",
            common_name = "other",
            not_before = 1700000000,
            not_after = 2000000000,
        }))
        other_public = assert(core.load_public_key(other_cert))
    end)

    teardown(function()
        helper.cleanup()
    end)

    describe("sign vectors", function()
        if not vectors then
            pending("known-answer vectors not found in " .. helper.vectors_dir)
            return
        end

        for _, case in ipairs(vectors.sign) do
            it("reproduces " .. case.name, function()
                local key = assert(core.load_private_key(helper.vector_file(case.key)))
                assert.equal(case.signature, key:sign(case.message))
            end)
        end
    end)

    describe("verify vectors", function()
        if not vectors then
            pending("known-answer vectors not found in " .. helper.vectors_dir)
            return
        end

        -- Returns a store holding the case's key under its serial, and the
        -- four header values.
        local function store_for(case)
            local key
            if case.public_key then
                key = assert(core.load_public_key(helper.vector_file(case.public_key)))
            else
                local cert = assert(core.load_certificate(helper.vector_file(case.certificate)))
                key = cert:public_key()
            end
            local headers = case.headers
            local store = core.new_store()
            store:put(headers["Wechatpay-Serial"], key)
            return store, headers["Wechatpay-Serial"], headers["Wechatpay-Timestamp"],
                headers["Wechatpay-Nonce"]
        end

        for _, case in ipairs(vectors.verify) do
            describe(case.name, function()
                local signature = case.signature
                local body = case.body

                it("verifies with the clock at its timestamp", function()
                    local store, serial, timestamp, nonce = store_for(case)
                    local now = tonumber(timestamp)
                    local ok, code, message = store:verify(serial, timestamp, nonce, signature,
                        body, now, 300)
                    assert.is_nil(code, message)
                    assert.is_true(ok)
                end)

                it("fails when one byte changes", function()
                    local store, serial, timestamp, nonce = store_for(case)
                    local now = tonumber(timestamp)
                    local ok, code = store:verify(serial, timestamp, nonce, signature,
                        flip_byte(body, #body // 2), now, 300)
                    assert.is_nil(ok)
                    assert.equal("signature", code)
                    ok, code = store:verify(serial, timestamp, flip_byte(nonce, 1), signature,
                        body, now, 300)
                    assert.is_nil(ok)
                    assert.equal("signature", code)
                    ok, code = store:verify(serial, flip_byte(timestamp, #timestamp), nonce,
                        signature, body, now, 300)
                    assert.is_nil(ok)
                    assert.equal("signature", code)
                    ok, code = store:verify(serial, timestamp, nonce, signature, body .. "\n",
                        now, 300)
                    assert.is_nil(ok)
                    assert.equal("signature", code)
                end)

                it("fails on a damaged signature", function()
                    local store, serial, timestamp, nonce = store_for(case)
                    local raw = base64_decode(signature)
                    local damaged = base64_encode(flip_byte(raw, #raw))
                    local ok, code = store:verify(serial, timestamp, nonce, damaged, body,
                        tonumber(timestamp), 300)
                    assert.is_nil(ok)
                    assert.equal("signature", code)
                    ok, code = store:verify(serial, timestamp, nonce, "not base64!", body,
                        tonumber(timestamp), 300)
                    assert.is_nil(ok)
                    assert.equal("signature", code)
                end)

                it("accepts 299 s and rejects 300 s of skew", function()
                    local store, serial, timestamp, nonce = store_for(case)
                    local ts = tonumber(timestamp)
                    for _, now in ipairs({ ts - 299, ts + 299 }) do
                        local ok, code, message = store:verify(serial, timestamp, nonce,
                            signature, body, now, 300)
                        assert.is_nil(code, message)
                        assert.is_true(ok)
                    end
                    for _, now in ipairs({ ts - 300, ts + 300 }) do
                        local ok, code, message = store:verify(serial, timestamp, nonce,
                            signature, body, now, 300)
                        assert.is_nil(ok)
                        assert.equal("stale", code)
                        assert.matches("Wechatpay-Timestamp", message, 1, true)
                    end
                end)

                it("uses a 300 s window by default", function()
                    local store, serial, timestamp, nonce = store_for(case)
                    local ts = tonumber(timestamp)
                    assert.is_true(store:verify(serial, timestamp, nonce, signature, body,
                        ts + 299))
                    local ok, code = store:verify(serial, timestamp, nonce, signature, body,
                        ts - 300)
                    assert.is_nil(ok)
                    assert.equal("stale", code)
                end)

                it("reports an unknown serial", function()
                    local store, _, timestamp, nonce = store_for(case)
                    local ok, code, message = store:verify("UNKNOWN0123", timestamp, nonce,
                        signature, body, tonumber(timestamp), 300)
                    assert.is_nil(ok)
                    assert.equal("serial", code)
                    assert.matches("UNKNOWN0123", message, 1, true)
                end)

                it("reports missing headers", function()
                    local store, serial, timestamp, nonce = store_for(case)
                    local now = tonumber(timestamp)
                    local cases = {
                        { "Wechatpay-Serial", nil, timestamp, nonce, signature },
                        { "Wechatpay-Timestamp", serial, nil, nonce, signature },
                        { "Wechatpay-Nonce", serial, timestamp, nil, signature },
                        { "Wechatpay-Signature", serial, timestamp, nonce, nil },
                    }
                    for _, c in ipairs(cases) do
                        local ok, code, message = store:verify(c[2], c[3], c[4], c[5], body,
                            now, 300)
                        assert.is_nil(ok)
                        assert.equal("missing", code)
                        assert.matches(c[1], message, 1, true)
                    end
                end)

                it("reports a SIGNTEST probe", function()
                    local store, serial, timestamp, nonce = store_for(case)
                    local now = tonumber(timestamp)
                    local probe = "WECHATPAY/SIGNTEST/" .. signature
                    local ok, code, message = store:verify(serial, timestamp, nonce, probe,
                        body, now, 300)
                    assert.is_nil(ok)
                    assert.equal("probe", code)
                    assert.matches("SIGNTEST", message, 1, true)
                    ok, code = store:verify("UNKNOWN0123", timestamp, nonce, probe, body,
                        now, 300)
                    assert.is_nil(ok)
                    assert.equal("probe", code)
                    ok, code = store:verify(serial, timestamp, nonce, "WECHATPAY/SIGNTEST/",
                        body, now, 300)
                    assert.is_nil(ok)
                    assert.equal("probe", code)
                end)

                it("verifies through public:verify", function()
                    local store, serial, timestamp, nonce = store_for(case)
                    local _, key = store:find(serial)
                    local message = core.response_message(timestamp, nonce, body)
                    assert.is_true(key:verify(message, signature))
                    local ok, reason = key:verify(message .. " ", signature)
                    assert.is_false(ok)
                    assert.matches("does not match", reason, 1, true)
                end)
            end)
        end
    end)

    describe("signatures against openssl", function()
        local message = "POST\n/v3/smartguide/guides\n1700000000\nNONCE\n{\"name\":\"张三\"}\n"

        it("openssl verifies our signature", function()
            local signature = assert(private:sign(message))
            local msg_path = helper.write(dir .. "/msg.txt", message)
            local sig_path = helper.write(dir .. "/sig.bin", base64_decode(signature))
            local out, ok = helper.openssl("dgst -sha256 -verify " .. q(dir .. "/pub.pem")
                .. " -signature " .. q(sig_path) .. " " .. q(msg_path))
            assert.is_true(ok)
            assert.equal("Verified OK\n", out)

            local bad_path = helper.write(dir .. "/msg_bad.txt", flip_byte(message, 3))
            local _, bad_ok = helper.openssl("dgst -sha256 -verify " .. q(dir .. "/pub.pem")
                .. " -signature " .. q(sig_path) .. " " .. q(bad_path))
            assert.is_false(bad_ok)
        end)

        it("verifies an openssl signature", function()
            local msg_path = helper.write(dir .. "/msg2.txt", message)
            openssl("dgst -sha256 -sign " .. q(dir .. "/key.pem") .. " -out "
                .. q(dir .. "/sig2.bin") .. " " .. q(msg_path))
            local signature = base64_encode(helper.read(dir .. "/sig2.bin"))
            assert.is_true(public:verify(message, signature))
            assert.equal(signature, private:sign(message))
            assert.is_false(public:verify(flip_byte(message, 1), signature))
            assert.is_false(other_public:verify(message, signature))
        end)

        it("public:verify reports a probe", function()
            local ok, reason = public:verify(message, "WECHATPAY/SIGNTEST/abc")
            assert.is_false(ok)
            assert.matches("SIGNTEST", reason, 1, true)
        end)
    end)

    describe("messages", function()
        it("request_message ends each line in a newline", function()
            local text = core.request_message("POST", "/v3/smartguide/guides?store_id=1",
                1554208460, "593BEC0C930BF1AFEB40B4A08C8FB242", "{\"a\":1}")
            assert.equal("POST\n/v3/smartguide/guides?store_id=1\n1554208460\n"
                .. "593BEC0C930BF1AFEB40B4A08C8FB242\n{\"a\":1}\n", text)
        end)

        it("request_message keeps an empty body line", function()
            assert.equal("GET\n/v3/certificates\n1554208460\nN\n\n",
                core.request_message("GET", "/v3/certificates", 1554208460, "N", ""))
            assert.equal("GET\n/v3/certificates\n1554208460\nN\n\n",
                core.request_message("GET", "/v3/certificates", 1554208460, "N"))
        end)

        it("request_message keeps body bytes as given", function()
            local body = "{\"x\":\"a\0b\"}\n"
            assert.equal("PATCH\n/v3/x\n1\nN\n" .. body .. "\n",
                core.request_message("PATCH", "/v3/x", 1, "N", body))
        end)

        it("response_message ends each line in a newline", function()
            assert.equal("1722850421\nNONCE\n{\"code_url\":\"x\"}\n",
                core.response_message("1722850421", "NONCE", "{\"code_url\":\"x\"}"))
            assert.equal("1722850421\nNONCE\n\n", core.response_message("1722850421", "NONCE", ""))
            assert.equal("1722850421\nNONCE\n\n", core.response_message("1722850421", "NONCE"))
        end)
    end)

    describe("authorization", function()
        local PATTERN = '^WECHATPAY2%-SHA256%-RSA2048 mchid="([^"]*)",nonce_str="([^"]*)",'
            .. 'timestamp="([^"]*)",serial_no="([^"]*)",signature="([^"]*)"$'

        it("has the APIv3 format", function()
            local header = assert(core.authorization(private, "1900007291", "5157F09E",
                "POST", "/v3/smartguide/guides", "{\"a\":1}", 1554208460, "NONCE123"))
            local mchid, nonce, timestamp, serial, signature = header:match(PATTERN)
            assert.equal("1900007291", mchid)
            assert.equal("NONCE123", nonce)
            assert.equal("1554208460", timestamp)
            assert.equal("5157F09E", serial)
            assert.is_not_nil(signature)
        end)

        it("signs the request message", function()
            local header = assert(core.authorization(private, "1900007291", "5157F09E",
                "POST", "/v3/smartguide/guides", "{\"a\":1}", 1554208460, "NONCE123"))
            local signature = select(5, header:match(PATTERN))
            local message = core.request_message("POST", "/v3/smartguide/guides",
                1554208460, "NONCE123", "{\"a\":1}")
            assert.is_true(public:verify(message, signature))
            assert.is_false(public:verify(message .. "x", signature))
        end)

        it("draws a fresh nonce when none is given", function()
            local first = assert(core.authorization(private, "1900007291", "S", "GET",
                "/v3/certificates", "", 1554208460))
            local second = assert(core.authorization(private, "1900007291", "S", "GET",
                "/v3/certificates", "", 1554208460))
            local nonce1, _, _, signature1 = select(2, first:match(PATTERN))
            local nonce2 = select(2, second:match(PATTERN))
            assert.matches("^%x+$", nonce1)
            assert.equal(32, #nonce1)
            assert.are_not.equal(nonce1, nonce2)
            local message = core.request_message("GET", "/v3/certificates", 1554208460, nonce1, "")
            assert.is_true(public:verify(message, signature1))
        end)

        it("reproduces the official signature", function()
            if not vectors then
                pending("known-answer vectors not found in " .. helper.vectors_dir)
                return
            end
            local case = vectors.sign[1]
            local method, url, timestamp, nonce, body =
                case.message:match("^([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n(.*)\n$")
            assert.is_not_nil(body)
            local key = assert(core.load_private_key(helper.vector_file(case.key)))
            local header = assert(core.authorization(key, "1900007291",
                "1DDE55AD98ED71D6EDD4A4A16996DE7B47773A8C", method, url, body,
                tonumber(timestamp), nonce))
            local _, nonce_str, ts, _, signature = header:match(PATTERN)
            assert.equal(nonce, nonce_str)
            assert.equal(timestamp, ts)
            assert.equal(case.signature, signature)
        end)

        it("rejects quotes and newlines in fields", function()
            local cases = {
                { '19"00', "SERIAL", nil },
                { "1900\n", "SERIAL", nil },
                { "1900", 'SER"IAL', nil },
                { "1900", "SERIAL\r\nX-Injected: 1", nil },
                { "1900", "SERIAL", 'NON"CE' },
                { "19\\00", "SERIAL", nil },
            }
            for _, c in ipairs(cases) do
                local header, message = core.authorization(private, c[1], c[2], "GET",
                    "/v3/certificates", "", 1554208460, c[3])
                assert.is_nil(header)
                assert.matches("must not contain quotes", message, 1, true)
            end
        end)
    end)

    describe("RSA-OAEP", function()
        local OAEP_SHA1 = " -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha1"
            .. " -pkeyopt rsa_mgf1_md:sha1"

        it("decrypts the vector", function()
            if not vectors then
                pending("known-answer vectors not found in " .. helper.vectors_dir)
                return
            end
            for _, case in ipairs(vectors.oaep_decrypt) do
                local key = assert(core.load_private_key(helper.vector_file(case.key)))
                assert.equal(case.plaintext, key:decrypt(case.ciphertext))
            end
        end)

        it("round-trips Chinese text", function()
            local text = "张三丰 13800138000 深圳市南山区"
            local ciphertext = assert(public:encrypt(text))
            assert.equal(344, #ciphertext)
            assert.equal(text, private:decrypt(ciphertext))
            assert.are_not.equal(ciphertext, public:encrypt(text))
        end)

        it("openssl decrypts our ciphertext", function()
            local text = "李四 13912345678"
            local ciphertext = assert(public:encrypt(text))
            local in_path = helper.write(dir .. "/oaep.bin", base64_decode(ciphertext))
            local out = openssl("pkeyutl -decrypt -inkey " .. q(dir .. "/key.pem")
                .. OAEP_SHA1 .. " -in " .. q(in_path))
            assert.equal(text, out)
        end)

        it("decrypts an openssl ciphertext", function()
            local text = "王五 abc 123"
            local in_path = helper.write(dir .. "/plain.txt", text)
            openssl("pkeyutl -encrypt -pubin -inkey " .. q(dir .. "/pub.pem") .. OAEP_SHA1
                .. " -in " .. q(in_path) .. " -out " .. q(dir .. "/openssl_oaep.bin"))
            local ciphertext = base64_encode(helper.read(dir .. "/openssl_oaep.bin"))
            assert.equal(text, private:decrypt(ciphertext))
        end)

        it("rejects OAEP with SHA-256", function()
            local in_path = helper.write(dir .. "/plain256.txt", "sha-256 padding")
            openssl("pkeyutl -encrypt -pubin -inkey " .. q(dir .. "/pub.pem")
                .. " -pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256"
                .. " -pkeyopt rsa_mgf1_md:sha256 -in " .. q(in_path)
                .. " -out " .. q(dir .. "/oaep256.bin"))
            local ciphertext = base64_encode(helper.read(dir .. "/oaep256.bin"))
            local plain, message = private:decrypt(ciphertext)
            assert.is_nil(plain)
            assert.matches("RSA-OAEP decryption failed", message, 1, true)
        end)

        it("fails for another key", function()
            local ciphertext = assert(other_public:encrypt("secret"))
            local plain, message = private:decrypt(ciphertext)
            assert.is_nil(plain)
            assert.matches("RSA-OAEP decryption failed", message, 1, true)
        end)

        it("fails on a tampered ciphertext", function()
            local raw = base64_decode(assert(public:encrypt("secret")))
            local plain, message = private:decrypt(base64_encode(flip_byte(raw, 100)))
            assert.is_nil(plain)
            assert.matches("RSA-OAEP decryption failed", message, 1, true)
        end)

        it("fails on text that is not base64", function()
            local plain, message = private:decrypt("this is not base64!")
            assert.is_nil(plain)
            assert.matches("base64", message, 1, true)
            plain, message = private:decrypt("")
            assert.is_nil(plain)
            assert.is_string(message)
        end)

        it("fails on a wrong length", function()
            local raw = base64_decode(assert(public:encrypt("secret")))
            local plain, message = private:decrypt(base64_encode(raw:sub(1, 255)))
            assert.is_nil(plain)
            assert.matches("255 bytes", message, 1, true)
            plain, message = private:decrypt(base64_encode(raw .. "\0"))
            assert.is_nil(plain)
            assert.matches("257 bytes", message, 1, true)
        end)

        it("rejects plaintext over 214 bytes", function()
            local longest = string.rep("a", 214)
            assert.equal(longest, private:decrypt(assert(public:encrypt(longest))))
            local ciphertext, message = public:encrypt(string.rep("a", 215))
            assert.is_nil(ciphertext)
            assert.matches("215 bytes", message, 1, true)
            assert.matches("at most 214", message, 1, true)
        end)
    end)

    describe("AES-GCM", function()
        it("reproduces the vectors", function()
            if not vectors then
                pending("known-answer vectors not found in " .. helper.vectors_dir)
                return
            end
            for _, case in ipairs(vectors.aes_gcm) do
                local key = assert(core.new_aead_key(case.key))
                assert.equal(#case.key, key:size())
                assert.equal(case.plaintext,
                    key:decrypt(case.nonce, case.associated_data, case.ciphertext))
                assert.equal(case.ciphertext,
                    key:encrypt(case.nonce, case.associated_data, case.plaintext))
            end
        end)

        describe("damaged input", function()
            local KEY = "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb"
            local NONCE = "uluk4a9R25RW"
            local AAD = "certificate"
            local PLAIN = "-----BEGIN CERTIFICATE-----\n中文\n"
            local key
            local ciphertext

            setup(function()
                key = assert(core.new_aead_key(KEY))
                ciphertext = assert(key:encrypt(NONCE, AAD, PLAIN))
            end)

            it("round-trips", function()
                assert.equal(PLAIN, key:decrypt(NONCE, AAD, ciphertext))
                assert.equal(#PLAIN + 16, #base64_decode(ciphertext))
            end)

            it("fails on a flipped tag bit", function()
                local raw = base64_decode(ciphertext)
                local plain, message = key:decrypt(NONCE, AAD, base64_encode(flip_byte(raw, #raw)))
                assert.is_nil(plain)
                assert.matches("tag does not match", message, 1, true)
            end)

            it("fails on a flipped ciphertext bit", function()
                local raw = base64_decode(ciphertext)
                local plain, message = key:decrypt(NONCE, AAD, base64_encode(flip_byte(raw, 1)))
                assert.is_nil(plain)
                assert.matches("tag does not match", message, 1, true)
            end)

            it("fails with a wrong nonce", function()
                local plain, message = key:decrypt("uluk4a9R25RX", AAD, ciphertext)
                assert.is_nil(plain)
                assert.matches("tag does not match", message, 1, true)
            end)

            it("fails with wrong associated data", function()
                local plain, message = key:decrypt(NONCE, "certificatf", ciphertext)
                assert.is_nil(plain)
                assert.matches("tag does not match", message, 1, true)
                plain = key:decrypt(NONCE, "", ciphertext)
                assert.is_nil(plain)
            end)

            it("fails with a wrong key", function()
                local wrong = assert(core.new_aead_key(flip_byte(KEY, 1)))
                local plain, message = wrong:decrypt(NONCE, AAD, ciphertext)
                assert.is_nil(plain)
                assert.matches("tag does not match", message, 1, true)
            end)

            it("fails on a truncated ciphertext", function()
                local raw = base64_decode(ciphertext)
                local plain, message = key:decrypt(NONCE, AAD, base64_encode(raw:sub(1, -2)))
                assert.is_nil(plain)
                assert.matches("tag does not match", message, 1, true)
                plain, message = key:decrypt(NONCE, AAD, base64_encode(raw:sub(1, 15)))
                assert.is_nil(plain)
                assert.matches("shorter than its 16-byte tag", message, 1, true)
            end)

            it("fails on text that is not base64", function()
                local plain, message = key:decrypt(NONCE, AAD, "not*base64")
                assert.is_nil(plain)
                assert.matches("base64", message, 1, true)
            end)
        end)

        it("round-trips with 16, 24 and 32-byte keys", function()
            for _, size in ipairs({ 16, 24, 32 }) do
                local key = assert(core.new_aead_key(string.rep("k", size)))
                assert.equal(size, key:size())
                local ciphertext = assert(key:encrypt("123456789012", "", "明文 text"))
                assert.equal("明文 text", key:decrypt("123456789012", "", ciphertext))
                assert.equal("", key:decrypt("123456789012", "ad",
                    assert(key:encrypt("123456789012", "ad", ""))))
            end
        end)

        it("rejects other key sizes", function()
            for _, size in ipairs({ 0, 1, 15, 17, 23, 31, 33, 64 }) do
                local key, message = core.new_aead_key(string.rep("k", size))
                assert.is_nil(key)
                assert.matches(size .. " bytes; expected 16, 24 or 32", message, 1, true)
            end
        end)

        it("hides the key in tostring", function()
            local key = assert(core.new_aead_key("a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb"))
            assert.equal("wechatpay.AeadKey", tostring(key))
        end)

        describe("against Python cryptography", function()
            -- Debian's python3-cryptography (installed by tools/bootstrap.sh)
            -- runs AES-GCM through the same system OpenSSL, so this checks how
            -- the library calls it (tag placement, nonce, associated data),
            -- not a second implementation of the cipher; the vectors do that.
            local PYTHON = "/usr/bin/python3"
            local SCRIPT = "import sys\n"
                .. "from cryptography.hazmat.primitives.ciphers.aead import AESGCM\n"
                .. "op = sys.argv[1]\n"
                .. "key, nonce, aad, data = (bytes.fromhex(a) for a in sys.argv[2:])\n"
                .. "aead = AESGCM(key)\n"
                .. "out = aead.encrypt(nonce, data, aad) if op == 'encrypt'"
                .. " else aead.decrypt(nonce, data, aad)\n"
                .. "sys.stdout.write(out.hex())\n"

            local function python_aead(op, key, nonce, aad, data)
                local out, ok = helper.run(PYTHON .. " -c " .. q(SCRIPT) .. " " .. op .. " "
                    .. q(to_hex(key)) .. " " .. q(to_hex(nonce)) .. " " .. q(to_hex(aad))
                    .. " " .. q(to_hex(data)) .. " 2>&1")
                assert(ok, "python3 failed: " .. out)
                return from_hex(out)
            end

            it("decrypts what Python encrypts", function()
                for _, size in ipairs({ 16, 32 }) do
                    local secret = string.rep("\x5a", size)
                    local raw = python_aead("encrypt", secret, "0123456789ab", "certificate",
                        "平台证书 PEM")
                    local key = assert(core.new_aead_key(secret))
                    assert.equal("平台证书 PEM",
                        key:decrypt("0123456789ab", "certificate", base64_encode(raw)))
                end
            end)

            it("Python decrypts what we encrypt", function()
                local secret = "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb"
                local key = assert(core.new_aead_key(secret))
                local ciphertext = assert(key:encrypt("14b16c03dc1b", "transaction",
                    "{\"out_trade_no\":\"1217752501201407033233368018\"}"))
                local plain = python_aead("decrypt", secret, "14b16c03dc1b", "transaction",
                    base64_decode(ciphertext))
                assert.equal("{\"out_trade_no\":\"1217752501201407033233368018\"}", plain)
            end)
        end)
    end)

    describe("parse_certificates", function()
        local APIV3_KEY = "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb"
        local SERIAL = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
        local cert_pem

        setup(function()
            cert_pem = assert(core.issue_test_certificate({
                key = key_pem,
                serial = SERIAL,
                common_name = "platform",
                not_before = 1700000000,
                not_after = 1900000000,
            }))
        end)

        -- Builds a /v3/certificates body with one entry.  Each member of fields
        -- replaces one of encrypt_certificate: core.null writes JSON null, and
        -- false leaves the member out.
        local function certificates_body(serial_no, associated_data, fields)
            local key = assert(core.new_aead_key(APIV3_KEY))
            local encrypted = {
                algorithm = "AEAD_AES_256_GCM",
                nonce = "61f9c719728a",
                associated_data = associated_data,
                ciphertext = assert(key:encrypt("61f9c719728a", associated_data, cert_pem)),
            }
            for name, value in pairs(fields or {}) do
                encrypted[name] = value or nil
            end
            return assert(core.json_encode({
                data = { {
                    serial_no = serial_no,
                    effective_time = "2023-11-15T06:13:20+08:00",
                    expire_time = "2030-03-17T01:46:40+08:00",
                    encrypt_certificate = encrypted,
                } },
            }))
        end

        it("parses the vector", function()
            if not vectors then
                pending("known-answer vectors not found in " .. helper.vectors_dir)
                return
            end
            local case = vectors.certificates[1]
            local body = helper.vector_file(case.response)
            local key = assert(core.new_aead_key(case.apiv3_key))
            local list, message = key:parse_certificates(body)
            assert.is_nil(message)
            assert.equal(1, #list)
            assert.equal(case.serial_no, list[1]:serial())

            local expected = assert(core.load_certificate(helper.vector_file(case.certificate)))
            assert.equal(expected:serial(), list[1]:serial())
            assert.equal(expected:not_before(), list[1]:not_before())
            assert.equal(expected:not_after(), list[1]:not_after())

            local entry = core.json_decode(body).data[1].encrypt_certificate
            local pem = key:decrypt(entry.nonce, entry.associated_data, entry.ciphertext)
            assert.equal(helper.vector_file(case.certificate), pem)
        end)

        it("names decryption for a wrong APIv3 key", function()
            if not vectors then
                pending("known-answer vectors not found in " .. helper.vectors_dir)
                return
            end
            local case = vectors.certificates[1]
            local key = assert(core.new_aead_key(flip_byte(case.apiv3_key, 32)))
            local list, message = key:parse_certificates(helper.vector_file(case.response))
            assert.is_nil(list)
            assert.matches("could not be decrypted", message, 1, true)
            assert.matches("APIv3 key", message, 1, true)
        end)

        it("fails on a tampered ciphertext", function()
            if not vectors then
                pending("known-answer vectors not found in " .. helper.vectors_dir)
                return
            end
            local case = vectors.certificates[1]
            local body = core.json_decode(helper.vector_file(case.response))
            local entry = body.data[1].encrypt_certificate
            local raw = base64_decode(entry.ciphertext)
            entry.ciphertext = base64_encode(flip_byte(raw, 200))
            local key = assert(core.new_aead_key(case.apiv3_key))
            local list, message = key:parse_certificates(assert(core.json_encode(body)))
            assert.is_nil(list)
            assert.matches("could not be decrypted", message, 1, true)
        end)

        it("rejects a 16-byte key", function()
            local key = assert(core.new_aead_key(string.rep("k", 16)))
            local list, message = key:parse_certificates(certificates_body(SERIAL, "certificate"))
            assert.is_nil(list)
            assert.matches("must be 32", message, 1, true)
        end)

        it("parses a built response", function()
            local key = assert(core.new_aead_key(APIV3_KEY))
            local list = assert(key:parse_certificates(certificates_body(SERIAL, "certificate")))
            assert.equal(1, #list)
            assert.equal(SERIAL, list[1]:serial())
            assert.equal(1900000000, list[1]:not_after())
            assert.is_true(private:matches(list[1]:public_key()))
        end)

        it("rejects a serial_no that differs", function()
            local key = assert(core.new_aead_key(APIV3_KEY))
            local other = "6157F09EFDC096DE15EBE81A47057A7232F1B8E1"
            local list, message = key:parse_certificates(certificates_body(other, "certificate"))
            assert.is_nil(list)
            assert.matches(other, message, 1, true)
            assert.matches(SERIAL, message, 1, true)
        end)

        it("rejects a body that is not JSON", function()
            local key = assert(core.new_aead_key(APIV3_KEY))
            local list, message = key:parse_certificates("<html>502 Bad Gateway</html>")
            assert.is_nil(list)
            assert.matches("not a JSON object", message, 1, true)
        end)

        it("rejects a body without data", function()
            local key = assert(core.new_aead_key(APIV3_KEY))
            for _, body in ipairs({ "{}", "{\"data\":{}}", "[]", "{\"code\":\"NOT_FOUND\"}" }) do
                local list, message = key:parse_certificates(body)
                assert.is_nil(list)
                assert.matches('"data" array', message, 1, true)
            end
        end)

        it("returns no certificates for empty data", function()
            local key = assert(core.new_aead_key(APIV3_KEY))
            local list = assert(key:parse_certificates("{\"data\":[]}"))
            assert.equal(0, #list)
        end)

        it("rejects another algorithm", function()
            local key = assert(core.new_aead_key(APIV3_KEY))
            local body = certificates_body(SERIAL, "certificate",
                { algorithm = "AEAD_AES_128_GCM" })
            local list, message = key:parse_certificates(body)
            assert.is_nil(list)
            assert.matches('algorithm "AEAD_AES_128_GCM" is not AEAD_AES_256_GCM', message,
                1, true)
            list, message = key:parse_certificates(certificates_body(SERIAL, "certificate",
                { algorithm = false }))
            assert.is_nil(list)
            assert.matches("AEAD_AES_256_GCM", message, 1, true)
        end)

        it("rejects an entry without nonce or ciphertext", function()
            local key = assert(core.new_aead_key(APIV3_KEY))
            for _, field in ipairs({ "nonce", "ciphertext" }) do
                local list, message = key:parse_certificates(certificates_body(SERIAL,
                    "certificate", { [field] = false }))
                assert.is_nil(list)
                assert.matches("lacks nonce or ciphertext", message, 1, true)
            end
        end)

        it("treats absent or null associated_data as empty", function()
            local key = assert(core.new_aead_key(APIV3_KEY))
            local absent = certificates_body(SERIAL, "", { associated_data = false })
            assert.is_nil(absent:find("associated_data", 1, true))
            local list, message = key:parse_certificates(absent)
            assert.is_nil(message)
            assert.equal(SERIAL, list[1]:serial())

            local null = certificates_body(SERIAL, "", { associated_data = core.null })
            assert.truthy(null:find("\"associated_data\":null", 1, true))
            list, message = key:parse_certificates(null)
            assert.is_nil(message)
            assert.equal(SERIAL, list[1]:serial())
        end)

        it("checks associated_data when present", function()
            local key = assert(core.new_aead_key(APIV3_KEY))
            local body = certificates_body(SERIAL, "", { associated_data = "certificate" })
            local list, message = key:parse_certificates(body)
            assert.is_nil(list)
            assert.matches("could not be decrypted", message, 1, true)
        end)

        it("fails the whole response on one bad entry", function()
            local key = assert(core.new_aead_key(APIV3_KEY))
            local good = core.json_decode(certificates_body(SERIAL, "certificate")).data[1]
            local bad = core.json_decode(certificates_body(SERIAL, "certificate")).data[1]
            bad.serial_no = "0102"
            local list, message = key:parse_certificates(assert(core.json_encode({
                data = { good, bad },
            })))
            assert.is_nil(list)
            assert.matches("0102", message, 1, true)
        end)
    end)
end)
