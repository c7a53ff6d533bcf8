-- The key store of wechatpay.core: keys by serial, expiry, and the choice
-- of the key to encrypt with.
local core = require("wechatpay.core")

local NOW = 1750000000
local DAY = 86400

describe("wechatpay.core store", function()
    local pem_a
    local private_a, public_a
    local private_b, public_b

    -- Returns the public half of a private key through a test certificate.
    local function public_of(private_pem)
        local cert = assert(core.issue_test_certificate({
            key = private_pem,
            serial = "01",
            common_name = "store",
            not_before = NOW - DAY,
            not_after = NOW + DAY,
        }))
        return assert(core.load_certificate(cert)):public_key()
    end

    setup(function()
        pem_a = assert(core.generate_test_key())
        local pem_b = assert(core.generate_test_key())
        private_a = assert(core.load_private_key(pem_a))
        private_b = assert(core.load_private_key(pem_b))
        public_a = public_of(pem_a)
        public_b = public_of(pem_b)
    end)

    describe("put and find", function()
        it("finds an entry and its key", function()
            local store = core.new_store()
            store:put("5157F09E", public_a, NOW - DAY, NOW + DAY, "download")
            local entry, key = store:find("5157F09E")
            assert.same({
                serial = "5157F09E",
                not_before = NOW - DAY,
                not_after = NOW + DAY,
                source = "download",
            }, entry)
            assert.is_true(private_a:matches(key))
            assert.is_false(private_b:matches(key))
        end)

        it("returns nothing for an unknown serial", function()
            local store = core.new_store()
            store:put("5157F09E", public_a)
            assert.is_nil(store:find("5157F09F"))
            assert.is_nil(store:find("5157f09e"))
            assert.is_nil(store:find(""))
        end)

        it("defaults to no expiry and download", function()
            local store = core.new_store()
            store:put("PUB_KEY_ID_0114232134912410000000000000", public_a)
            local entry = store:find("PUB_KEY_ID_0114232134912410000000000000")
            assert.equal(0, entry.not_before)
            assert.is_nil(entry.not_after)
            assert.equal("download", entry.source)
        end)

        it("records each source", function()
            local store = core.new_store()
            for _, source in ipairs({ "public_key", "download", "config" }) do
                store:put(source, public_a, 0, nil, source)
                assert.equal(source, store:find(source).source)
            end
        end)

        it("raises on an unknown source", function()
            local store = core.new_store()
            assert.has_error(function()
                store:put("S", public_a, 0, NOW, "cache")
            end)
            assert.equal(0, store:count())
        end)

        it("raises on a private key", function()
            local store = core.new_store()
            assert.has_error(function()
                store:put("S", private_a)
            end)
        end)

        it("replaces an entry with the same serial", function()
            local store = core.new_store()
            store:put("S1", public_a, NOW - DAY, NOW + DAY, "download")
            store:put("S1", public_b, NOW, NOW + 2 * DAY, "config")
            assert.equal(1, store:count())
            local entry, key = store:find("S1")
            assert.equal(NOW, entry.not_before)
            assert.equal(NOW + 2 * DAY, entry.not_after)
            assert.equal("config", entry.source)
            assert.is_true(private_b:matches(key))
        end)

        it("keeps a key after the caller closes it", function()
            local store = core.new_store()
            local key = public_of(pem_a)
            store:put("S1", key)
            key:close()
            local _, found = store:find("S1")
            assert.is_true(private_a:matches(found))
        end)
    end)

    describe("remove, list and count", function()
        it("counts entries", function()
            local store = core.new_store()
            assert.equal(0, store:count())
            store:put("S1", public_a)
            store:put("S2", public_b)
            assert.equal(2, store:count())
        end)

        it("removes by serial", function()
            local store = core.new_store()
            store:put("S1", public_a)
            store:put("S2", public_b)
            store:put("S3", public_a)
            assert.is_true(store:remove("S2"))
            assert.is_false(store:remove("S2"))
            assert.is_false(store:remove("S9"))
            assert.equal(2, store:count())
            assert.is_nil(store:find("S2"))
            assert.is_not_nil(store:find("S1"))
            assert.is_not_nil(store:find("S3"))
        end)

        it("lists entries in insertion order", function()
            local store = core.new_store()
            store:put("S1", public_a, 1, 100, "config")
            store:put("S2", public_b)
            store:put("S3", public_a, 5, 50, "public_key")
            store:remove("S1")
            assert.same({
                { serial = "S2", not_before = 0, source = "download" },
                { serial = "S3", not_before = 5, not_after = 50, source = "public_key" },
            }, store:list())
        end)

        it("lists an empty store", function()
            assert.same({}, core.new_store():list())
        end)

        it("shows the count in tostring", function()
            local store = core.new_store()
            store:put("S1", public_a)
            assert.equal("wechatpay.Store (1 keys)", tostring(store))
        end)
    end)

    describe("expire", function()
        it("drops entries whose not_after has passed", function()
            local store = core.new_store()
            store:put("old", public_a, NOW - 10 * DAY, NOW - DAY)
            store:put("edge", public_a, NOW - 10 * DAY, NOW)
            store:put("valid", public_b, NOW - DAY, NOW + 1)
            store:put("pubkey", public_b)
            assert.equal(2, store:expire(NOW))
            assert.equal(2, store:count())
            assert.is_nil(store:find("old"))
            assert.is_nil(store:find("edge"))
            assert.is_not_nil(store:find("valid"))
            assert.is_not_nil(store:find("pubkey"))
        end)

        it("keeps entries that are not yet valid", function()
            local store = core.new_store()
            store:put("future", public_a, NOW + DAY, NOW + 10 * DAY)
            assert.equal(0, store:expire(NOW))
            assert.equal(1, store:count())
        end)

        it("returns zero on an empty store", function()
            assert.equal(0, core.new_store():expire(NOW))
        end)
    end)

    describe("newest", function()
        it("picks the latest not_after", function()
            local store = core.new_store()
            store:put("early", public_a, NOW - 10 * DAY, NOW + DAY)
            store:put("late", public_b, NOW - DAY, NOW + 5 * DAY)
            store:put("middle", public_a, NOW - 5 * DAY, NOW + 3 * DAY)
            local entry, key = store:newest(NOW)
            assert.equal("late", entry.serial)
            assert.is_true(private_b:matches(key))
        end)

        it("prefers an entry without expiry", function()
            local store = core.new_store()
            store:put("cert", public_a, NOW - DAY, NOW + 1000 * DAY, "download")
            store:put("PUB_KEY_ID_1", public_b, 0, nil, "public_key")
            store:put("cert2", public_a, NOW - DAY, NOW + 2000 * DAY, "config")
            local entry, key = store:newest(NOW)
            assert.equal("PUB_KEY_ID_1", entry.serial)
            assert.is_nil(entry.not_after)
            assert.is_true(private_b:matches(key))
        end)

        it("skips entries not yet valid", function()
            local store = core.new_store()
            store:put("current", public_a, NOW - DAY, NOW + DAY)
            store:put("future", public_b, NOW + 1, NOW + 10 * DAY)
            assert.equal("current", store:newest(NOW).serial)
            assert.equal("future", store:newest(NOW + 1).serial)
        end)

        it("skips expired entries", function()
            local store = core.new_store()
            store:put("expired", public_a, NOW - 10 * DAY, NOW)
            store:put("long_expired", public_a, NOW - 10 * DAY, NOW - 5 * DAY)
            assert.is_nil(store:newest(NOW))
            assert.equal("expired", store:newest(NOW - 1).serial)
            store:put("current", public_b, NOW - DAY, NOW + DAY)
            assert.equal("current", store:newest(NOW).serial)
        end)

        it("returns nothing when no entry is valid", function()
            local store = core.new_store()
            assert.is_nil(store:newest(NOW))
            store:put("expired", public_a, NOW - 10 * DAY, NOW - DAY)
            store:put("future", public_b, NOW + DAY, NOW + 10 * DAY)
            assert.is_nil(store:newest(NOW))
        end)
    end)

    describe("close", function()
        it("raises when used after close", function()
            local store = core.new_store()
            store:put("S1", public_a)
            store:close()
            store:close()
            assert.has_error(function()
                store:count()
            end)
            assert.equal("wechatpay.Store (0 keys)", tostring(store))
        end)
    end)
end)
