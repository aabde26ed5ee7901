# Two commands on a fresh machine: `make demo` and `make test`.
# Both build .venv from requirements.lock first when it is missing or stale.

PYTHON ?= python3
# apt-get needs root: CI runners and laptops get sudo, a root shell does not.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Two workers on two cores: most suites wait on processes and windows, not on the CPU.
PYTEST_WORKERS ?= 2
# Each checkout runs its own sources, even with a .venv shared from elsewhere.
export PYTHONPATH := $(CURDIR)/src
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help venv spark tools demo pipeline screenshot test lint typecheck unit lock benchmarks clean dvc-remote retrain-pr stack-up stack-down

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# uv installs the lock in under a minute where pip took minutes (README, "For developers"); it
# is pinned in the lock itself, and gets the package sources pip is configured with. Bytecode
# is compiled here: where PYTHONDONTWRITEBYTECODE is set (this machine, CI), imports never
# cache it, and every process would compile mlflow, torch and bentoml from source again.
$(STAMP): requirements.lock pyproject.toml scripts/pip_sources.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet --no-deps "$$(grep '^uv==' requirements.lock)"
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python --no-deps \
		$$($(BIN)/python scripts/pip_sources.py) -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	$(BIN)/python -m pip check
	touch $@

venv: $(STAMP) ## create .venv from requirements.lock

# The Spark engine of `shipyard score`: an extra over the lock, for the tests and benchmarks.
SPARK := $(VENV)/.spark
$(SPARK): $(STAMP) requirements-spark.lock
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python --no-deps \
		$$($(BIN)/python scripts/pip_sources.py) -r requirements-spark.lock
	$(BIN)/python -m pip check
	touch $@

spark: $(SPARK) ## add pyspark (requirements-spark.lock) to .venv

# Tools the tests run that PyPI does not ship: node validates rendered Argo Rollouts manifests
# against the CRD schemas (npm lock), Prometheus evaluates the canary gates' PromQL.
NODE_TOOLS := registry/kubernetes/node_modules/.installed
$(NODE_TOOLS): registry/kubernetes/package-lock.json
	command -v npm >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq nodejs npm)
	npm ci --prefix registry/kubernetes --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

PROMETHEUS := /usr/bin/prometheus
$(PROMETHEUS):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus

# The team stack's database (`shipyard stack up`): Debian keeps initdb/pg_ctl in a versioned
# folder off PATH, and `runuser` runs them as `postgres` when we are root.
POSTGRES := /usr/lib/postgresql/15/bin/initdb
$(POSTGRES):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15

# `shipyard score --engine spark`: pyspark runs Spark's JVM.
JAVA := /usr/bin/java
$(JAVA):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless

# `shipyard stream`'s broker in the tests: Redis Streams with consumer groups (started per test
# on a free port, never as a system service).
REDIS := /usr/bin/redis-server
$(REDIS):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server

# Alertmanager and amtool; Debian may start it as a service on :9093, which the tests do not
# use (they start their own on free ports), so it is stopped.
ALERTMANAGER := /usr/bin/prometheus-alertmanager
$(ALERTMANAGER):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus-alertmanager
	-$(SUDO) service prometheus-alertmanager stop >/dev/null 2>&1

tools: $(NODE_TOOLS) $(PROMETHEUS) $(ALERTMANAGER) $(POSTGRES) $(JAVA) $(REDIS) ## node validator, Prometheus, Alertmanager, PostgreSQL, Java, Redis (Debian)

# The whole loop in a scratch copy under .shipyard/demo (IN_PLACE=1: in this working tree).
demo: $(STAMP) ## data, pipeline, champion, drift, retrain, canary, a rejected bad version
	$(BIN)/shipyard demo $(if $(IN_PLACE),--in-place)

pipeline: $(STAMP) ## data -> dvc repro -> registered @candidate, in this working tree
	$(BIN)/shipyard data bootstrap
	$(BIN)/dvc repro
	$(BIN)/shipyard summary

stack-up: $(STAMP) $(POSTGRES) ## team stack on loopback: PostgreSQL, S3 stand-in, mlflow server
	$(BIN)/shipyard stack up

