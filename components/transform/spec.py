"""The transform's light side: nothing to declare. It reads no outside data and names no input of its own (its
inputs, examples and schema, are named in contract/names.py), so the DAG takes only executor.run from it; the
module is here so every step has the same shape and pyproject.toml's import contracts cover it.
"""
