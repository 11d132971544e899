# Two entry points on a fresh machine: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch/torchvision come first and as a matched pair: on x86_64 here the 2.14.1/0.29.1 wheels are
# the pair that imports cleanly. Override for a GPU or another platform, e.g.
#   make test TORCH_SPEC="torch torchvision --index-url https://download.pytorch.org/whl/cu124"
ARCH := $(shell uname -m)
ifeq ($(ARCH),x86_64)
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
else
TORCH_SPEC ?= torch==2.9.1 torchvision==0.24.1
endif
STAMP := $(VENV)/.mdclust-installed
PYTEST_ARGS ?=

.PHONY: install demo test test-slow test-all lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[dev,ray,parquet,int8]'
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python examples/demo.py

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

# The slow half (kill -9 at random moments of every stage, Ray resumes, downloads, the example
# script): CI runs it after `make test`; `make test-all` runs both in one go.
test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

test-all: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check mdclust tests scripts benchmarks examples

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/embed_throughput.py

clean:
	rm -rf $(VENV) demo build *.egg-info
