.DEFAULT_GOAL := help
PYTHON ?= python
SOURCES := runner tests bench

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

install: ## install gtrun with the test extras (Debian's chromium comes from apt, see the README)
	$(PYTHON) -m pip install -e '.[test]'

fmt: ## apply ruff's fixes (import order, pyupgrade) to the sources
	ruff check --fix $(SOURCES)

lint: ## ruff, and mypy --strict on runner/ (settings in ruff.toml and setup.cfg)
	ruff check $(SOURCES)
	$(PYTHON) -m mypy

test: ## the test suite, as CI runs it
	$(PYTHON) -m pytest -n 2

check: lint test ## lint, then the tests

bench: ## the collect benchmark at 1M lines (the others: bench/README.md)
	$(PYTHON) bench/collect.py --lines 1000000

.PHONY: help install fmt lint test check bench
