# Everything runs inside .venv, created on first use. torch is pinned to the CPU wheel
# that lies on these machines and installed *before* the project, so pip never pulls a
# multi-GB CUDA build to satisfy the project's `torch>=2.4`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0
JOBS   ?= 2

.PHONY: demo test fuzz fuzz-semantics bench models zoo zoo-analyze clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lipgraph analyze models/lenet.onnx

# One BLAS/OpenMP thread per pytest worker: the workers already fill the cores, and
# oversubscribed small float64 kernels run ~10x slower.
test: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q -n $(JOBS) tests

# The long mutation run (tests/fuzz.py): every model, every mutation class, FUZZ_SEEDS seeds;
# failing mutants land in fuzz-failures/ (git-ignored) with how to rerun them.
FUZZ_SEEDS ?= 5
fuzz: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) tests/fuzz.py --seeds $(FUZZ_SEEDS)

# The semantic sweep (tests/test_semantics_sweep.py) with many more examples per op than CI's.
SWEEP_EXAMPLES ?= 400
fuzz-semantics: $(STAMP)
	LIPGRAPH_SWEEP_EXAMPLES=$(SWEEP_EXAMPLES) OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
		$(PY) -m pytest -q -n $(JOBS) tests/test_semantics_sweep.py

# The bench also installs the optional [sdp] extra (cvxpy + Clarabel): section (f) compares
# LipSDP's interior-point route with the solver-free one. make test never needs it.
bench: $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[sdp]'
	$(PY) -m bench $(if $(QUICK),--quick,)

models: $(STAMP)
	$(PY) models/build.py

# The model zoo (models/zoo/README.md): exporters in their own venvs outside the repo
# (setup_venvs.sh has the pins), re-export every model, regenerate the README's op tables.
# zoo-analyze also re-runs lipgraph on every model (minutes) for the README's snapshot.
zoo: $(STAMP)
	models/zoo/setup_venvs.sh --export
	$(PY) models/zoo/report.py

zoo-analyze: $(STAMP)
	$(PY) models/zoo/report.py --analyze

clean:
	rm -rf $(VENV) build *.egg-info
