# Two commands on a fresh machine:  `make run`  and  `make test`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
EXAMPLE := examples/orchestrator

.PHONY: run test test-packages example-data clean audit

## Install, create the example orchestrator's history if absent, and serve under gunicorn.
run: $(VENV)/.installed example-data
	$(VENV)/bin/gunicorn --config gunicorn.conf.py app:app

## Install the test needs and run the whole suite, on as many processes as cores, at most 2 (pytest-xdist).
test: $(VENV)/.installed-dev test-packages
	$(PY) -m pytest --numprocesses auto --maxprocesses 2

## Debian's packages the tests run, installed when absent (as root): Chromium and its driver for the browser
## test (tests/test_page.py), nginx for the reverse-proxy test (tests/test_nginx.py), prometheus for promtool
## (tests/test_prometheus_rules.py checks deploy/prometheus/alerts.yml).
test-packages:
	@test -x /usr/bin/chromium && test -x /usr/bin/chromedriver && test -x /usr/sbin/nginx && test -x /usr/bin/promtool || \
		(apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver nginx prometheus)

## Two weeks of history written by the example orchestrator itself (skipped when present).
example-data: $(VENV)/.installed
	@test -f $(EXAMPLE)/logs/training_metrics.json || $(PY) $(EXAMPLE)/orchestrator.py backfill --days 14

$(VENV)/.installed: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(VENV)/.installed $@

clean:
	rm -rf $(VENV) var .pytest_cache

## Benchmark, not part of the tests (docs/performance.md): scaled data set in var/bench, gunicorn as in
## production, wrk (installed when absent, as root). BENCH_ARGS passes options, e.g. BENCH_ARGS="--duration 10".
## Then bench/rewrite_memory.py: the workers' RSS after a 3 MB training_metrics.json is rewritten 100 times.
## Last, bench/report.py renders bench/results/*.json into docs/performance.md's tables.
.PHONY: bench
bench: $(VENV)/.installed
	$(PY) bench/run.py $(BENCH_ARGS)
	$(PY) bench/rewrite_memory.py
	$(PY) bench/report.py

## Mixed load (test plan T38; about 7 min): 80% GET, 15% POST, 5% streams, then /healthz under 64 connections.
## LOAD_ARGS passes options, e.g. LOAD_ARGS="--duration 60". Then bench/report.py (docs/performance.md).
.PHONY: load
load: $(VENV)/.installed
	$(PY) bench/load.py $(LOAD_ARGS)
	$(PY) bench/report.py

## Known-vulnerability check of the installed packages (needs PyPI's vulnerability service; docs/development.md).
audit: $(VENV)/.installed-dev
	$(PY) -m pip install --quiet --disable-pip-version-check pip-audit
	$(VENV)/bin/pip-audit --strict --progress-spinner off
