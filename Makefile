# Two commands on a fresh machine with Python 3.10+ (nothing else installed):
#   make app    the app on the shipped head (http://127.0.0.1:7860); the first run creates .venv and installs
#               requirements.txt into it
#   make test   the tests; the first run installs requirements-dev.txt and the Ray extra into .venv
# PYTHON picks the interpreter the environment is made from; ARGS are passed on (make app ARGS=--share).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check

.PHONY: app test

app: $(VENV)/.deps-app
	$(PY) app.py $(ARGS)

test: $(VENV)/.deps-dev
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q $(ARGS)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.deps-app: requirements.txt pyproject.toml | $(PY)
	$(PIP) install -q -r requirements.txt -e .
	touch $@

$(VENV)/.deps-dev: requirements.txt requirements-dev.txt requirements-ray.txt pyproject.toml | $(PY)
	$(PIP) install -q -r requirements-dev.txt -r requirements-ray.txt -e .
	touch $(VENV)/.deps-app $@
