"""The leaf every lmforge package may import: the strict-config base, small shared helpers.

It imports nothing of ours (``import-linter`` checks it), so the gateway, the trainer, the
host-side Triton tools and the benchmarks can all depend on it without depending on each other.
"""
