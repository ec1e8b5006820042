"""Nova's benchmarks (`make bench`): each figure against a raw baseline.

See /work/shared/design/BENCHMARKS.md for the method and the goals, and
`bench.run` for how to run it.
"""
