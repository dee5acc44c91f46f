# One command to set up and run the demo, one to set up and run the tests (README.md).
# Both create .venv with uv (installed into the user's Python if missing) and install medsage
# with the extras they need; rerunning skips what is already installed.
PYTHON ?= python3
VENV   ?= .venv
UV     := $(VENV)/.uv/bin/uv
PY     := $(VENV)/bin/python

.PHONY: demo test test-fast install browser bench clean

$(UV):
	$(PYTHON) -m venv $(VENV)/.uv
	$(VENV)/.uv/bin/pip install -q "uv>=0.5"

$(VENV)/.installed: pyproject.toml | $(UV)
	$(UV) venv -q --allow-existing --python $(PYTHON) $(VENV)
	$(UV) pip install -q --python $(PY) -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/medsage demo --out demo_out

# Debian's chromium drives the viewer's browser tests; without it they are skipped with the reason.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
		|| echo "chromium is not installed: the viewer's browser tests will be skipped"

test: install browser
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) demo_out .pytest_cache
