# Two commands do all the set-up: `make serve` and `make test`.
PYTHON ?= python3
SHELL  := /bin/bash
.SHELLFLAGS := -o pipefail -c
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: serve test lint bench clean chromium

# the server's dependencies: `fitserve[server]` (the base install is the client and CLI only)
# pip talks (what it fetches, its progress bars) but not about what is already there
PIP := $(BIN)/python -m pip install --disable-pip-version-check --progress-bar on
QUIETER := grep -v --line-buffered '^Requirement already satisfied' || true

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { echo "[1/2] creating the virtualenv $(VENV) ($(PYTHON))"; \
	  $(PYTHON) -m venv $(VENV); }
	@echo "[2/2] installing fitserve[server] into $(VENV): torch, FastAPI, SQLAlchemy, ..." \
	  "(a few minutes the first time)"
	@$(PIP) -e '.[server]' | { $(QUIETER); }
	@touch $@

$(DEVSTAMP): $(STAMP)
	@echo "installing the test tools into $(VENV): pytest, mypy, ruff, schemathesis, ..."
	@$(PIP) -e '.[server,dev]' | { $(QUIETER); }
	@touch $@

## serve: API + training workers on $FITSERVE_HOST:$FITSERVE_PORT (127.0.0.1:8000), data in ./data
serve: $(STAMP)
	@echo "starting fitserve: the API, its docs at /docs and the dashboard at / (the address"
	@echo "is in the 'ready' line below). The CLI is $(BIN)/fitserve: run"
	@echo "'source $(BIN)/activate' in another shell to have 'fitserve' on your PATH."
	$(BIN)/fitserve serve

## chromium: Debian's headless browser, for the browser tests (installed when missing, as root)
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
	  >/dev/null; } || echo "chromium is missing: the browser tests skip (fail with CI=true)"

## test: lint, type-check, then the whole suite (in parallel: pytest-xdist)
test: $(DEVSTAMP) chromium
	$(BIN)/ruff check service models tests bench
	$(BIN)/mypy
	@# bytecode once, before the tests start: where PYTHONDONTWRITEBYTECODE is set (CI images
	@# set it), each of the ~150 processes the suite starts would compile the service again
	@$(BIN)/python -m compileall -q -j 0 service models tests bench >/dev/null
	$(BIN)/python -m pytest

lint: $(DEVSTAMP)
	$(BIN)/ruff check service models tests bench
	$(BIN)/mypy

bench: $(DEVSTAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
