"""What the tests share: rows, waits, the worker harness, the daemon as a process, PostgreSQL.

Test modules import from here and never from one another; fixtures live in tests/conftest.py.
"""
