# Two commands on a fresh machine: `make run` (fetch, check, execute every notebook) and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DATA := data/spine-mri

.PHONY: run test test-fast lab env data bench clean

env: $(VENV)/.installed
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# fetch downloads only what is missing (sha256-checked); check validates every pair
data: env
	$(BIN)/maskpair fetch $(DATA)
	$(BIN)/maskpair check $(DATA) > /dev/null

run: data
	$(BIN)/maskpair notebooks --data-dir $(DATA) --out outputs

test: data
	$(BIN)/python -m pytest

test-fast: data
	$(BIN)/python -m pytest -m "not slow and not browser"

lab: data
	$(BIN)/jupyter lab notebooks

bench: data
	$(BIN)/python bench/bench_loader.py

clean:
	rm -rf outputs .pytest_cache .hypothesis
