# Every target that needs the environment depends on setup, which is idempotent.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup jre run test bench spec lint clean

setup: $(STAMP) jre

# TLC (make spec, the spec tests) needs a Java runtime; install one only when there is none.
jre:
	@command -v java >/dev/null 2>&1 || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq default-jre-headless; }

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: setup
	$(VENV)/bin/aegis up

test: setup
	$(PY) -m pytest -q --cov --cov-report=term --cov-report=xml:reports/coverage.xml tests

bench: setup
	$(VENV)/bin/aegis bench

spec: setup
	$(VENV)/bin/aegis spec

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .coverage reports/coverage.xml
