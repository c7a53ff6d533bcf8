# fuzz/fuzz.mk - libFuzzer targets for the C core, included by the
# Makefile.  The targets link the core objects (not the Lua binding and
# not wxp_http.c, which does I/O) built with clang, coverage
# instrumentation, AddressSanitizer and UndefinedBehaviorSanitizer.

FUZZ_CC ?= clang
FUZZ_BUILD ?= build-fuzz
# Seconds that "make fuzz-run" gives each target.
FUZZ_SECONDS ?= 60

FUZZ_TARGETS = key_load certs_parse certs_wrapped store_verify encoding json
FUZZ_SANITIZE = -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_CFLAGS = -std=c11 -D_DEFAULT_SOURCE -g -O1 -fno-omit-frame-pointer \
              $(WARNINGS) $(FUZZ_SANITIZE) $(DEP_CFLAGS)
FUZZ_LIBS = $(shell $(PKG_CONFIG) --libs libcjson openssl)

FUZZ_CORE_OBJ = $(patsubst csrc/%.c,$(FUZZ_BUILD)/obj/%.o, \
                $(filter-out csrc/wxp_http.c,$(CORE_SRC)))
FUZZ_COMMON_OBJ = $(FUZZ_BUILD)/obj/fuzz_common.o
FUZZ_BINS = $(addprefix $(FUZZ_BUILD)/fuzz_,$(FUZZ_TARGETS))

.PHONY: fuzz fuzz-run fuzz-seeds
# Keeps the target objects, which make would delete as intermediate.
.PRECIOUS: $(FUZZ_BUILD)/obj/fuzz_%.o

fuzz: $(FUZZ_BINS)

# Runs each target for FUZZ_SECONDS from its seed corpus, then every
# saved regression input; new inputs go to a folder under /tmp.
fuzz-run: fuzz
	@sh fuzz/run.sh $(FUZZ_SECONDS)

# Rewrites the generated seeds in fuzz/corpus/ (see fuzz/make-seeds.sh).
fuzz-seeds: $(FUZZ_BUILD)/make_seeds
	@sh fuzz/make-seeds.sh $(FUZZ_BUILD)/make_seeds

$(FUZZ_BUILD)/obj/%.o: csrc/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	@echo "CC (fuzz) $<"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FUZZ_BUILD)/obj/fuzz_%.o: fuzz/fuzz_%.c fuzz/fuzz_common.h $(HEADERS)
	@mkdir -p $(dir $@)
	@echo "CC (fuzz) $<"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@

$(FUZZ_BUILD)/obj/make_seeds.o: fuzz/make_seeds.c fuzz/fuzz_common.h \
                                $(HEADERS)
	@mkdir -p $(dir $@)
	@echo "CC (fuzz) $<"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -c $< -o $@

$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/obj/fuzz_%.o $(FUZZ_COMMON_OBJ) \
                      $(FUZZ_CORE_OBJ)
	$(FUZZ_CC) -fsanitize=fuzzer $(FUZZ_SANITIZE) -o $@ $^ $(FUZZ_LIBS)

$(FUZZ_BUILD)/make_seeds: $(FUZZ_BUILD)/obj/make_seeds.o \
                          $(FUZZ_COMMON_OBJ) $(FUZZ_CORE_OBJ)
	$(FUZZ_CC) -fsanitize=fuzzer-no-link $(FUZZ_SANITIZE) -o $@ $^ \
		$(FUZZ_LIBS)
