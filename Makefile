# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv and installs
# the project (with its test extra) on first use, then runs inside a private network namespace.
# `make check` runs the static checks (ruff, mypy, the layering contract); it needs no cluster.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.herd-installed
NETNS := scripts/netns-run
PYTEST_ARGS ?=
# TEST_WORKERS=2: two pytest-xdist workers (a whole module, or the modules sharing one cluster,
# see tests/shared_cluster.py, runs on one worker). On a 2-core machine two clusters at once are
# slower than one process, so the default, 0, runs everything in one process.
TEST_WORKERS ?= 0
PARALLEL := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder)

.PHONY: install system-deps check lint typecheck layering test test-long test-unit demo bench clean

# pip's and setuptools' chatter goes to .venv/install.log, shown only when the install fails
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing herd and its dependencies into $(VENV) (log: $(VENV)/install.log) ..."
	@{ $(PY) -m pip install --quiet --upgrade pip && \
	   $(PY) -m pip install --quiet -e ".[test]"; } > $(VENV)/install.log 2>&1 \
	  || { cat $(VENV)/install.log; exit 1; }
	@touch $(STAMP)

install: $(STAMP)

# PostgreSQL (event store tests) and Chromium (dashboard test), from Debian's packages where missing
system-deps:
	@scripts/system-deps

# all three run, so one report shows every problem; the target fails if any of them failed
check: $(STAMP)
	@status=0; \
	for step in lint typecheck layering; do $(MAKE) --no-print-directory $$step || status=1; done; \
	exit $$status

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(PY) scripts/typecheck.py

layering: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests/unit/test_layering.py

test: $(STAMP) system-deps
	$(NETNS) $(PY) -m pytest -q -p no:cacheprovider --durations=15 $(PARALLEL) $(PYTEST_ARGS) tests

# the long end-to-end and soak cases (marked `long`), run before each release
test-long: $(STAMP) system-deps
	$(NETNS) $(PY) -m pytest -q -p no:cacheprovider --durations=15 $(PARALLEL) --run-long -m long $(PYTEST_ARGS) tests

test-unit: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

demo: $(STAMP)
	$(NETNS) $(VENV)/bin/herd demo

bench: $(STAMP)
	$(NETNS) $(VENV)/bin/herd bench all --out bench-report.json

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
