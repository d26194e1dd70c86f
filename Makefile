# jonction — the two commands of the README, and the pieces they are made of.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8080

.PHONY: run test lint typecheck typecheck-tests pytest bench fuzz clean setup interop check-tools

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[all,test]'
	touch $(STAMP)

setup: $(STAMP)

## make run: set up and run jonction on its embedded default (demo territory, SQLite)
run: $(STAMP)
	$(BIN)/jonction run --port $(PORT)

## make test: check the system tools, set up, lint, type-check and run every test
test: check-tools $(STAMP) lint typecheck pytest interop

# The tests run a real Mosquitto broker (with a password file) and render reports in Chromium.
check-tools:
	@missing=""; \
	for tool in mosquitto mosquitto_passwd chromium; do \
	  command -v $$tool >/dev/null 2>&1 || test -x /usr/sbin/$$tool || test -x /usr/bin/$$tool || missing="$$missing $$tool"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make test needs:$$missing (Debian/Ubuntu: sudo apt-get install mosquitto chromium)" >&2; exit 1; \
	fi

# Real NGSI-LD clients (FiLiP, ngsildclient) pin old versions of libraries jonction uses
# (paho-mqtt): they get their own virtualenv, so the main one stays what users install.
INTEROP_VENV  ?= .venv-interop
INTEROP_STAMP := $(INTEROP_VENV)/.installed

$(INTEROP_STAMP): pyproject.toml
	$(PYTHON) -m venv $(INTEROP_VENV)
	$(INTEROP_VENV)/bin/pip install --quiet --upgrade pip
	$(INTEROP_VENV)/bin/pip install --quiet -e '.[interop]'
	touch $(INTEROP_STAMP)

## make interop: the store driven by real NGSI-LD clients, in their own virtualenv
## (the rest of tests/interop runs in `make pytest`, where these two skip by name)
interop: $(INTEROP_STAMP)
	$(INTEROP_VENV)/bin/pytest -q -p no:cacheprovider tests/interop/test_filip.py tests/interop/test_ngsildclient.py

lint: $(STAMP)
	$(BIN)/ruff check gateway schemas adapters conformance tests bench

typecheck: $(STAMP)
	$(BIN)/mypy gateway schemas conformance adapters

# tests/ loosely (not strict): annotations must hold, helpers may stay untyped and return Any;
# modules outside tests/ are reported by the line above, so they are followed silently here.
typecheck: typecheck-tests
typecheck-tests: $(STAMP)
	$(BIN)/mypy --explicit-package-bases --follow-imports=silent --no-warn-return-any --allow-untyped-calls \
	  --allow-untyped-decorators --no-warn-unused-ignores --cache-dir .mypy_cache/tests tests

pytest: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

## make fuzz: hostile mutations of every adapter's fixtures, fresh random cases (FUZZ_EXAMPLES per adapter),
## then the CLI and store API fuzz tests (marker fuzz) at FUZZ_SCALE times their CI size
FUZZ_EXAMPLES ?= 20000
FUZZ_SCALE ?= 10
fuzz: $(STAMP)
	JONCTION_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) JONCTION_FUZZ_RANDOM=1 \
	  $(BIN)/pytest -q -p no:cacheprovider -o timeout=0 tests/adapters/test_fuzz.py $(PYTEST_ARGS)
	JONCTION_FUZZ_SCALE=$(FUZZ_SCALE) $(BIN)/pytest -q -p no:cacheprovider -o timeout=0 -m fuzz tests/gateway tests/store

bench: $(STAMP)
	for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(INTEROP_VENV) build *.egg-info .mypy_cache .ruff_cache
