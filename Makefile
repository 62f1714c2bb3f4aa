# recpipe: the two commands of the README. Both create .venv and install the pinned dependencies.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test java bench clean

demo: java $(INSTALLED)
	$(BIN)/recpipe run --config conf/demo.yaml

test: java $(INSTALLED)
	$(BIN)/pytest

java:
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1); \
	if [ -z "$$v" ] || [ "$$v" -lt 17 ]; then \
	  echo "recpipe needs Java 17 or newer for Spark (found: $${v:-none}); install it with: sudo apt-get install -y openjdk-17-jre-headless"; exit 2; fi

$(INSTALLED): setup.cfg pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "recpipe needs Python 3.11 (set PYTHON=python3.11)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

clean:
	rm -rf warehouse warehouse-movielens data spark-warehouse
