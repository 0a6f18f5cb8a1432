"""`python -m apps.cli ...`: the `agnews-pipeline` command (the tests and benchmarks run it this way)."""
from apps.cli.main import entry_point

if __name__ == "__main__":
    entry_point()
