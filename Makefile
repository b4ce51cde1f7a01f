# `make test` and `make demo` work on a fresh clone: they create .venv, install the
# project (CPU build of torch) and run. A second call reuses the environment.
# `make demo QUICK=1`: the demo shrunk to well under a minute (what CI runs);
# `make demo DEMO_OUT=dir`: where its outputs go (default demo_out/).
# `make screenshots`: regenerate docs/*.png (runs the full demo; needs chromium).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo_out

.PHONY: test lint docs demo bench screenshots clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[all,test,docs]"
	touch $(STAMP)

# the linter, the type checker and the docs site first (seconds), then the suite with the docstrings' examples
test: lint docs
	$(PY) -m pytest -q -ra

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

# the MkDocs site (guide + API pages from the docstrings) into site/; --strict: a broken link or reference fails
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

demo: $(STAMP)
	$(PY) examples/demo.py --out "$(DEMO_OUT)" $(if $(QUICK),--quick,)

bench: $(STAMP)
	$(PY) benchmarks/speed.py

# the README's pictures (docs/*.png) from a fresh full demo; needs Debian's chromium; not part of CI
screenshots: $(STAMP)
	$(PY) docs/screenshots.py --out docs

clean:
	rm -rf $(VENV) .pytest_cache site
