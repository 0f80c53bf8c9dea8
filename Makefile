# chamlab: two commands on a fresh machine.
#   make demo   create .venv, install, adapt macro-cifar10 to this CPU: predicted vs measured latency
#   make test   same install and the system packages the tests need (scripts/system-packages.sh:
#               sshd, adb, dash, mksh, busybox; apt-get as root, only what is missing), then lint (ruff),
#               types (mypy) and tests (pytest)
#   make data-fashion   Fashion-MNIST from Debian's dataset-fashion-mnist (apt-get as root, only when
#               missing): the real data of `adapt --oracle train` (docs/training.md); no test needs it
# torch==2.13.0 is installed first (a CPU build is on this machine's disk); the project's torch range
# admits it, so pip installs no other torch.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
DEPS   := $(VENV)/.deps-installed
SOURCES := $(shell find core host agent operators chamnet -type f \( -name '*.py' -o -name '*.sh' -o -name '*.parquet' -o -name '*.json' -o -name '*.toml' -o -name 'NOTICE' -o -name 'LICENSE-*' -o -name 'py.typed' \)) pyproject.toml
PKGS   := -p chamlab.core -p chamlab.host -p chamlab.agent -p chamlab.operators -p chamlab.chamnet

.PHONY: install system-packages data-fashion demo test lint typecheck unit bench data clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(DEPS): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet '.[dev,ray]'
	touch $@

# A non-editable install of the current sources (what users and the wheel get).
$(VENV)/.installed: $(DEPS) $(SOURCES)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation --force-reinstall .
	rm -rf build
	touch $@

install: $(VENV)/.installed

# adapt = profile what the LUT lacks + calibrate + BO + search + export + measure (docs/adapt.md); the
# limit is the 40th percentile of this machine's predicted latencies, so it suits any machine.
demo: install
	$(BIN)/chamlab devices
	$(BIN)/chamlab adapt --target local-cpu --space macro-cifar10 --latency p40 --out demo

lint: install
	$(BIN)/ruff check core host agent operators chamnet tests bench
	$(BIN)/ruff format --check core host agent operators chamnet tests bench

typecheck: install
	$(BIN)/mypy $(PKGS)

# Real peers and shells for the tests; installs only what is missing (as root), else names it and fails.
system-packages:
	sh scripts/system-packages.sh

# TEST_JOBS pytest workers (pytest-xdist); the Ray tests take turns through a lock (tests/conftest.py);
# the tests marked serial (energy figures of a simulated power meter) run alone afterwards.
TEST_JOBS ?= 2

# Opt-in: the documented real dataset (README: data to a shipped model); the tests use digits.
data-fashion:
	sh scripts/data-fashion.sh

# Both parts share one folder (CHAMLAB_TEST_SHARED, tests/conftest.py: run_shared_dir): the session LUT
# and the exported programs, which the serial part would otherwise profile and export again.
unit: install system-packages
	shared=$$(mktemp -d "$${TMPDIR:-/tmp}/chamlab-tests.XXXXXX") && export CHAMLAB_TEST_SHARED=$$shared && \
	$(BIN)/pytest -n $(TEST_JOBS) --dist load -m 'not serial' --durations=25 && \
	$(BIN)/pytest -m serial --durations=5; rc=$$?; rm -rf "$$shared"; exit $$rc

test: lint typecheck unit

bench: install
	$(PY) -m bench.latency_fidelity
	$(PY) -m bench.energy_fidelity
	$(PY) -m bench.profiling_cost
	$(PY) -m bench.stability
	$(PY) -m bench.runtime_import
	$(PY) -m bench.lut_merge
	$(PY) -m bench.transport_overhead
	$(PY) -m bench.transport_fixed_cost
	$(PY) -m bench.fault_recovery
	$(PY) -m bench.search_efficiency
	$(PY) -m bench.adapt_search_time
	$(PY) -m bench.constraint_fidelity
	$(PY) -m bench.new_device
	$(PY) -m bench.data_to_model
	$(PY) -m bench.report

# Re-create the shipped accuracy table from the source JSON (kept beside the project in ../shared).
data: install
	$(PY) -c "from pathlib import Path; from chamlab.chamnet.spaces.macro_cifar10 import convert_source_json; \
	print(convert_source_json(Path('../shared/data/nas-bench-macro_cifar10.json'), Path('chamnet/data/macro_cifar10.parquet')))"

clean:
	rm -rf $(VENV) build dist *.egg-info luts demo
