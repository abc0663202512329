# echoscreen: the two commands a fresh Debian machine needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Debian packages the tests use: a PACS with DICOMweb, a PostgreSQL server, dcmtk's storescu.
APT_PACKAGES := orthanc orthanc-dicomweb postgresql dcmtk chromium chromium-driver
PYTEST_ARGS ?=

.PHONY: help venv system-deps test lint demo bench clean

help:
	@echo "make demo   - set up and run the end-to-end demo (echoscreen demo)"
	@echo "make test   - set up everything (venv, packages, system packages) and run lint + tests"
	@echo "make bench  - run the benchmarks in bench/ and print their ratios"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else \
		echo "The tests need these Debian packages; install them with:"; \
		echo "  sudo apt-get install$$missing"; \
		if [ -n "$$CI" ]; then exit 1; fi; \
	fi

lint: $(STAMP)
	$(PY) -m ruff check src tests bench
	$(PY) -m mypy

test: system-deps $(STAMP) lint
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(VENV)/bin/echoscreen demo --workdir demo-work

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) demo-work .pytest_cache .mypy_cache .ruff_cache
