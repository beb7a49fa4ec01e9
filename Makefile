# hookd build. `make run` and `make check` are the two commands of the README;
# both install missing Debian packages first (scripts/deps.sh), then build.
#
#   make            build build/hookd (needs the packages already installed)
#   make run        install, build, serve on an embedded default under ./var
#   make check      install, build, run every test (starts its own PostgreSQL)
#   make asan       build build/asan/hookd with AddressSanitizer and UBSan
#   make clean      remove build/ (keeps ./var, the data of `make run`)

BUILD      := build
CIVET_SRC  := $(BUILD)/civetweb/src
GEN        := $(BUILD)/gen

CC         ?= cc
WARN       := -Wall -Wextra -Werror -Wformat=2 -Wshadow -Wstrict-prototypes \
              -Wmissing-prototypes -Wno-missing-field-initializers
CPPFLAGS   := -D_GNU_SOURCE -Idaemon -Ihandlers -I$(CIVET_SRC)/include -I$(GEN) \
              -I/usr/include/postgresql
CFLAGS     := -std=gnu11 -O2 -g $(WARN) -fstack-protector-strong -D_FORTIFY_SOURCE=2
LDLIBS     := -lpq -ljson-c -lconfig -lcurl -lssl -lcrypto -lsystemd -lpthread -ldl -lm

SAN        := -fsanitize=address,undefined -fno-omit-frame-pointer \
              -fno-sanitize-recover=undefined
ASAN_FLAGS := -std=gnu11 -O1 -g $(WARN) $(SAN)

# CivetWeb is built from Debian's source package (the binary package loads
# OpenSSL 3 through 1.1 symbol names and crashes on the first TLS request).
# -fwrapv: CivetWeb adds a client's Content-Length and chunk sizes to
# offsets in signed arithmetic; wrapping keeps a hostile value defined, and
# its own sanity checks then close the connection.
CIVET_DEFS := -DOPENSSL_API_3_0 -DNO_SSL_DL -DUSE_IPV6 -DNO_CGI -DNO_FILES \
              -DNO_CACHING -DMAX_WORKER_THREADS=1024 -fwrapv

