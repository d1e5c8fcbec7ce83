# The two commands a newcomer types: `make run` and `make test`. Each first installs the system
# packages it needs (scripts/setup.sh: apt-get as root or with passwordless sudo, else one line
# saying what to run), then makes the virtual environment on first use (and again when
# pyproject.toml changes).
VENV   ?= .venv
PYTHON ?= python3
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: venv run try test unit integration e2e soak lint format demo bench clean

$(STAMP): pyproject.toml
	@bash scripts/setup.sh run
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# The daemon on the embedded SQLite default (./forwarder.db), with the settings of ./.env.
run: venv
	$(BIN)/forwarder migrate
	$(BIN)/forwarder run

# The daemon against the project's fake TikTok on loopback, no token needed: insert a row into
# ./try.db from another terminal and watch it arrive (README, quick start).
try: venv
	@bash scripts/setup.sh demo
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/try.sh

test: venv
	@bash scripts/setup.sh test
	$(BIN)/pytest

# The suite's three tiers (docs/testing.md), each a folder of tests/ and a pytest marker. unit:
# pure tests, no database, socket or process, in seconds and with nothing to install.
unit: venv
	$(BIN)/pytest tests/unit

# integration: in-process against real SQLite files, PostgreSQL and loopback HTTP.
integration: venv
	@bash scripts/setup.sh test
	$(BIN)/pytest tests/integration

# e2e: the forwarder command and other programs (promtool, Prometheus, systemd-analyze, the
# insert examples) as processes.
e2e: venv
	@bash scripts/setup.sh test
	$(BIN)/pytest tests/e2e

# The reliability tests at a larger scale: 200k events and 100 kills in the crash loop, 500
# fuzzed examples (not derandomized), a 5,000-event failure storm. A few minutes on 2 cores.
soak: venv
	@bash scripts/setup.sh test
	FORWARDER_SOAK=1 $(BIN)/pytest --timeout=3600 -p no:cacheprovider -s \
		tests/e2e/test_crash_loop.py tests/integration/test_fault_matrix.py \
		tests/integration/test_db_faults.py tests/e2e/test_db_faults.py \
		tests/integration/test_fuzz.py tests/e2e/test_secrets.py

# Style, types, the dependencies between the package's parts (pyproject.toml's
# [tool.importlinter] contracts) and the house's size limits (scripts/check_house.py).
lint: venv
	$(BIN)/ruff check forwarder tests bench examples scripts
	$(BIN)/ruff format --check forwarder tests bench examples scripts
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/python scripts/check_house.py forwarder

format: venv
	$(BIN)/ruff check --fix forwarder tests bench examples scripts
	$(BIN)/ruff format forwarder tests bench examples scripts

demo: venv
	@bash scripts/setup.sh demo
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/demo.sh

# The builder, the drain of a shop's rows and of the older ones into a lean sink (with the
# minimal-loop and naive baselines), steady state, contention, idle CPU and memory: JSON lines,
# then a table against the goals. About 6 minutes; bench/run.py lists the BENCH_* variables
# that scale it (BENCH_BEFORE=<rev> runs that revision's builder and daemon alongside).
bench: venv
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis demo-data try-data try.db*
