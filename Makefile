# ELYSIUM: `make run` serves the shop, `make test` runs every test. `make help` lists the rest.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 5000
STRIPE_PORT ?= 12111
SANITY_PORT ?= 12112
DEMO_WEBHOOK_SECRET := whsec_local_demo_only
DEMO_SANITY_SECRET := sanity-fake-webhook-secret
# The Sanity stand-in's demo project, for `make run`: the shop follows it like a real studio.
DEMO_SANITY := SANITY_PROJECT_ID=elysium0 SANITY_DATASET=production \
  SANITY_API_HOST=http://127.0.0.1:$(SANITY_PORT) SANITY_WEBHOOK_SECRET=$(DEMO_SANITY_SECRET)
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run run-shop db test test-fast lint format browser bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Make .venv and install the shop with its development tools

db: install ## Bring the database up to date and load the demo catalogue
	$(BIN)/flask db upgrade
	$(BIN)/flask seed

run: db ## Serve the shop on http://127.0.0.1:5000 (SQLite, demo catalogue, simulated payments and studio, email worker)
	@echo "Simulated Stripe on http://127.0.0.1:$(STRIPE_PORT): checkout works offline, no real payment."
	@echo "Simulated Sanity studio on http://127.0.0.1:$(SANITY_PORT): see devtools/fake_sanity/README.md."
	$(BIN)/python -m devtools.fake_stripe --host 127.0.0.1 --port $(STRIPE_PORT) \
	  --webhook-url http://127.0.0.1:$(PORT)/webhooks/stripe --webhook-secret $(DEMO_WEBHOOK_SECRET) & \
	  stripe=$$!; $(BIN)/python -m devtools.fake_sanity --host 127.0.0.1 --port $(SANITY_PORT) \
	  --webhook-url http://127.0.0.1:$(PORT)/webhooks/sanity --webhook-secret $(DEMO_SANITY_SECRET) & \
	  sanity=$$!; $(BIN)/flask emails worker & worker=$$!; \
	  trap 'kill $$stripe $$sanity $$worker 2>/dev/null' EXIT INT TERM; \
	  $(DEMO_SANITY) $(BIN)/flask catalog sync || echo "The catalogue stays as seeded."; \
	  SITE_URL=http://$(HOST):$(PORT) $(DEMO_SANITY) \
	  STRIPE_SECRET_KEY=sk_test_local_demo STRIPE_API_BASE=http://127.0.0.1:$(STRIPE_PORT) \
	  STRIPE_WEBHOOK_SECRET=$(DEMO_WEBHOOK_SECRET) $(BIN)/flask run --host $(HOST) --port $(PORT)

run-shop: db ## Serve the shop and its email worker, with the Stripe settings from your environment / .env
	$(BIN)/flask emails worker & trap 'kill $$! 2>/dev/null' EXIT INT TERM; \
	  $(BIN)/flask run --host $(HOST) --port $(PORT)

browser: ## Install Debian's Chromium for the browser tests, if it is missing and we can
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Chromium for the browser tests..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "Chromium is not installed (apt-get install chromium): browser tests will be skipped."; \
	  fi; \
	fi

test: install browser ## Run the whole test suite (SQLite; set TEST_DATABASE_URL for PostgreSQL)
	$(BIN)/pytest

test-fast: install ## Run the suite without the browser tests
	$(BIN)/pytest -m "not browser"

lint: install ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install ## Format the code and fix what ruff can
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install ## Benchmark the shop's pages against a bare Flask page (gunicorn, PostgreSQL, wrk)
	@if ! command -v wrk >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing wrk for the benchmark..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
	  else \
	    echo "wrk is not installed (apt-get install wrk): the benchmark needs it."; exit 1; \
	  fi; \
	fi
	$(BIN)/python bench/run.py

clean: ## Remove the virtualenv and caches (keeps instance/)
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
