# Two commands do all the set-up: `make serve` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: serve test lint bench clean chromium

# the server's dependencies: `fitserve[server]` (the base install is the client and CLI only)
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing fitserve[server] into $(VENV) (a few minutes the first time)"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[server]'
	touch $@

$(DEVSTAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[server,dev]'
	touch $@

## serve: API + training workers on $FITSERVE_HOST:$FITSERVE_PORT (127.0.0.1:8000), data in ./data
serve: $(STAMP)
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
	$(BIN)/python -m pytest

lint: $(DEVSTAMP)
	$(BIN)/ruff check service models tests bench
	$(BIN)/mypy

bench: $(DEVSTAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
