# Two commands do all the set-up: `make serve` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: serve test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	touch $@

$(DEVSTAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

## serve: API + training workers on $FITSERVE_HOST:$FITSERVE_PORT (127.0.0.1:8000), data in ./data
serve: $(STAMP)
	$(BIN)/fitserve serve

## test: lint, then the whole suite
test: $(DEVSTAMP)
	$(BIN)/ruff check service models tests bench
	$(BIN)/python -m pytest

lint: $(DEVSTAMP)
	$(BIN)/ruff check service models tests bench

bench: $(DEVSTAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
