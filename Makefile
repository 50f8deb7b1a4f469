# Every target sets up .venv from nothing when it is missing.
# torch is installed first and pinned so that the local CPU wheel meets the project's range
# (an unpinned torch would pull a multi-GB CUDA build).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# A second venv with only the `infer` extra (no torch): tests/test_torch_free.py segments with a
# model bundle in it, as a user who installed `pip install 'slidesift[infer]'` would.
INFER_VENV  := .venv-infer
INFER_STAMP := $(INFER_VENV)/.installed

.PHONY: demo test quick bench lint typecheck clean setup web-runtime

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

$(INFER_STAMP): pyproject.toml
	$(PYTHON) -m venv $(INFER_VENV)
	$(INFER_VENV)/bin/pip install --quiet --upgrade pip
	$(INFER_VENV)/bin/pip install --quiet -e '.[infer]'
	touch $(INFER_STAMP)

demo: $(STAMP)
	$(BIN)/slidesift demo

test: $(STAMP) $(INFER_STAMP) web-runtime
	$(BIN)/ruff check src tests benchmarks docs
	$(BIN)/ruff format --check src tests benchmarks docs
	$(BIN)/mypy
	$(BIN)/pytest -q -n auto --dist loadfile

# The inner loop: every test but those marked slow (whole-cohort renders, the demo, the
# three-class model, T = 400 parity); under 90 s on the 2-core VM.
quick: $(STAMP)
	$(BIN)/pytest -q -n auto --dist loadfile -m "not slow"

bench: $(STAMP) web-runtime
	$(BIN)/python benchmarks/bench_sift.py
	$(BIN)/python benchmarks/bench_read.py
	$(BIN)/python benchmarks/bench_phantom.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_segment.py
	$(BIN)/python benchmarks/bench_e2e.py
	$(BIN)/python benchmarks/bench_cohort.py
	$(BIN)/python benchmarks/bench_gpu.py --if-gpu
	$(BIN)/python benchmarks/bench_web.py
	$(BIN)/python benchmarks/bench_soak.py
	$(BIN)/python benchmarks/bench_fuzz.py
	$(BIN)/python benchmarks/bench_reliability.py
	$(BIN)/python benchmarks/reliability_table.py --write docs/reliability.md
	$(BIN)/python benchmarks/readme_table.py

# onnxruntime-web for the browser page (slidesift export --web): fetched once with npm into the
# slidesift cache (as pip fetches wheels; the page never downloads anything), not in git nor in
# the wheel (15 MB of WebAssembly). The check verifies the version and the SHA-256 pinned in
# src/slidesift/web/runtime.py. Another folder: SLIDESIFT_CACHE=... make web-runtime.
ORT_WEB := 1.31.1
web-runtime: $(STAMP)
	@dir="$$($(BIN)/python -m slidesift.web dir)" && mkdir -p "$$dir" && \
	  { [ -f "$$dir/onnxruntime-web-$(ORT_WEB).tgz" ] || \
	    npm pack --silent onnxruntime-web@$(ORT_WEB) --pack-destination "$$dir" >/dev/null; } && \
	  $(BIN)/python -m slidesift.web check

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks docs
	$(BIN)/ruff format --check src tests benchmarks docs

typecheck: $(STAMP)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(INFER_VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
