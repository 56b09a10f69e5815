.PHONY: run test bootstrap lint bench

run: bootstrap        ## the whole service on SQLite, no Redis: chat page on http://127.0.0.1:8080/
	.venv/bin/hotline run

test:                 ## everything: lint, held-out NLU score, pytest with real Rasa/redis/chromium
	bash scripts/test.sh

bootstrap:
	bash scripts/bootstrap.sh

lint:
	.venv/bin/ruff check common storage gateway channels handoff profiles bot tests bench scripts
	.venv/bin/lint-imports

bench: bootstrap
	.venv/bin/python -m bench.web_latency
