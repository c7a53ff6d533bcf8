# lua-wechatpay: build, test, demo.  `make help` lists the targets.

LUA ?= lua5.4
LUA_VERSION ?= 5.4
PKG_CONFIG ?= pkg-config
PREFIX ?= /usr/local
LUA_LIBDIR ?= $(PREFIX)/lib/lua/$(LUA_VERSION)
LUA_SHAREDIR ?= $(PREFIX)/share/lua/$(LUA_VERSION)

LUA_CFLAGS ?= $(shell $(PKG_CONFIG) --cflags lua$(LUA_VERSION))
DEP_CFLAGS ?= $(shell $(PKG_CONFIG) --cflags libcurl libcjson openssl)
DEP_LIBS ?= $(shell $(PKG_CONFIG) --libs libcurl libcjson openssl)

WARNINGS = -Wall -Wextra -Werror -Wshadow -Wpointer-arith \
           -Wmissing-prototypes -Wstrict-prototypes -Wformat=2 \
           -Wundef -Wcast-qual -Wvla
CFLAGS ?= -O2 -g
ALL_CFLAGS = -std=c11 -D_DEFAULT_SOURCE -fPIC $(WARNINGS) $(CFLAGS) \
             $(LUA_CFLAGS) $(DEP_CFLAGS)
LDFLAGS ?=

BUILD ?= build
CORE_SRC = csrc/wxp_util.c csrc/wxp_key.c csrc/wxp_crypto.c \
           csrc/wxp_message.c csrc/wxp_store.c csrc/wxp_certs.c \
           csrc/wxp_json.c csrc/wxp_http.c csrc/wxp_testca.c
BINDING_SRC = csrc/lwxp.c csrc/lwxp_json.c
HEADERS = $(wildcard csrc/*.h)
OBJ = $(patsubst csrc/%.c,$(BUILD)/obj/%.o,$(CORE_SRC) $(BINDING_SRC))
MODULE = $(BUILD)/wechatpay/core.so

LUA_MODULES = $(shell find lua -name '*.lua')

.PHONY: all help deps demo test check asan luajit install clean

all: $(MODULE)

help:
	@echo "make          build $(MODULE)"
	@echo "make demo     run the demo against the bundled sandbox"
	@echo "make test     run the whole test suite"
	@echo "make check    static checks (line width, banned calls)"
	@echo "make asan     build with AddressSanitizer and UBSan in build-asan/"
	@echo "make luajit   build the module for LuaJIT (OpenResty) in build-luajit/"
	@echo "make install  install the modules under PREFIX=$(PREFIX)"
	@echo "make fuzz     build the libFuzzer targets of the C core in build-fuzz/"
	@echo "make fuzz-run run each fuzz target FUZZ_SECONDS=$(FUZZ_SECONDS) seconds"

# Installs the Debian packages the build, demo and tests need, if missing.
deps:
	@sh tools/bootstrap.sh

demo: deps
	@$(MAKE) --no-print-directory all
	@LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='$(BUILD)/?.so;;' \
		$(LUA) examples/demo.lua

test: deps
	@tools/run-tests

check:
	@tools/checksrc

# Runs every benchmark and writes bench/RESULTS.md (see bench/README.md).
.PHONY: bench
bench:
	@sh bench/run.sh $(BENCH_ARGS)

$(BUILD)/obj/%.o: csrc/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	@echo "CC $<"
	@$(CC) $(ALL_CFLAGS) -c $< -o $@

$(MODULE): $(OBJ)
	@mkdir -p $(dir $@)
	$(CC) -shared $(LDFLAGS) -o $@ $(OBJ) $(DEP_LIBS)

# The same module built with AddressSanitizer and UndefinedBehaviorSanitizer.
asan:
	@$(MAKE) --no-print-directory BUILD=build-asan \
		CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
		-fno-sanitize-recover=undefined" \
		LDFLAGS="-fsanitize=address,undefined" all

# The same module for LuaJIT 2.1, which OpenResty and Debian's
# libnginx-mod-http-lua embed: the Lua 5.1 API from LuaJIT's headers.  It
# is not linked with libluajit; nginx provides those symbols.
luajit:
	@$(MAKE) --no-print-directory BUILD=build-luajit \
		LUA_CFLAGS="$$($(PKG_CONFIG) --cflags luajit)" all

install: $(MODULE)
	install -d $(DESTDIR)$(LUA_LIBDIR)/wechatpay
	install -m 755 $(MODULE) $(DESTDIR)$(LUA_LIBDIR)/wechatpay/core.so
	for f in $(LUA_MODULES); do \
		d=$$(dirname $${f#lua/}); \
		install -d $(DESTDIR)$(LUA_SHAREDIR)/$$d; \
		install -m 644 $$f $(DESTDIR)$(LUA_SHAREDIR)/$$d/; \
	done
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 bin/wechatpay-sandbox bin/wechatpay-guide $(DESTDIR)$(PREFIX)/bin/

clean:
	rm -rf $(BUILD) build-asan build-luajit build-fuzz

include fuzz/fuzz.mk
