"""Loading the configuration: builds the validated Config (contract/config.py) once, at start-up.

Sources, later ones winning: the dataclass defaults, a YAML file (`--config`), `--set section.key=value`
overrides, and the dedicated command-line flags. An unknown section or key, or a value of the wrong type or
range, raises ConfigError before any work starts; each value is checked against its field's annotation.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from contract.config import Config
from contract.config_checks import ConfigError, packaged_file, require


def default_config_file() -> Path:
    """configs/default.yaml: every configuration key with its default."""
    return packaged_file("configs", "default.yaml")


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Checks `value` against a field annotation, converting only where it is lossless (int -> float, list ->
    tuple)."""
    if isinstance(annotation, str):
        # annotations are strings under `from __future__ import annotations`
        annotation = eval(annotation, vars(typing))
    # a nested section, e.g. ingest.window
    if dataclasses.is_dataclass(annotation):
        require(isinstance(value, dict), f"{where} must be a mapping, got {value!r}")
        return _build_section(annotation, value, where)
    origin = typing.get_origin(annotation)
    if origin is tuple:
        require(isinstance(value, (list, tuple)), f"{where} must be a list, got {value!r}")
        item_type = typing.get_args(annotation)[0]
        return tuple(_coerce(v, item_type, f"{where}[]") for v in value)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            try:
                return _coerce(value, option, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where} has the wrong type: {value!r}")
    if annotation is bool:
        require(isinstance(value, bool), f"{where} must be true or false, got {value!r}")
        return value
    if annotation is int:
        require(
            isinstance(value, int) and not isinstance(value, bool),
            f"{where} must be an integer, got {value!r}",
        )
        return value
    if annotation is float:
        require(
            isinstance(value, (int, float)) and not isinstance(value, bool),
            f"{where} must be a number, got {value!r}",
        )
        return float(value)
    if annotation is str:
        require(isinstance(value, str), f"{where} must be a string, got {value!r}")
        return value
    if annotation is type(None):
        require(value is None, f"{where} must be null")
        return None
    raise ConfigError(f"{where}: unsupported type {annotation!r}")


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def build_config(values: dict[str, dict[str, Any]]) -> Config:
    """Builds a validated Config from {section: {key: value}}; unknown names are errors."""
    require(isinstance(values, dict), "the configuration must be a mapping of sections")
    sections = _section_types()
    built = {}
    for section, entries in values.items():
        require(section in sections, f"unknown configuration section {section!r}; known: {sorted(sections)}")
        entries = entries or {}
        require(isinstance(entries, dict), f"section {section!r} must be a mapping")
        built[section] = _build_section(sections[section], entries, section)
    return _resolve_serving_dir(Config(**built))


def _build_section(cls: type, entries: dict[str, Any], section: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in entries:
        require(key in known, f"unknown key {section}.{key}; known keys of {section}: {sorted(known)}")
    return cls(**{k: _coerce(v, hints[k], f"{section}.{k}") for k, v in entries.items()})


def _resolve_serving_dir(config: Config) -> Config:
    """Writes the serving folder as an absolute path, defaulting to <pipeline root>/serving/agnews, so the
    pusher receives a complete configuration (and its cache key names the real folder)."""
    serving_dir = str(config.serving_dir())
    return dataclasses.replace(config, pusher=dataclasses.replace(config.pusher, serving_dir=serving_dir))


def parse_override(text: str) -> tuple[str, str, Any]:
    """'section.key=value' -> (section, key, YAML-parsed value)."""
    name, sep, raw = text.partition("=")
    section, dot, key = name.strip().partition(".")
    require(bool(sep and dot and section and key), f"--set expects section.key=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {text!r}: value is not valid YAML: {error}") from None
    return section, key, value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                flags: dict[str, Any] | None = None) -> Config:
    """Defaults <- YAML file <- 'section.key=value' overrides <- command-line flags ({"section.key": value}),
    validated once."""
    values: dict[str, dict[str, Any]] = {}
    if path is not None:
        path = Path(path)
        require(path.is_file(), f"configuration file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            reason = str(error).replace("\n", " ")
            raise ConfigError(f"{path} is not a valid UTF-8 YAML file ({reason})") from None
        require(isinstance(loaded, dict), f"{path} must hold a mapping of sections")
        values = {k: dict(v or {}) if isinstance(v, dict) or v is None else v for k, v in loaded.items()}
    for text in overrides:
        section, key, value = parse_override(text)
        _set_value(values, section, key, value)
    for name, value in (flags or {}).items():
        section, _, key = name.partition(".")
        _set_value(values, section, key, value)
    return build_config(values)


def _set_value(values: dict, section: str, key: str, value: Any) -> None:
    """values[section][key] = value; a dotted key (window.num_spans) sets a key of a nested section."""
    *parents, last = [section, *key.split(".")]
    target = values
    for name in parents:
        target.setdefault(name, {})
        require(isinstance(target[name], dict), f"section {name!r} must be a mapping")
        target = target[name]
    target[last] = value
