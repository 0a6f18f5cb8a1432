"""What tests share: paths, the sample data, injected hooks, helpers and fixtures. Test modules import from
here, never from each other (tests/ is on sys.path through tests/conftest.py)."""
