# Two commands do all the set-up on a fresh machine (Python >= 3.10 and pip):
#   make demo   installs asge and trains it by ASGE on scikit-learn's digits (about a minute on 2 cores)
#   make test   installs asge with its test and export extras and runs the whole test suite
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip

.PHONY: install install-test demo test
install:
	$(PIP) install --quiet -e .

install-test:
	$(PIP) install --quiet -e '.[test,export,timm]'

demo: install
	$(PYTHON) -m asge train --dataset digits --out runs/demo-digits-$$(date +%Y%m%d-%H%M%S)

test: install-test
	$(PYTHON) -m pytest -q --timeout=600 tests
