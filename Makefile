# Shortcuts for the commands the README gives; each installs what it needs first.
.PHONY: serve demo test lint bench bench-dry-run profile

serve:
	scripts/serve

demo:
	scripts/serve --demo

test:
	scripts/test

lint:
	scripts/lint

# Every workload of ../shared/BENCHMARKS.md against its references, about 34 minutes (benchmarks/suite.py).
bench:
	scripts/setup
	benchmarks/install_peers.sh
	.venv/bin/python -m benchmarks all

bench-dry-run:
	.venv/bin/python -m benchmarks all --dry-run

# py-spy profiles of the hot paths under load (benchmarks/profile.py).
profile:
	scripts/setup
	benchmarks/install_peers.sh
	.venv/bin/python -m benchmarks profile
