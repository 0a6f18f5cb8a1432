"""The second toy step (a module per component, as the runner expects)."""
from toy_components import run_double as run  # noqa: F401
