# Everything runs inside .venv, created on first use. torch is pinned to the CPU wheel
# that lies on these machines and installed *before* the project, so pip never pulls a
# multi-GB CUDA build to satisfy the project's `torch>=2.4`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0
JOBS   ?= 2

.PHONY: demo test fuzz-semantics bench models clean

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

# The semantic sweep (tests/test_semantics_sweep.py) with many more examples per op than CI's.
SWEEP_EXAMPLES ?= 400
fuzz-semantics: $(STAMP)
	LIPGRAPH_SWEEP_EXAMPLES=$(SWEEP_EXAMPLES) OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
		$(PY) -m pytest -q -n $(JOBS) tests/test_semantics_sweep.py

bench: $(STAMP)
	$(PY) -m bench $(if $(QUICK),--quick,)

models: $(STAMP)
	$(PY) models/build.py

clean:
	rm -rf $(VENV) build *.egg-info
