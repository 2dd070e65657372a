# Transformer Lab: two commands.
#   make lab    install everything and open JupyterLab on your own copy of the notebooks (work/)
#   make test   install everything, dev tools included, and run every test
# Without make (Windows): see "Quick start" in README.md.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch as pip finds it. On Linux, PyPI's torch is the CUDA build (gigabytes of GPU libraries); for the CPU-only
# build, name PyTorch's CPU index:  make lab TORCH_INDEX=https://download.pytorch.org/whl/cpu
# (macOS and Windows wheels on PyPI are CPU builds already). TORCH=torch (or another version) changes the version.
TORCH  ?= torch==2.13.0
TORCH_INDEX ?=
TORCH_FROM := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)
# setuptools prints a boxed notice on every editable install ("Please be careful with folders … same name as
# your package"), whatever the project declares; it is about this very checkout, so it says nothing here.
QUIET_EDITABLE := PYTHONWARNINGS="ignore:Editable installation"

.PHONY: lab test install install-dev test-browser figures artifacts benchmarks lint clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

install: $(PY)
	$(PY) -m pip install -q '$(TORCH)' $(TORCH_FROM)
	$(QUIET_EDITABLE) $(PY) -m pip install -q -e .

install-dev: $(PY)
	$(PY) -m pip install -q '$(TORCH)' $(TORCH_FROM)
	$(QUIET_EDITABLE) $(PY) -m pip install -q -e '.[dev]'

# JupyterLab refuses to start as root ("Running as root is not recommended") unless told it may: root is who
# runs it in a container, on Colab and on many lab machines, so root gets --allow-root (and only root).
ALLOW_ROOT := $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root,)

lab: install
	@mkdir -p work
	@# Copy the notebooks you do not have yet; never overwrite your own work.
	@for nb in notebooks/*.ipynb; do [ -e "work/$$(basename $$nb)" ] || cp "$$nb" work/; done
	$(VENV)/bin/jupyter lab $(ALLOW_ROOT) work/

test:
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory install-dev || exit 1; \
	t1=$$(date +%s); echo "== install: $$((t1 - start)) s"; \
	$(PY) -m labutils student --check || exit 1; \
	$(VENV)/bin/lint-imports --no-cache || exit 1; \
	$(PY) -m pytest -q tests --deselect tests/test_grading.py --deselect tests/test_redteam.py || exit 1; \
	t2=$$(date +%s); echo "== unit and command tests: $$((t2 - t1)) s"; \
	$(PY) -m pytest -q tests/test_grading.py tests/test_redteam.py || exit 1; \
	t3=$$(date +%s); echo "== grading tests: $$((t3 - t2)) s"; \
	if ls solutions/*.ipynb >/dev/null 2>&1; then \
	  $(PY) -m pytest -q --nbval-lax -p no:cacheprovider solutions notebooks || exit 1; \
	fi; \
	t4=$$(date +%s); echo "== notebooks (nbval): $$((t4 - t3)) s"; \
	echo "== total: $$((t4 - start)) s"

# The student's-eye view: JupyterLab, in headless Chromium, runs notebook 06 and a student notebook and
# drives the attention explorer (tests/browser). Needs Debian's Chromium: apt-get install -y chromium.
BROWSER_SCREENSHOTS ?= build/browser-screenshots

test-browser:
	@start=$$(date +%s); \
	$(MAKE) --no-print-directory install-dev || exit 1; \
	$(QUIET_EDITABLE) $(PY) -m pip install -q '$(TORCH)' -e '.[dev,browser]' || exit 1; \
	t1=$$(date +%s); echo "== install: $$((t1 - start)) s"; \
	echo "== screenshots go to $(BROWSER_SCREENSHOTS)/"; \
	LABUTILS_BROWSER_SCREENSHOTS='$(BROWSER_SCREENSHOTS)' $(PY) -m pytest -q -s -p no:cacheprovider tests/browser; \
	status=$$?; t2=$$(date +%s); \
	echo "== browser test: $$((t2 - t1)) s; screenshots in $(BROWSER_SCREENSHOTS)/"; \
	exit $$status

# The README's figures: cross-attention in every view, and the step-through of decoding as a GIF.
FIGURES := figures --out figures/ --kind cross --view matrix lines model --animate gif

figures: install
	$(PY) -m labutils $(FIGURES)

# After the shipped weights change: the figures, then every solution notebook run top to bottom and saved
# with its outputs (what readers of solutions/ see, and what nbval compares in # NBVAL_CHECK_OUTPUT cells),
# then the student notebooks (without outputs) made again from them.
artifacts: install-dev
	$(PY) -m labutils $(FIGURES)
	$(VENV)/bin/jupyter nbconvert --to notebook --execute --inplace --log-level=WARN \
	  --ExecutePreprocessor.timeout=900 --ExecutePreprocessor.record_timing=False \
	  --ExecutePreprocessor.store_widget_state=False solutions/*.ipynb
	$(PY) -m labutils student

benchmarks: install
	$(PY) benchmarks/bench_series.py
	$(PY) benchmarks/bench_decode.py
	$(PY) benchmarks/bench_models.py
	$(PY) benchmarks/bench_model_throughput.py
	$(PY) benchmarks/bench_grading.py
	$(PY) benchmarks/bench_threads.py

lint: install-dev
	$(VENV)/bin/ruff check labutils tests benchmarks
	$(VENV)/bin/lint-imports --no-cache
