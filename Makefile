# The few verbs people type. Each recipe is a line you can also run by hand.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PY_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
BUNDLE := static/dist/dashboard.js

.PHONY: setup run test check lint bench services browser clean

setup: $(PY_STAMP) $(BUNDLE)

$(PY_STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(BUNDLE): $(NODE_STAMP) scripts/build-frontend.mjs $(wildcard static/src/dashboard/*.js)
	npm run build --silent

run: setup
	$(PYTHON) manage.py devstack

services:
	scripts/ensure-services.sh

browser:
	scripts/ensure-browser.sh

test: setup services browser
	$(PYTHON) -m pytest

check: setup services
	$(PYTHON) manage.py makemigrations --check --dry-run
	$(VENV)/bin/ruff check .

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check events monitor_project rollout reconciliation

bench: setup services
	@ls bench/*.py

clean:
	rm -rf $(VENV) node_modules staticfiles static/dist
