"""Fault tests: SIGKILL Nova's services and the broker under load, then check.

`scenario.run_faults` is the whole run; `make faults` runs it for 30 cycles
on a stack of its own (`python -m tests.faults`), and
`tests/e2e/test_faults.py` runs a short version on the suite's stack.
"""
