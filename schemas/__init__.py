"""Package data: the raw-data schema validate checks against (ag_news_raw.pbtxt), shipped inside the package
and read with importlib.resources (contract.config_checks.packaged_file)."""
