# The two entry points for a fresh machine (see README):
#   make run   - create .venv, install cds, run the main job on the embedded default
#   make test  - create .venv, install cds with its test tools, lint, run the test suite
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# The PyTorch build, chosen explicitly: `cpu` (the default) or a CUDA one such as `cu128`
# (`make run TORCH_VARIANT=cu128`). The local version label (+cpu, +cu128) exists only on
# PyTorch's own index, so a plain `torch` from the public index, a CUDA build on Linux, is never
# taken by accident. Switching variants reinstalls torch in .venv.
TORCH_VERSION := 2.13.0
TORCH_VARIANT ?= cpu
TORCH_INDEX := https://download.pytorch.org/whl/$(TORCH_VARIANT)
TORCH_INDEX_RETRIES ?= 2
STAMP := $(VENV)/.installed-$(TORCH_VARIANT)

export DO_NOT_TRACK := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1

# How `make run` and `make test` start Python: with the .venv's commands first on PATH, and with
# byte-code caching on even where PYTHONDONTWRITEBYTECODE is set, so that each module of the
# environment is compiled once, by the first process that imports it, not by every process.
RUN_ENV := env -u PYTHONDONTWRITEBYTECODE PATH="$(CURDIR)/$(BIN):$$PATH"

.PHONY: run test install lint lock

$(STAMP): pyproject.toml requirements.lock
	rm -f $(VENV)/.installed*
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned to the chosen build, so that no dependency can pull another one;
	# only torch itself comes from PyTorch's index (TORCH_INDEX_RETRIES retries: where that index
	# is unreachable, as on an offline mirror, pip's default five cost about 8 s of back-off).
	$(BIN)/pip install --quiet --no-compile --retries $(TORCH_INDEX_RETRIES) --no-deps \
		"torch==$(TORCH_VERSION)+$(TORCH_VARIANT)" --extra-index-url $(TORCH_INDEX)
	# every other package at the exact version of the lock file; then what the chosen torch
	# build needs beyond it (nothing for cpu; CUDA runtime wheels for a CUDA build); then cds
	# itself without resolving anything again. pip check proves the set consistent.
	$(BIN)/pip install --quiet --no-compile -r requirements.lock
	$(BIN)/pip install --quiet --no-compile "torch==$(TORCH_VERSION)+$(TORCH_VARIANT)"
	$(BIN)/pip install --quiet --no-deps -e ".[pipeline,dev,bench]"
	$(BIN)/pip check
	# pip installs without byte-compiling: a run imports about a third of the environment's
	# 20,000 modules, and Python caches each one the first time it is imported (RUN_ENV).
	# cds itself is compiled now, so that a syntax error fails the install.
	$(BIN)/python -m compileall -q -j 0 cds
	touch $(STAMP)

# Re-pin requirements.lock to what .venv holds (after changing pyproject's dependencies:
# `pip install -e ".[pipeline,dev,bench]"` into .venv, then `make lock`, then `make test`).
# torch and what only a CUDA build of it needs (nvidia-*, triton) stay out: the build decides.
lock:
	{ echo "# Exact versions for make run / make test (torch: its build is chosen in the Makefile)."; \
	  echo "# Regenerate with make lock."; \
	  $(BIN)/pip freeze --all --exclude-editable | grep -v -E '^(pip|torch|triton|nvidia-[^=]*)=='; \
	} > requirements.lock

install: $(STAMP)

run: $(STAMP)
	$(RUN_ENV) $(BIN)/cds run

lint: $(STAMP)
	$(BIN)/ruff check cds tests benchmarks examples

test: $(STAMP) lint
	$(RUN_ENV) $(BIN)/python -m pytest -q
