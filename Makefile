# Set-up and main entry points; every target reuses .venv and installs only what is missing.
VENV ?= .venv
PYTEST_ARGS ?=

.PHONY: install demo test test-fast lint stack-up stack-down clean

install:
	@scripts/bootstrap.sh

demo: install
	$(VENV)/bin/saodf demo

# pytest exits 5 when it collected no tests: treat that as a failure, not a pass.
test: install
	@$(VENV)/bin/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-fast: install
	$(VENV)/bin/pytest -m "not slow" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

stack-up: install
	$(VENV)/bin/saodf stack up

stack-down:
	$(VENV)/bin/saodf stack down

clean:
	rm -rf build .pytest_cache .ruff_cache
