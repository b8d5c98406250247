# Two commands on a fresh machine:  `make run`  and  `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
# Ray/Gradio environment for local runs lives in mirror3d/utils/env.py (one place).
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run demo test install install-dev chromium bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## the browser test's Chromium: Debian's package (Playwright drives it; never `playwright install`)
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then \
	  echo "make: installing Debian's chromium for the browser test (apt-get)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium \
	    || { echo "make: apt-get install chromium failed" >&2; exit 1; }; \
	else \
	  echo "make: $(CHROMIUM) is missing and the browser test needs it; as root run:" \
	       "apt-get update && apt-get install -y chromium" >&2; exit 1; \
	fi
chromium: $(CHROMIUM)

## the main job on the embedded default (SynthPeople, local Ray)
run: $(VENV)/.installed
	$(PY) jobs/pipeline.py $(ARGS)

## the demo (Gradio page + REST API on Ray Serve) from the newest runs of make run; prints the URL
demo: $(VENV)/.installed
	$(PY) jobs/serve.py $(ARGS)

## the import contract (.importlinter), then the whole test suite (with the real-browser test)
test: $(VENV)/.installed-dev $(CHROMIUM)
	$(VENV)/bin/lint-imports --no-cache
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5): failing" >&2; exit 1; fi; \
	exit $$rc

bench: $(VENV)/.installed-dev
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