DAEMON_SRC := $(wildcard daemon/*.c)
LIB_SRC    := $(filter-out daemon/main.c,$(DAEMON_SRC))
OBJ        := $(patsubst daemon/%.c,$(BUILD)/obj/%.o,$(DAEMON_SRC)) $(BUILD)/obj/embedded.o
LIB_OBJ    := $(patsubst daemon/%.c,$(BUILD)/obj/%.o,$(LIB_SRC)) $(BUILD)/obj/embedded.o
ASAN_OBJ   := $(patsubst daemon/%.c,$(BUILD)/asan/obj/%.o,$(DAEMON_SRC)) \
              $(BUILD)/asan/obj/embedded.o
HEADERS    := $(wildcard daemon/*.h handlers/*.h)

HANDLER_SRC := $(wildcard handlers/*.c)
HANDLERS   := $(patsubst handlers/%.c,$(BUILD)/handlers/%.so,$(HANDLER_SRC))
TPLUG_SRC  := $(wildcard tests/plugins/*.c)
TPLUGINS   := $(patsubst tests/plugins/%.c,$(BUILD)/tests/plugins/%.so,$(TPLUG_SRC))
PLUGIN_LIBS := -ljson-c -lpq -lcurl -lssl -lcrypto
PREFIX     ?= /usr/local
BINDIR     ?= $(PREFIX)/bin
PLUGIN_DIR ?= $(PREFIX)/lib/hookd/handlers
SHAREDIR   ?= $(PREFIX)/share/hookd
DOCDIR     ?= $(PREFIX)/share/doc/hookd
INCLUDEDIR ?= $(PREFIX)/include
SYSCONFDIR ?= /etc
UNITDIR    ?= /lib/systemd/system
SYSUSERSDIR ?= /usr/lib/sysusers.d
TMPFILESDIR ?= /usr/lib/tmpfiles.d

UNIT_SRC   := $(wildcard tests/unit/*.c)
INTEG_SRC  := $(wildcard tests/integration/*.c)
SUPPORT_SRC := $(wildcard tests/support/*.c)

.PHONY: all asan tests run check deps clean install uninstall bench bench-soak
.DELETE_ON_ERROR:

all: $(BUILD)/hookd $(HANDLERS)

deps:
	@scripts/deps.sh

$(CIVET_SRC)/src/civetweb.c:
	scripts/civetweb.sh $(BUILD)/civetweb

$(BUILD)/civetweb.o: $(CIVET_SRC)/src/civetweb.c Makefile
	@mkdir -p $(@D)
	$(CC) -std=gnu11 -O2 -g -fPIC $(CIVET_DEFS) -I$(CIVET_SRC)/include -c $< -o $@

$(BUILD)/asan/civetweb.o: $(CIVET_SRC)/src/civetweb.c Makefile
	@mkdir -p $(@D)
	$(CC) -std=gnu11 -O1 -g $(SAN) $(CIVET_DEFS) -I$(CIVET_SRC)/include -c $< -o $@

$(GEN)/embedded.c: scripts/embed.sh $(wildcard sql/*.sql) $(wildcard samples/*.json)
	@mkdir -p $(@D)
	scripts/embed.sh $@ migrations sql/*.sql -- samples samples/*.json

$(BUILD)/obj/%.o: daemon/%.c $(HEADERS) | $(CIVET_SRC)/src/civetweb.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/obj/cfg.o $(BUILD)/asan/obj/cfg.o: CPPFLAGS += -DHOOKD_PLUGIN_DIR='"$(PLUGIN_DIR)"'

# Handler plugins need only their ABI header and json-c (and libpq for their
# own database writes).
$(BUILD)/handlers/%.so: handlers/%.c $(wildcard handlers/*.h)
	@mkdir -p $(@D)
	$(CC) -D_GNU_SOURCE -Ihandlers -I/usr/include/postgresql $(CFLAGS) -shared -fPIC $< \
	    -o $@ $(PLUGIN_LIBS)

$(BUILD)/tests/plugins/%.so: tests/plugins/%.c $(wildcard handlers/*.h)
	@mkdir -p $(@D)
	$(CC) -D_GNU_SOURCE -Ihandlers -I/usr/include/postgresql $(CFLAGS) -shared -fPIC $< \
	    -o $@ $(PLUGIN_LIBS)

$(BUILD)/obj/embedded.o: $(GEN)/embedded.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/hookd: $(OBJ) $(BUILD)/civetweb.o
	$(CC) $(CFLAGS) -rdynamic $^ -o $@ $(LDLIBS)

$(BUILD)/asan/obj/%.o: daemon/%.c $(HEADERS) | $(CIVET_SRC)/src/civetweb.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(ASAN_FLAGS) -c $< -o $@

$(BUILD)/asan/obj/embedded.o: $(GEN)/embedded.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(ASAN_FLAGS) -c $< -o $@

$(BUILD)/asan/hookd: $(ASAN_OBJ) $(BUILD)/asan/civetweb.o
	$(CC) $(ASAN_FLAGS) -rdynamic $^ -o $@ $(LDLIBS)

asan: $(BUILD)/asan/hookd

# Unit tests link the daemon's modules (not main.c) with Criterion.
$(BUILD)/tests/unit: $(UNIT_SRC) $(LIB_OBJ) $(BUILD)/civetweb.o $(HEADERS)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -Itests $(UNIT_SRC) $(LIB_OBJ) $(BUILD)/civetweb.o \
	    -o $@ -lcriterion $(LDLIBS)

# Integration tests drive the real binary over HTTPS against a real PostgreSQL.
$(BUILD)/tests/integration: $(INTEG_SRC) $(SUPPORT_SRC) $(wildcard tests/support/*.h) \
                            $(BUILD)/obj/codec.o $(BUILD)/obj/verify.o
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -Itests $(INTEG_SRC) $(SUPPORT_SRC) \
	    $(BUILD)/obj/codec.o $(BUILD)/obj/verify.o -o $@ -lcriterion $(LDLIBS)

# A stand-in for the ContextGPT API, to try the answering handlers locally.
$(BUILD)/tests/fake-api: tests/fake_api.c $(BUILD)/civetweb.o
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $^ -o $@ -lssl -lcrypto -lpthread -ldl

tests: $(BUILD)/tests/unit $(BUILD)/tests/integration $(TPLUGINS) $(BUILD)/tests/fake-api

# The benchmark (not part of check): bench/run.sh says what it measures.
$(BUILD)/bench/load: bench/load.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $< -o $@ -lssl -lcrypto -lpthread

$(BUILD)/bench/noop.so: bench/noop.c $(wildcard handlers/*.h)
	@mkdir -p $(@D)
	$(CC) -D_GNU_SOURCE -Ihandlers $(CFLAGS) -shared -fPIC $< -o $@ $(PLUGIN_LIBS)

bench:
	@scripts/deps.sh nginx-light
	@$(MAKE) --no-print-directory all $(BUILD)/bench/load $(BUILD)/bench/noop.so
	@bench/run.sh

# Longer (about 15 minutes on 2 cores): bench/soak.sh says what it checks.
bench-soak: deps
	@$(MAKE) --no-print-directory all $(BUILD)/bench/load $(BUILD)/bench/noop.so
	@bench/soak.sh

run: deps
	@$(MAKE) --no-print-directory all $(BUILD)/tests/fake-api
	@scripts/run.sh

check: deps
	@$(MAKE) --no-print-directory all asan tests
	@scripts/check.sh

# make install [PREFIX=/usr/local] [DESTDIR=/tmp/stage]: the binary, the
# plugins, the plugin header, the migrations (for reading: hookd carries its
# own), the unit with its sysusers and tmpfiles files, and an example
# configuration in /etc/hookd (an existing hookd.conf is never overwritten).
install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(PLUGIN_DIR) $(DESTDIR)$(SHAREDIR)/sql \
	    $(DESTDIR)$(DOCDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(UNITDIR) \
	    $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) $(DESTDIR)$(SYSCONFDIR)/hookd
	install -m 0755 $(BUILD)/hookd $(DESTDIR)$(BINDIR)/hookd
	install -m 0644 $(HANDLERS) $(DESTDIR)$(PLUGIN_DIR)/
	install -m 0644 handlers/hookd_plugin.h $(DESTDIR)$(INCLUDEDIR)/hookd_plugin.h
	install -m 0644 sql/*.sql $(DESTDIR)$(SHAREDIR)/sql/
	install -m 0644 README.md docs/KNOWN_LIMITS.md $(DESTDIR)$(DOCDIR)/
	sed -e 's|/usr/local/bin|$(BINDIR)|g' -e 's|/usr/local/share|$(PREFIX)/share|g' \
	    -e 's|/etc/hookd|$(SYSCONFDIR)/hookd|g' systemd/hookd.service \
	    > $(DESTDIR)$(UNITDIR)/hookd.service
	install -m 0644 systemd/hookd.sysusers $(DESTDIR)$(SYSUSERSDIR)/hookd.conf
	install -m 0644 systemd/hookd.tmpfiles $(DESTDIR)$(TMPFILESDIR)/hookd.conf
	install -m 0640 etc/hookd.conf $(DESTDIR)$(SYSCONFDIR)/hookd/hookd.conf.example
	test -e $(DESTDIR)$(SYSCONFDIR)/hookd/hookd.conf || \
	    install -m 0640 etc/hookd.conf $(DESTDIR)$(SYSCONFDIR)/hookd/hookd.conf

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/hookd $(DESTDIR)$(INCLUDEDIR)/hookd_plugin.h \
	    $(DESTDIR)$(UNITDIR)/hookd.service $(DESTDIR)$(SYSUSERSDIR)/hookd.conf \
	    $(DESTDIR)$(TMPFILESDIR)/hookd.conf $(DESTDIR)$(SYSCONFDIR)/hookd/hookd.conf.example
	rm -rf $(DESTDIR)$(PLUGIN_DIR) $(DESTDIR)$(SHAREDIR) $(DESTDIR)$(DOCDIR)
	@echo "kept $(SYSCONFDIR)/hookd/hookd.conf and any secrets next to it"

clean:
	rm -rf $(BUILD)/obj $(BUILD)/asan $(BUILD)/tests $(BUILD)/gen $(BUILD)/hookd \
	       $(BUILD)/civetweb.o
