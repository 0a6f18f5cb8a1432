"""Which versions `agnews-pipeline serve` keeps loaded, after TF Serving's model_version_policy, and the
version labels (`/v1/models/<name>/labels/<label>`) read from a small YAML or JSON file {label: version}.
Standard library and PyYAML only: the command line checks both before loading TensorFlow."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

POLICY_HELP = "latest (the highest version), latest:N (the N highest), specific:V[,V...] or all"


class PolicyError(ValueError):
    """A policy or labels file that cannot be used; the message says what is wrong."""


@dataclass(frozen=True)
class VersionPolicy:
    """latest:N keeps the N highest loadable versions; specific keeps the listed ones; all keeps every one."""
    # None: not a latest policy
    latest: int | None = 1
    # the versions of a specific policy, highest first
    specific: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "VersionPolicy":
        kind, _, value = text.strip().partition(":")
        try:
            if kind == "latest":
                count = int(value) if value else 1
                if count > 0:
                    return cls(latest=count)
            elif kind == "specific" and value:
                versions = tuple(sorted({int(v) for v in value.split(",")}, reverse=True))
                if all(v >= 0 for v in versions):
                    return cls(latest=None, specific=versions)
            elif kind == "all" and not value:
                return cls(latest=None)
        except ValueError:
            pass
        raise PolicyError(f"--model-version-policy must be {POLICY_HELP}, got {text!r}")

    def candidates(self, on_disk: list[int]) -> list[int]:
        """The versions on disk this policy may keep, highest first (the loader stops after `limit`)."""
        if self.specific:
            return [v for v in sorted(on_disk, reverse=True) if v in self.specific]
        return sorted(on_disk, reverse=True)

    @property
    def limit(self) -> int | None:
        """How many loadable versions to keep at most (None: every candidate)."""
        return self.latest

    def __str__(self) -> str:
        if self.specific:
            return "specific:" + ",".join(map(str, sorted(self.specific)))
        if self.latest is None:
            return "all"
        return "latest" if self.latest == 1 else f"latest:{self.latest}"


# the default: TF Serving's too
LATEST = VersionPolicy()


def read_labels(path: Path) -> dict[str, int]:
    """The labels file: a YAML (or JSON) mapping of label to version, e.g. `stable: 3`. Raises PolicyError."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise PolicyError(f"cannot read the version labels file {path}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise PolicyError(f"the version labels file {path} is not YAML or JSON: "
                          f"{str(error).splitlines()[0]}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise PolicyError(f"the version labels file {path} must map labels to versions, e.g. 'stable: 3'")
    labels = {}
    for label, version in data.items():
        if not isinstance(label, str) or not label or "/" in label or ":" in label:
            raise PolicyError(
                f"the version labels file {path}: label {label!r} must be a word (no '/' or ':')"
            )
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise PolicyError(f"the version labels file {path}: label {label!r} must name a version number, "
                              f"got {version!r}")
        labels[label] = version
    return labels


def file_stamp(path: Path) -> tuple[int, int] | None:
    """Changes when the file is rewritten (size, mtime); None when it is missing."""
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns
