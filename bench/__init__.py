"""Benchmarks of the ticker service, each one command against a real `ticker run` stack.

Run them from the project root with the project's interpreter, for example
`.venv/bin/python -m bench.subscribe_latency`; `bench/README.md` lists them all.
"""

__all__: list[str] = []
