"""Where the registry lives and who is acting: ``rlops.yaml``, then the environment.

Resolution, later wins:

1. defaults: ``sqlite:///data/registry.sqlite``, store ``data/artifacts``,
   allowed roots: the current directory (all relative to the project
   directory, the current directory);
2. the ``registry:`` section of ``./rlops.yaml`` (or the file named by
   ``$RLOPS_CONFIG``)::

       registry:
         url: postgresql+psycopg://rlops@db.internal/rlops   # any SQLAlchemy URL
         store: /srv/rlops/artifacts
         allowed_roots: [runs, /srv/rlops/incoming]
         user: alice                                         # CLI identity

3. ``$RLOPS_REGISTRY_URL``, ``$RLOPS_REGISTRY_STORE``,
   ``$RLOPS_REGISTRY_ALLOWED_ROOTS`` (``os.pathsep``-separated) and
   ``$RLOPS_USER``.

There is no default identity: a mutating command without one is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rlops.core.errors import ConfigError

_KEYS = ("url", "store", "allowed_roots", "user")


@dataclass(frozen=True, kw_only=True)
class RegistrySettings:
    """Where the registry is and who acts on it.

    Attributes:
        url: SQLAlchemy URL of the database (SQLite file by default).
        store: root of the content-addressed artifact store.
        allowed_roots: directories artifacts may be registered from.
        user: the acting identity for mutating calls (None: refused).
    """

    url: str = "sqlite:///data/registry.sqlite"
    store: Path = Path("data/artifacts")
    allowed_roots: tuple[Path, ...] = field(default_factory=lambda: (Path("."),))
    user: str | None = None

    def with_user(self, user: str | None) -> RegistrySettings:
        """A copy acting as ``user`` (unchanged when None)."""
        if user is None:
            return self
        return RegistrySettings(
            url=self.url, store=self.store, allowed_roots=self.allowed_roots, user=user
        )


def load_settings(config: str | os.PathLike[str] | None = None) -> RegistrySettings:
    """Settings from defaults, the ``registry:`` section of the config file, and env vars.

    Raises:
        ConfigError: an unreadable config file, an unknown key, or a wrong type.
    """
    values: dict[str, Any] = {}
    path = Path(config or os.environ.get("RLOPS_CONFIG") or "rlops.yaml")
    if config is not None or path.is_file():
        if not path.is_file():
            raise ConfigError(f"config: {path} does not exist")
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"config: cannot read {path}: {exc}") from None
        section = doc.get("registry", {}) if isinstance(doc, dict) else None
        if not isinstance(section, dict):
            raise ConfigError(f"config: {path}: registry must be a mapping")
        unknown = sorted(set(section) - set(_KEYS))
        if unknown:
            raise ConfigError(
                f"config: {path}: unknown registry key {unknown[0]!r}; allowed: {', '.join(_KEYS)}"
            )
        values.update(section)
    env = {
        "url": os.environ.get("RLOPS_REGISTRY_URL"),
        "store": os.environ.get("RLOPS_REGISTRY_STORE"),
        "allowed_roots": os.environ.get("RLOPS_REGISTRY_ALLOWED_ROOTS"),
        "user": os.environ.get("RLOPS_USER"),
    }
    for key, value in env.items():
        if value:
            values[key] = value.split(os.pathsep) if key == "allowed_roots" else value
    for key in ("url", "store", "user"):
        if key in values and not (isinstance(values[key], str) and values[key]):
            raise ConfigError(f"config: registry.{key} must be a non-empty string")
    roots = values.get("allowed_roots", ["."])
    if isinstance(roots, str):
        roots = [roots]
    if not isinstance(roots, list) or not all(isinstance(r, str) and r for r in roots):
        raise ConfigError("config: registry.allowed_roots must be a list of directories")
    defaults = RegistrySettings()
    return RegistrySettings(
        url=values.get("url", defaults.url),
        store=Path(values.get("store", defaults.store)),
        allowed_roots=tuple(Path(r) for r in roots),
        user=values.get("user"),
    )
