# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PROTOS := $(wildcard proto/orchestration/v1/*.proto)
# The contracts the controller SDK ships (sdk/build_contracts.py compiles them
# into orchestration_sdk.v1); the engine compiles the others and builds on them.
SDK_PROTOS := $(addprefix proto/orchestration/v1/,model.proto controller.proto dispatcher.proto)
ENGINE_PROTOS := $(filter-out $(SDK_PROTOS),$(PROTOS))
SDK_GEN_STAMP := sdk/src/orchestration_sdk/v1/.generated
GEN_DIR := services/orchestration/v1
GEN_STAMP := $(GEN_DIR)/.generated

.PHONY: proto-release setup bytecode chromium libvirt-dev generate run test test-unit test-faults bench bench-fairness bench-console screenshots soak chaos lint-proto typecheck clean

setup: $(VENV)/.installed $(GEN_STAMP) bytecode chromium libvirt-dev

# The project's own modules compiled ahead (only what changed): an editable
# install gets no bytecode from pip, and with PYTHONDONTWRITEBYTECODE set
# every `orch` command and every service start would compile its sources
# again (60 ms of `orch domain list`).
bytecode: $(VENV)/.installed $(GEN_STAMP)
	$(BIN)/python -m compileall -q -j 0 services sdk/src

# The web console's browser tests drive Debian's Chromium (no browser download).
chromium:
	@test -x /usr/bin/chromium || apt-get install -y chromium >/dev/null 2>&1 || \
		(apt-get update >/dev/null && apt-get install -y chromium >/dev/null)

# The libvirt controller's binding (the extra `libvirt`) is built by pip
# against Debian's libvirt headers: the venv's Python is not Debian's, so
# Debian's python3-libvirt would not be importable from it.
libvirt-dev:
	@(test -f /usr/include/libvirt/libvirt.h && command -v pkg-config >/dev/null && command -v cc >/dev/null) || \
		apt-get install -y --no-install-recommends libvirt-dev pkg-config gcc >/dev/null 2>&1 || \
		(apt-get update >/dev/null && apt-get install -y --no-install-recommends libvirt-dev pkg-config gcc >/dev/null)

# The engine and the controller SDK it depends on, both editable, in one
# install: the SDK named on the command line is the one the engine gets.
$(VENV)/.installed: pyproject.toml sdk/pyproject.toml sdk/setup.py | libvirt-dev
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e ./sdk -e '.[dev,libvirt,ec2,ansible]'
	touch $@

# Code generation runs whenever a contract changes: the SDK's contracts by
# the SDK's own build step, then the engine's. The engine's
# orchestration.v1.{model,controller,dispatcher}_pb2* re-export the SDK's
# (committed files): protoc's own output for those must not shadow them.
$(SDK_GEN_STAMP): $(SDK_PROTOS) sdk/build_contracts.py $(VENV)/.installed
	$(BIN)/python sdk/build_contracts.py
	touch $@

$(GEN_STAMP): $(PROTOS) $(SDK_GEN_STAMP)
	mkdir -p $(GEN_DIR)
	rm -f $(GEN_DIR)/model_pb2.pyi $(GEN_DIR)/model_pb2_grpc.py $(GEN_DIR)/controller_pb2.pyi $(GEN_DIR)/dispatcher_pb2.pyi
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=services --pyi_out=services \
		--grpc_python_out=services $(ENGINE_PROTOS)
	touch $@

generate: $(GEN_STAMP)

run: setup
	$(BIN)/orch up

# Lint the contracts, and refuse a change that breaks a client of the last
# released ones (proto/released.binpb; `make proto-release` takes a new snapshot).
lint-proto: setup
	$(BIN)/buf lint
	$(BIN)/buf breaking --against proto/released.binpb

proto-release: setup
	$(BIN)/buf build -o proto/released.binpb

typecheck: setup
	cd services && ../$(BIN)/mypy

test: setup lint-proto typecheck
	$(BIN)/python -m pytest -q

# The rules alone: no NATS, no suite, no browser (they also run in `make test`).
test-unit: setup
	$(BIN)/python -m pytest -q -m unit -p no:cacheprovider

# The fault-injection tests alone (they also run in `make test`).
test-faults: setup
	$(BIN)/python -m pytest -q -m faults

# Options through BENCH_ARGS, e.g. make bench BENCH_ARGS="--repeat 3 --large 50000" (the README's figures).
bench: setup
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Fairness between domains: a 10-instance deploy in one domain 1 s into another's 20,000; a terminate of the storm.
# Options through FAIRNESS_ARGS, e.g. make bench-fairness FAIRNESS_ARGS="--runs 1 --storm 5000".
bench-fairness: setup
	$(BIN)/python bench/fairness.py $(FAIRNESS_ARGS)

# The web console in a real browser: page load at 1,000 and 10,000 instances, live updates, download size.
bench-console: setup
	$(BIN)/python bench/console.py

# The console's main views of a demo deploy, rendered to docs/ for the README.
screenshots: setup
	$(BIN)/python docs/screenshots.py

# 60 deploy/delete cycles of 1,000 instances under small caps: storage and memory must stay flat.
soak: setup
	$(BIN)/python bench/soak.py

# Ten minutes of operator loops under random SIGKILL/SIGSTOP of every process
# (a minute of it runs in `make test`). Options through CHAOS_ARGS, e.g.
# make chaos CHAOS_ARGS="--seed 1234" to replay a run.
chaos: setup
	$(BIN)/python bench/chaos.py $(CHAOS_ARGS)

clean:
	rm -rf $(VENV) .orch sdk/build $(GEN_STAMP) $(SDK_GEN_STAMP)
	git clean -qfX -- $(GEN_DIR) sdk/src/orchestration_sdk/v1
	find services sdk tests bench -name __pycache__ -prune -exec rm -rf {} +
