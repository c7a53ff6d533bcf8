-- A busted output handler: the gtest report, and at the end the counts
-- written to the file named by WXP_TEST_COUNTS, so that the test runner
-- can sum several busted runs into one "N passed, N failed" line.
return function(options)
    local busted = require("busted")
    local handler = require("busted.outputHandlers.gtest")(options)

    busted.subscribe({ "suite", "end" }, function()
        local path = os.getenv("WXP_TEST_COUNTS")
        if path then
            local f = assert(io.open(path, "a"))
            f:write(string.format("%d %d %d\n", handler.successesCount,
                handler.failuresCount + handler.errorsCount,
                handler.pendingsCount))
            f:close()
        end
        return nil, true
    end)

    return handler
end
