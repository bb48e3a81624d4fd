# The README's two commands: `make demo` (main job on the embedded default) and `make test`.
# Both create the virtual environment in .venv on first use and reuse it afterwards.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DEMO_OUT ?= runs/demo
PYTEST_ARGS ?=
# DeepSpeed's JIT-compiled ops live in the environment, not in a cache shared with other checkouts.
export TORCH_EXTENSIONS_DIR ?= $(abspath $(VENV))/torch_extensions

.PHONY: demo test test-all lint bench gpu-wheels venv bubblewrap clean

venv: $(STAMP) bubblewrap

# Kernel isolation of untrusted diagram scripts (perturb-script, perturb-batch, import --pairs-dir):
# bubblewrap, installed with apt-get where we are root (CI, the reference machines); anywhere else
# this only says how (README, "Installing bubblewrap"). Without it those commands refuse such scripts.
bubblewrap:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing bubblewrap (apt-get) for the script sandbox"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q bubblewrap >/dev/null 2>&1 \
	      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q bubblewrap >/dev/null; } \
	      || echo "warning: could not install bubblewrap: untrusted scripts will be refused (see README)"; \
	  else \
	    echo "note: bubblewrap (bwrap) is not installed: untrusted diagram scripts will be refused;" \
	         "install it as the README says (e.g. sudo apt-get install bubblewrap)"; \
	  fi; }

$(STAMP): setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=24" "setuptools>=69" wheel
	# torch and torchvision are served from local disk by pip on the reference machines.
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	# DeepSpeed ships as an sdist whose setup.py imports torch: build it against ours, ops JIT-compiled later.
	DS_BUILD_OPS=0 $(PIP) install -q --no-build-isolation "deepspeed>=0.19,<0.20"
	# Upstream LLaVA pins 2023 versions of everything: install it alone, its real dependencies come from our extras.
	$(PIP) install -q --no-deps llava-torch==1.2.2.post1
	$(PIP) install -q -e ".[all,embeddings]"
	# DeepSpeed compiles its CPU shared-memory op on first use (about a minute on 2 cores): do it once here,
	# into the environment, rather than inside the first test or training run that starts DeepSpeed.
	$(PY) -c "from deepspeed.comm.torch import build_shm_op; build_shm_op()" >/dev/null
	touch $(STAMP)

# The whole pipeline on the embedded CPU recipe: data, negatives, MMCLIP, evaluation, LLaVA stages 1-2, answers.
# A re-run skips finished stages and resumes an interrupted one; the report is $(DEMO_OUT)/report.md (and .html).
demo: $(STAMP) bubblewrap
	$(VENV)/bin/mmgeolm run demo-cpu --out $(DEMO_OUT)

test: $(STAMP) bubblewrap
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-all: $(STAMP) bubblewrap
	$(PY) -m pytest -q -m "" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Every benchmark prints its figure against its baseline measured in the same run (CPU; GPU ones say so).
BENCHES := $(sort $(wildcard benchmarks/bench_*.py))
bench: $(STAMP)
	set -e; for b in $(BENCHES); do echo "== $$b"; $(PY) $$b; done

# Wheels for the GPU check on a lent device machine (benchmarks/gpu_check.sh, docs/performance.md): the packages
# of benchmarks/gpu_wheels.txt for its Python (3.12) on manylinux x86-64, without dependencies, into .whl/.
GPU_PYTHON ?= 3.12
gpu-wheels:
	rm -rf .whl
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl -r benchmarks/gpu_wheels.txt
	@ls .whl && du -sh .whl

clean:
	rm -rf $(VENV) runs build *.egg-info
