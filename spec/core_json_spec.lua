-- JSON in wechatpay.core: exact 64-bit integers, floats, sorted keys, the
-- null and empty-array sentinels, UTF-8 rules of the platform, error paths,
-- and large or deep documents.
local core = require("wechatpay.core")

local encode = core.json_encode
local decode = core.json_decode

describe("wechatpay.core JSON", function()
    describe("integers", function()
        it("encodes 64-bit integers exactly", function()
            assert.equal("9007199254740993", encode((1 << 53) + 1))
            assert.equal("9223372036854775807", encode(math.maxinteger))
            assert.equal("-9223372036854775808", encode(math.mininteger))
            assert.equal("-42", encode(-42))
            assert.equal("0", encode(0))
        end)

        it("decodes 64-bit integers exactly", function()
            local values = decode("[9007199254740993,9223372036854775807,"
                .. "-9223372036854775808,-42,0]")
            assert.equal(9007199254740993, values[1])
            assert.equal("integer", math.type(values[1]))
            assert.equal(math.maxinteger, values[2])
            assert.equal("integer", math.type(values[2]))
            assert.equal(math.mininteger, values[3])
            assert.equal("integer", math.type(values[3]))
            assert.equal(-42, values[4])
            assert.equal(0, values[5])
        end)

        it("reads integers exactly inside objects", function()
            local text = '{"store_id":1234567890123456789,"name":"1.5e3 and 7",'
                .. '"list":[{"a":-9007199254740993},2.5,9007199254740995]}'
            local value = decode(text)
            assert.equal(1234567890123456789, value.store_id)
            assert.equal("1.5e3 and 7", value.name)
            assert.equal(-9007199254740993, value.list[1].a)
            assert.equal(2.5, value.list[2])
            assert.equal(9007199254740995, value.list[3])
        end)

        it("round-trips integers", function()
            for _, n in ipairs({ (1 << 53) + 1, math.maxinteger, math.mininteger, -1 }) do
                local back = decode(encode({ n = n })).n
                assert.equal(n, back)
                assert.equal("integer", math.type(back))
            end
        end)

        it("decodes integers beyond 64 bits as floats", function()
            local value = decode("18446744073709551616")
            assert.equal("float", math.type(value))
            assert.equal(2.0 ^ 64, value)
        end)
    end)

    describe("floats", function()
        it("encodes fractions", function()
            assert.equal("1.5", encode(1.5))
            assert.equal("-0.25", encode(-0.25))
            assert.equal("0.1", encode(0.1))
        end)

        it("encodes integral floats as integers", function()
            assert.equal("3", encode(3.0))
            assert.equal("-100", encode(-100.0))
            assert.equal("1234567890000000", encode(1.23456789e15))
            assert.equal("9007199254740992", encode(2.0 ^ 53))
            assert.equal("1152921504606846976", encode(2.0 ^ 60))
        end)

        it("round-trips floats exactly", function()
            local values = { 0.1 + 0.2, 1 / 3, 2.0 ^ 53, 2.0 ^ 53 + 2, 123.456,
                5e-324, 1.7976931348623157e308, -2.5e-8, 2.0 ^ 70 }
            for _, f in ipairs(values) do
                local text = encode(f)
                assert.equal(f, decode(text), string.format("%.17g encoded as %s", f, text))
            end
        end)

        it("decodes fractions and exponents as floats", function()
            local values = decode("[1.5,1e2,-2.5E-3,0.0]")
            assert.equal(1.5, values[1])
            assert.equal(100.0, values[2])
            assert.equal("float", math.type(values[2]))
            assert.equal(-0.0025, values[3])
            assert.equal("float", math.type(values[4]))
        end)
    end)

    describe("structure", function()
        it("encodes nested arrays and objects", function()
            local value = {
                data = { { guide_id = "LLA3", store_id = 1234 }, { guide_id = "LLA4" } },
                total_count = 2,
                ok = true,
                closed = false,
            }
            assert.equal('{"closed":false,"data":[{"guide_id":"LLA3","store_id":1234},'
                .. '{"guide_id":"LLA4"}],"ok":true,"total_count":2}', encode(value))
        end)

        it("sorts object keys by bytes", function()
            local value = { b = 1, a = 2, B = 3, aa = 4, ["中"] = 5, _ = 6 }
            local text = encode(value)
            assert.equal('{"B":3,"_":6,"a":2,"aa":4,"b":1,"中":5}', text)
            local copy = {}
            for _, k in ipairs({ "中", "aa", "_", "B", "a", "b" }) do
                copy[k] = value[k]
            end
            assert.equal(text, encode(copy))
        end)

        it("encodes null and empty array sentinels", function()
            assert.equal('{"a":null,"b":[]}', encode({ a = core.null, b = core.empty_array }))
            assert.equal("null", encode(core.null))
            assert.equal("[]", encode(core.empty_array))
        end)

        it("encodes an empty table as an object", function()
            assert.equal("{}", encode({}))
            assert.equal('{"a":{}}', encode({ a = {} }))
        end)

        it("marks decoded arrays with array_mt", function()
            local value = core.json_decode('{"list":[],"object":{},"items":[1]}')
            assert.equal(core.array_mt, getmetatable(value.list))
            assert.equal(core.array_mt, getmetatable(value.items))
            assert.is_nil(getmetatable(value.object))
            assert.is_nil(getmetatable(value))
        end)

        it("encodes decoded values back the same", function()
            local text = '{"a":[],"b":{},"c":[[],{}],"d":[1,"x",null]}'
            assert.equal(text, core.json_encode(core.json_decode(text)))
        end)

        it("encodes an empty table with array_mt as an array", function()
            assert.equal("[]", core.json_encode(setmetatable({}, core.array_mt)))
        end)

        it("decodes null as core.null", function()
            local value = decode('{"a":null,"b":[null]}')
            assert.equal(core.null, value.a)
            assert.equal(core.null, value.b[1])
            assert.equal(core.null, decode("null"))
        end)

        it("decodes nested values", function()
            local value = decode(' { "a" : [ 1 , { "b" : [ ] , "c" : { } } ] , "d" : true } ')
            assert.equal(1, value.a[1])
            assert.same({}, value.a[2].b)
            assert.same({}, value.a[2].c)
            assert.is_true(value.d)
        end)

        it("encodes scalars at the top level", function()
            assert.equal("true", encode(true))
            assert.equal('"x"', encode("x"))
            assert.equal("7", encode(7))
        end)
    end)

    describe("strings", function()
        it("passes Chinese text through byte for byte", function()
            local text = "Image形象店-深圳腾大-QQ公仔"
            assert.equal('{"description":"' .. text .. '"}', encode({ description = text }))
            assert.equal(text, decode('"' .. text .. '"'))
        end)

        it("escapes quotes, backslashes and controls", function()
            local text = encode("a\"b\\c\nd\te\1")
            assert.equal("a\"b\\c\nd\te\1", decode(text))
            assert.is_nil(text:find("\n", 1, true))
            assert.is_nil(text:find("\1", 1, true))
        end)

        it("decodes unicode escapes to UTF-8", function()
            assert.equal("中文", decode('"\\u4e2d\\u6587"'))
        end)
    end)

    describe("encode errors", function()
        -- Encodes value and returns the error message, failing when it encodes.
        local function encode_error(value)
            local text, message = encode(value)
            assert.is_nil(text)
            assert.is_string(message)
            return message
        end

        it("names the path of invalid UTF-8", function()
            local message = encode_error({ a = { b = { "ok", "ok", "\xff\xfe" } } })
            assert.matches("^a%.b%[3%]: ", message)
            assert.matches("invalid UTF-8", message, 1, true)
        end)

        it("rejects truncated and overlong UTF-8", function()
            assert.matches("invalid UTF-8", encode_error({ s = "\xe4\xb8" }), 1, true)
            assert.matches("invalid UTF-8", encode_error({ s = "\xc0\xaf" }), 1, true)
            assert.matches("invalid UTF-8", encode_error({ s = "\xed\xa0\x80" }), 1, true)
        end)

        it("rejects 4-byte characters", function()
            local message = encode_error({ remark = "thanks 😀" })
            assert.matches("^remark: ", message)
            assert.matches("4-byte UTF-8", message, 1, true)
        end)

        it("rejects NUL bytes", function()
            local message = encode_error({ list = { "a\0b" } })
            assert.matches("^list%[1%]: ", message)
            assert.matches("NUL", message, 1, true)
        end)

        it("rejects NaN and infinity", function()
            assert.matches("^x: NaN", encode_error({ x = 0 / 0 }))
            assert.matches("^x%[2%]: NaN", encode_error({ x = { 1, math.huge } }))
            assert.matches("NaN and infinity", encode_error(-math.huge), 1, true)
        end)

        it("rejects functions and other types", function()
            assert.matches("^f: cannot encode a function", encode_error({ f = print }))
            assert.matches("cannot encode a thread", encode_error({ coroutine.create(print) }),
                1, true)
            assert.matches("cannot encode a userdata", encode_error({ io.stdout }), 1, true)
        end)

        it("rejects mixed tables", function()
            assert.matches("mixes array items and string keys",
                encode_error({ 1, 2, x = 3 }), 1, true)
            assert.matches("^a: ", encode_error({ a = { 1, [3] = 3 } }))
            assert.matches("mixes", encode_error({ [true] = 1 }), 1, true)
            assert.matches("mixes", encode_error({ [1.5] = 1 }), 1, true)
        end)

        it("rejects keys that are not UTF-8", function()
            assert.matches("not valid UTF-8", encode_error({ ["a\xff"] = 1 }), 1, true)
            assert.matches("not valid UTF-8", encode_error({ ["a\0"] = 1 }), 1, true)
        end)

        it("rejects cycles", function()
            local cycle = {}
            cycle.self = cycle
            assert.matches("nested too deep (or a cycle)", encode_error(cycle), 1, true)
            local array_cycle = {}
            array_cycle[1] = array_cycle
            assert.matches("nested too deep (or a cycle)", encode_error(array_cycle), 1, true)
        end)
    end)

    describe("decode errors", function()
        -- Decodes text and returns the error message, failing when it decodes.
        local function decode_error(text)
            local value, message = decode(text)
            assert.is_nil(value)
            assert.is_string(message)
            return message
        end

        it("rejects truncated JSON", function()
            assert.matches("invalid JSON near byte", decode_error('{"a":'), 1, true)
            assert.matches("invalid JSON near byte", decode_error('[1,2'), 1, true)
            assert.matches("invalid JSON near byte", decode_error('"abc'), 1, true)
        end)

        it("rejects trailing garbage", function()
            assert.equal("invalid JSON near byte 4", decode_error("{} x"))
            assert.matches("invalid JSON", decode_error("[1][2]"), 1, true)
        end)

        it("rejects empty text", function()
            assert.equal("invalid JSON: empty text", decode_error(""))
            assert.matches("invalid JSON", decode_error("   "), 1, true)
        end)

        it("accepts whitespace around the value", function()
            assert.same({ a = 1 }, decode(" \r\n\t{\"a\":1}\n "))
        end)
    end)

    describe("size limits", function()
        it("round-trips a 10 MB document", function()
            local chunk = string.rep("商户订单", 1000)        -- 12,000 bytes
            local items = {}
            for i = 1, 900 do
                items[i] = { id = i, text = chunk }
            end
            local text = assert(encode({ data = items }))
            assert.is_true(#text > 10 * 1000 * 1000)
            local value = assert(decode(text))
            assert.equal(900, #value.data)
            assert.equal(chunk, value.data[900].text)
            assert.equal(900, value.data[900].id)
        end)

        it("survives deep nesting", function()
            for _, depth in ipairs({ 100, 1000, 100000 }) do
                local text = string.rep("[", depth) .. string.rep("]", depth)
                local ok, value, message = pcall(decode, text)
                assert.is_true(ok)
                assert.is_true(value ~= nil or type(message) == "string")
            end
            local deep = {}
            local cursor = deep
            for _ = 1, 10000 do
                cursor.next = {}
                cursor = cursor.next
            end
            local ok, text, message = pcall(encode, deep)
            assert.is_true(ok)
            assert.is_nil(text)
            assert.matches("nested too deep", message, 1, true)
        end)

        it("encodes nesting up to 64 levels", function()
            local value = {}
            local cursor = value
            for _ = 1, 63 do
                cursor[1] = {}
                cursor = cursor[1]
            end
            local text = assert(encode(value))
            assert.equal(string.rep("[", 63) .. "{}" .. string.rep("]", 63), text)
        end)
    end)
end)
