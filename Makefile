# Two entry points that do all set-up on a fresh machine (a virtualenv in .venv):
#   make demo   - the main job: p2p quickstart on the built-in synthetic data (report in runs/report/)
#   make test   - the test suite
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test install bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/p2p quickstart --workdir runs

test: $(VENV)/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) benchmarks/bench_train_step.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
