"""What every configuration section is checked with: ConfigError (a value is unknown, of the wrong type or out
of range: one line, exit 2 before any work), `require`, and the path of a data file shipped in the package."""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def packaged_file(package: str, name: str) -> Path:
    """A data file shipped inside the package (schemas/, configs/), found through the import system: the same
    file from a checkout and from an installed wheel, whatever the working directory."""
    return Path(str(resources.files(package) / name))


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type, or out of range."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
