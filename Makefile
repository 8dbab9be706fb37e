# nondiff: `make train` and `make test` create .venv on first use; later runs reuse it.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
ARGS ?=
TEST_WORKERS ?= 2
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install train test test-all lint bench bench-strategies clean gpu-wheels

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev,thirdparty,devito,multiagent,postgres]"
	# Two more packages for tests/test_thirdparty_hardening.py, without their declared dependencies: tetris-gymnasium
	# asks for JAX (~300 MB) that its Gymnasium env never imports, gymnasium-2048 for a newer Gymnasium it does not need.
	$(PY) -m pip install --quiet --no-deps "tetris-gymnasium==0.3.1" "gymnasium-2048==0.1.2"
	touch $(STAMP)

install: $(STAMP)

train: $(STAMP)
	$(PY) train.py --env robot $(ARGS)

# The fast suite plus the chosen slow tests that CI runs (see README "Tests"), on two pytest-xdist workers
# (TEST_WORKERS; three on these two cores took 20 min 28 s against 19 min 31 s: the Ray tests slow down more
# than the waits they fill). The tests that join the session's private Ray share one worker and that Ray
# (tests/conftest.py). mypy (single-threaded, ~45 CPU-s without a cache) runs beside the tests; its report
# follows theirs, and either failing fails the target.
test: $(STAMP)
	$(PY) -m ruff check envs agents tests benchmarks examples train.py evaluate.py
	@# the tests start ~840 Python processes (train.py, evaluate.py, env workers, Ray workers): compiled once
	@# here, none of them compiles the repo's modules again (where PYTHONDONTWRITEBYTECODE keeps Python from
	@# caching them itself, each would: ~0.1 s a process)
	$(PY) -m compileall -q -j 0 envs agents benchmarks tests examples train.py evaluate.py >/dev/null
	@log=$$(mktemp); $(PY) -m mypy envs agents benchmarks >$$log 2>&1 & mypy=$$!; \
	$(PY) -m pytest -m "not slow or ci" -n $(TEST_WORKERS) --dist loadgroup $(ARGS); rc=$$?; \
	wait $$mypy; mrc=$$?; echo "mypy envs agents benchmarks:"; cat $$log; rm -f $$log; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5): failing" >&2; exit 1; fi; \
	if [ $$mrc -ne 0 ]; then echo "mypy failed (exit $$mrc)" >&2; exit 1; fi; exit $$rc

test-all: $(STAMP)
	$(PY) -m pytest $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy envs agents benchmarks

bench: $(STAMP)
	$(PY) -m benchmarks $(ARGS)

# Issue 16's comparison of the black-box strategies (docs/results.md, docs/strategies_*.png); sbi from the bench extra.
bench-strategies: $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/experiments/strategies.py --suite $(ARGS)

# The wheels benchmarks/experiments/gpu_check.sh installs on the GPU machine (no network there): .gpu-wheels/, < 64 MiB.
gpu-wheels: $(STAMP)
	PYTHON=$(PY) bash benchmarks/experiments/gpu_wheels.sh .gpu-wheels

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache

# Issue 28: Blender for envs/adapters/blender.py, and the NumPy its Python needs, from the system package manager:
# installed through apt where this runs as root, otherwise the one command to run is printed.
BLENDER_PACKAGES := blender python3-numpy
.PHONY: system-blender
install: system-blender
test: system-blender
system-blender:
	@if command -v blender >/dev/null 2>&1 && blender -b --factory-startup --python-exit-code 1 \
	    --python-expr "import numpy" >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y $(BLENDER_PACKAGES) \
	    || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $(BLENDER_PACKAGES); }; \
	else echo "nondiff: Blender (envs/adapters/blender.py) is missing; install it with:" \
	    "sudo apt-get install -y $(BLENDER_PACKAGES)" >&2; fi

# Issue 27: the headless Godot 3 for envs/adapters/godot.py, from the system package manager: installed through
# apt where this runs as root, otherwise the one command to run is printed.
.PHONY: system-godot
install: system-godot
test: system-godot
system-godot:
	@if command -v godot3-server >/dev/null 2>&1 && command -v godot3 >/dev/null 2>&1 \
	    && command -v xvfb-run >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y godot3-server godot3 xvfb \
	    || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y godot3-server godot3 xvfb; }; \
	else echo "nondiff: Godot (envs/adapters/godot.py; godot3 and xvfb for its camera) is missing; install it" \
	    "with: sudo apt-get install -y godot3-server godot3 xvfb" >&2; fi

# Issue 30: a PostgreSQL server for tests/agents/search/test_shared_storage.py (one study's workers sharing
# search.storage), from the system package manager: installed through apt where this runs as root, otherwise
# the one command to run is printed. The test starts its own server on loopback; nothing is left running.
.PHONY: system-postgresql
install: system-postgresql
test: system-postgresql
system-postgresql:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql \
	    || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql; }; \
	else echo "nondiff: PostgreSQL (the shared study storage's test) is missing; install it with:" \
	    "sudo apt-get install -y postgresql" >&2; fi
