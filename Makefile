# Two entry points for a fresh machine: `make demo` (the main job) and `make test`.
# python3.11 where it runs (the README's numbers were measured on it), else python3; 3.12 and 3.13 pass the tests
# too. Another interpreter: make demo PYTHON=python3.13 (after `make clean` if .venv exists).
PYTHON ?= $(shell python3.11 -c '' 2>/dev/null && echo python3.11 || echo python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/pip || $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "$(PYTHON) is Python %d.%d; this project needs 3.11 or newer (name one: make demo PYTHON=python3.12)" % sys.version_info[:2])'
	test -x $(BIN)/pip || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/pulse analyze pulse/assets/examples --out demo_output
	@echo "Outputs written to $(CURDIR)/demo_output (Raven tables, detections.csv, summary.json)"

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo_output
