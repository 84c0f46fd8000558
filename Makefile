# The two commands a newcomer needs: `make train` and `make test`. Each creates .venv if it is
# missing, with a supported Python (python3 if it is one, else the newest of 3.10-3.14 found;
# PYTHON=/path/to/python chooses), and installs the package into it first, with numpy 2
# (scripts/install; NUMPY=1 for numpy 1.26), then compiles mnist_gluon's kernels (g++, against
# the installed mxnet). `make train` installs what the README's quick start uses (the onnx,
# plot and serve extras); `make test` the dev extra, and the Debian packages the tests use
# (scripts/system-packages). `make docs` builds the documentation site into site/.

PYTHON ?=
NUMPY ?= 2
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= configs/base.yaml
ARGS ?=
# This project's machines keep the MNIST files beside the checkout, and have no internet; anywhere
# else the default data root (Gluon's cache, downloading what is missing) is used.
DATA_ROOT ?= $(if $(shell grep -qs "name: *fashion" $(CONFIG) && echo fashion),,$(wildcard ../shared/data/mnist))

.PHONY: train test docs dist lint format clean

# mnist_gluon's own kernels, compiled against the installed mxnet's lib_api files.
KERNELS := src/mnist_gluon/kernels/libmnist_kernels.so

train: $(VENV)/.installed $(KERNELS)
	@$(BIN)/python scripts/make-train $(CONFIG) $(DATA_ROOT) -- $(ARGS)

test: $(VENV)/.installed-dev $(KERNELS)
	scripts/system-packages
	$(BIN)/python -m pytest

# The documentation site, into site/ (`$(BIN)/mkdocs serve` to browse it while editing).
docs: $(VENV)/.installed-docs
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# An sdist and a wheel in dist/; the wheel carries the configs, the page and the compiled
# kernels, built against this venv's mxnet (hence no isolation).
dist: $(VENV)/.installed-dev
	rm -rf dist
	$(BIN)/python -m build --no-isolation --outdir dist .

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests scripts

format: $(VENV)/.installed-dev
	$(BIN)/ruff check --fix src tests scripts

$(BIN)/python:
	@python=$$(scripts/pick-python $(PYTHON)) && echo "creating $(VENV) with $$python" && \
	  "$$python" -m venv $(VENV)

$(VENV)/.installed: pyproject.toml overrides/numpy$(NUMPY).txt | $(BIN)/python
	$(BIN)/python scripts/install --numpy $(NUMPY) -e ".[quickstart]"
	touch $@

$(VENV)/.installed-docs: pyproject.toml overrides/numpy$(NUMPY).txt | $(BIN)/python
	$(BIN)/python scripts/install --numpy $(NUMPY) -e ".[quickstart,docs]"
	touch $@ $(VENV)/.installed

$(VENV)/.installed-dev: pyproject.toml overrides/numpy$(NUMPY).txt | $(BIN)/python
	$(BIN)/python scripts/install --numpy $(NUMPY) -e ".[dev]"
	touch $@ $(VENV)/.installed $(VENV)/.installed-docs

$(KERNELS): src/mnist_gluon/kernels/*.cc src/mnist_gluon/kernels/*.h src/mnist_gluon/kernels/build.py | $(VENV)/.installed
	$(BIN)/python -m mnist_gluon.kernels.build

# JAX for scripts/bench.py's comparison, apart: it needs Python 3.11+ and a numpy of its choosing.
.venv-jax:
	python=$$(scripts/pick-python $(PYTHON)) && "$$python" -m venv $@.tmp
	$@.tmp/bin/python -m pip install --quiet "jax==0.10.2"
	mv $@.tmp $@

clean:
	rm -rf $(VENV) .venv-jax build dist site src/*.egg-info .pytest_cache .ruff_cache $(KERNELS)