stack-down: $(STAMP) ## stop the team stack
	$(BIN)/shipyard stack down

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(BIN)/zizmor --offline --persona auditor .github/workflows

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck tools $(SPARK) ## ruff, mypy, then every pytest suite (slow ones included)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

unit: $(STAMP) $(NODE_TOOLS) $(PROMETHEUS) $(ALERTMANAGER) ## fast tests only
	$(BIN)/pytest -m "not slow"

benchmarks: pipeline $(POSTGRES) $(SPARK) $(REDIS) ## print each measured claim next to its baseline (installs wrk)
	command -v wrk >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wrk)
	$(BIN)/python -m benchmarks.cli_startup
	$(BIN)/python -m benchmarks.model_load
	$(BIN)/python -m benchmarks.serve_start
	$(BIN)/python -m benchmarks.collector
	$(BIN)/python -m benchmarks.client_tls
	$(BIN)/python -m benchmarks.traffic_client
	$(BIN)/python -m benchmarks.stack_start
	$(BIN)/python -m benchmarks.spark_jit
	$(BIN)/python -m benchmarks.noop_repro
	$(BIN)/python -m benchmarks.model_quality
	$(BIN)/python -m benchmarks.demo_walltime
	$(BIN)/python -m benchmarks.serving
	$(BIN)/python -m benchmarks.registry
	$(BIN)/python -m benchmarks.history
	$(BIN)/python -m benchmarks.batch
	$(BIN)/python -m benchmarks.stream
	$(BIN)/python -m benchmarks.proxy
	$(BIN)/python -m benchmarks.canary
	$(BIN)/python -m benchmarks.canary_power
	$(BIN)/python -m benchmarks.drift
	$(BIN)/python -m benchmarks.drift_policy
	$(BIN)/python -m benchmarks.estimation

dvc-remote: ## make DVC_REMOTE_URL the default DVC remote (local config, never committed)
	@test -n "$(DVC_REMOTE_URL)" || { echo "DVC_REMOTE_URL is not set" >&2; exit 1; }
	$(BIN)/dvc remote add --local --force --default live "$(DVC_REMOTE_URL)"

retrain-pr: ## after `shipyard retrain`: branch, commit data.dvc + dvc.lock, open a PR (CI)
	@test -n "$(BRANCH)" || { echo "BRANCH is not set" >&2; exit 1; }
	git switch -c "$(BRANCH)"
	git add data.dvc dvc.lock
	git -c user.name=shipyard -c user.email=shipyard@users.noreply.github.com \
	  commit -m "Retrain on labelled live data after drift"
	{ echo "### dvc metrics diff (retrained vs main)"; $(BIN)/dvc metrics diff main --md; } > .retrain-pr.md
	@git push "https://x-access-token:$(GH_TOKEN)@github.com/$(GITHUB_REPOSITORY).git" "$(BRANCH)"
	gh pr create --head "$(BRANCH)" --title "Retrain after drift ($(BRANCH))" --body-file .retrain-pr.md

# The README's drift report picture: the last report of the last `make demo`, through headless
# Chromium (a Debian package; only this target needs it).
REPORT ?= $(lastword $(sort $(wildcard .shipyard/demo/repo/monitoring/reports/fraud-detector/1/*.html)))
screenshot: ## docs/drift-report.png from the last make demo's last drift report
	@test -n "$(REPORT)" || { echo "no drift report; run make demo first" >&2; exit 1; }
	command -v chromium >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq --no-install-recommends chromium)
	mkdir -p docs
	chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,1400 \
	  --virtual-time-budget=10000 --screenshot=docs/drift-report.png "file://$(abspath $(REPORT))"

lock: ## re-resolve requirements.in into requirements.lock
	rm -rf .lockvenv && $(PYTHON) -m venv .lockvenv
	.lockvenv/bin/python -m pip install --quiet --upgrade "pip>=24"
	.lockvenv/bin/python -m pip install --quiet -r requirements.in
	{ echo "# Generated by 'make lock' from requirements.in (pip resolver, Python 3.11). Do not edit by hand."; \
	  .lockvenv/bin/python -m pip freeze --all --exclude-editable | grep -v '^pip==' | sort -f; } > requirements.lock
	rm -rf .lockvenv

clean: ## remove generated state (keeps .venv and data/)
	rm -rf .shipyard artifacts .pytest_cache .mypy_cache .ruff_cache
