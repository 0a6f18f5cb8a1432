"""Package data: default.yaml, every configuration key with its default, shipped inside the package and read
with importlib.resources (contract.config_loading.default_config_file)."""
