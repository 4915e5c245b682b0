# The README's two commands. Both create .venv and install everything on first use,
# so a fresh machine with only Python 3.11 needs nothing else.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Re-install when the dependency list changes.
STAMP  := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
EXTRAS ?= cpu,demo,test

# The TensorFlow of the TF Serving release k8s/ pins, in its own environment, so the suite can
# check that this older runtime serves our exports (tests/test_serving_compat.py).
SERVING_TF    ?= 2.20.*
SERVING_VENV  := .venv-serving
SERVING_STAMP := $(SERVING_VENV)/.installed-$(subst *,x,$(SERVING_TF))

.PHONY: test demo lint format bench clean serving-env

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	rm -f $(VENV)/.installed-*
	touch $@

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

$(SERVING_STAMP):
	test -x $(SERVING_VENV)/bin/python || $(PYTHON) -m venv $(SERVING_VENV)
	$(SERVING_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SERVING_VENV)/bin/python -m pip install --quiet 'tensorflow-cpu==$(SERVING_TF)'
	rm -f $(SERVING_VENV)/.installed-*
	touch $@

serving-env: $(SERVING_STAMP)

test: lint serving-env
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/dlss-demo --output_dir=demo_output --overwrite

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/preprocess.py --num_images=2000 --repeats=3
	$(BIN)/python bench/train_step.py
	$(BIN)/python bench/serve.py

clean:
	rm -rf $(VENV) $(SERVING_VENV) demo_output .pytest_cache .ruff_cache
