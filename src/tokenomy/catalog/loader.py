"""Load the catalog: the shipped YAML files, then user files merged on top by id.

A user file may hold any of the maps `accelerators:`, `models:`, `sites:`. An entry whose id
(or alias) already exists is deep-merged into it (so a file can add just one price); a new id
is added and must carry every required field. `extends: <id>` starts a new entry from a copy
of an existing one. Keys starting with `_` (YAML anchor holders) are ignored.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tokenomy.errors import ConfigError, UnknownNameError

from .types import Accelerator, ModelArch, Site, derive_price_class

DATA_DIR = Path(__file__).resolve().parent
DEFAULT_FILES = (DATA_DIR / "accelerators.yaml", DATA_DIR / "models.yaml", DATA_DIR / "sites.yaml")
ENV_VAR = "TOKENOMY_CATALOG"

# section name in YAML -> (pydantic type, kind used in error messages)
SECTIONS: dict[str, tuple[type[BaseModel], str]] = {
    "accelerators": (Accelerator, "accelerator"),
    "models": (ModelArch, "model"),
    "sites": (Site, "site"),
}
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def normalize_name(name: str) -> str:
    """Lookup key: case-insensitive, `_` and spaces read as `-`."""
    return "-".join(name.strip().lower().replace("_", "-").split())


@dataclass(frozen=True, eq=False)  # identity hash: usable as a cache key
class Catalog:
    """Accelerators, models and sites by id; lookups accept aliases, any case."""

    accelerators: dict[str, Accelerator]
    models: dict[str, ModelArch]
    sites: dict[str, Site]
    aliases: dict[str, dict[str, str]] = field(repr=False)  # section -> normalized name -> id
    files: tuple[Path, ...] = ()  # every file merged, in order

    def accelerator(self, name: str) -> Accelerator:
        return self.accelerators[self.resolve("accelerators", name)]

    def model(self, name: str) -> ModelArch:
        return self.models[self.resolve("models", name)]

    def site(self, name: str) -> Site:
        return self.sites[self.resolve("sites", name)]

    def resolve(self, section: str, name: str) -> str:
        """The catalog id for `name` (an id or alias) in `section`, else UnknownNameError."""
        entry_id = self.aliases[section].get(normalize_name(str(name)))
        if entry_id is None:
            raise UnknownNameError(SECTIONS[section][1], str(name), getattr(self, section).keys(),
                                   list_command=f"tokenomy catalog list {section}")
        return entry_id

    def names(self, section: str) -> list[str]:
        """Every id and alias accepted in `section` (normalized)."""
        return sorted(self.aliases[section])


# ---------------------------------------------------------------- file reading and merging


def read_catalog_file(path: Path) -> dict[str, Any]:
    """Parse one catalog YAML file into {section: {id: raw dict}}; ConfigError on bad shape."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read catalog file ({exc.strerror or exc})") from exc
    try:
        data = yaml.load(text, Loader=_LOADER)  # noqa: S506 - safe loader
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with accelerators/models/sites, got {type(data).__name__}")
    out: dict[str, Any] = {}
    for key, entries in data.items():
        if str(key).startswith("_"):
            continue
        if key not in SECTIONS:
            raise ConfigError(f"{path}: unknown section '{key}' (expected one of: {', '.join(SECTIONS)})")
        if entries is None:
            continue
        if not isinstance(entries, dict):
            raise ConfigError(f"{path}: {key}: expected a mapping of id -> fields")
        for entry_id, fields in entries.items():
            if not isinstance(fields, dict):
                raise ConfigError(f"{path}: {key}.{entry_id}: expected a mapping of fields")
        out[key] = {str(k): _plain(v) for k, v in entries.items()}
    return out


def _plain(value: Any) -> Any:
    """YAML dates become ISO strings (catalog dates are strings); containers are copied."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `override` into a copy of `base`.

    Dicts merge recursively; `aliases` lists are unioned; `rental_prices` merge by
    (provider, kind, price class): a price for an existing provider, kind and class replaces it,
    others are added.
    Any other value (lists included) is replaced.
    """
    out = copy.deepcopy(base)
    for key, value in override.items():
        old = out.get(key)
        if key == "aliases" and isinstance(old, list) and isinstance(value, list):
            out[key] = old + [a for a in value if a not in old]
        elif key == "rental_prices" and isinstance(old, list) and isinstance(value, list):
            out[key] = _merge_prices(old, value)
        elif isinstance(old, dict) and isinstance(value, dict):
            out[key] = deep_merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _merge_prices(old: list[Any], new: list[Any]) -> list[Any]:
    def key(p: Any) -> tuple[str, str, str]:
        if not isinstance(p, dict):
            return ("", "", "")
        provider, kind = str(p.get("provider")), str(p.get("kind", "on-demand"))
        return (provider, kind, str(p.get("price_class") or derive_price_class(provider, kind)))

    merged = {key(p): p for p in old}
    for p in new:
        merged[key(p)] = copy.deepcopy(p)
    return list(merged.values())


# ---------------------------------------------------------------- building the catalog


def build_catalog(files: Iterable[Path]) -> Catalog:
    """Merge `files` in order (later wins) and validate every entry."""
    files = tuple(Path(f) for f in files)
    raw: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in SECTIONS}
    origin: dict[tuple[str, str], Path] = {}  # (section, id) -> last file that touched it
    for path in files:
        for section, entries in read_catalog_file(path).items():
            by_name = _name_index(raw[section])
            for name, fields in entries.items():
                target = by_name.get(normalize_name(name))
                if target is not None:  # existing id or alias: merge
                    if "extends" in fields:
                        raise ConfigError(f"{path}: {section}.{name}.extends: '{name}' already exists; extends is for new ids")
                    raw[section][target] = deep_merge(raw[section][target], fields)
                else:
                    fields = dict(fields)
                    base_name = fields.pop("extends", None)
                    if base_name is not None:
                        base_id = by_name.get(normalize_name(str(base_name)))
                        if base_id is None:
                            known = raw[section].keys()
                            raise ConfigError(
                                f"{path}: {section}.{name}.extends: "
                                + str(UnknownNameError(SECTIONS[section][1], str(base_name), known))
                            )
                        base = {k: v for k, v in raw[section][base_id].items() if k != "aliases"}
                        fields = deep_merge(base, fields)
                    target = name
                    raw[section][target] = fields
                    by_name[normalize_name(name)] = target
                for alias in fields.get("aliases") or ():
                    by_name[normalize_name(str(alias))] = target
                origin[(section, target)] = path

    built: dict[str, dict[str, Any]] = {}
    aliases: dict[str, dict[str, str]] = {}
    for section, (cls, _kind) in SECTIONS.items():
        built[section] = {}
        aliases[section] = {}
        for entry_id, fields in raw[section].items():
            fields = dict(fields)
            entry_aliases = fields.pop("aliases", None) or []
            if not isinstance(entry_aliases, list):
                raise ConfigError(f"{origin[(section, entry_id)]}: {section}.{entry_id}.aliases: expected a list of names")
            fields["id"] = entry_id
            try:
                built[section][entry_id] = cls.model_validate(fields)
            except ValidationError as exc:
                raise ConfigError(_describe(origin[(section, entry_id)], section, entry_id, exc)) from None
            aliases[section][normalize_name(entry_id)] = entry_id
            for alias in entry_aliases:
                aliases[section].setdefault(normalize_name(str(alias)), entry_id)
    return Catalog(built["accelerators"], built["models"], built["sites"], aliases, files)


def _name_index(entries: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    index: dict[str, str] = {}
    for entry_id, fields in entries.items():
        index[normalize_name(entry_id)] = entry_id
        for alias in fields.get("aliases") or ():
            index.setdefault(normalize_name(str(alias)), entry_id)
    return index


def _describe(path: Path, section: str, entry_id: str, exc: ValidationError) -> str:
    """One line naming the file and the field path of the first problems."""
    problems = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in (section, entry_id, *err["loc"]))
        msg = "missing required field" if err["type"] == "missing" else err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        problems.append(f"{loc}: {msg}")
    more = exc.error_count() - len(problems)
    return f"{path}: " + "; ".join(problems) + (f" (+{more} more)" if more > 0 else "")


# ---------------------------------------------------------------- public entry point


def env_files() -> tuple[Path, ...]:
    value = os.environ.get(ENV_VAR, "")
    return tuple(Path(p).expanduser() for p in value.split(os.pathsep) if p.strip())


def load_catalog(extra: Iterable[Path | str] | None = None) -> Catalog:
    """The shipped catalog merged with $TOKENOMY_CATALOG files, then `extra` files (later wins).

    Cached per set of files (and their modification times), so repeated calls are free.
    """
    files = (*DEFAULT_FILES, *env_files(), *(Path(p).expanduser() for p in extra or ()))
    return _load_cached(tuple((str(f), _mtime(f)) for f in files))


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1  # missing: build_catalog reports it


@lru_cache(maxsize=16)
def _load_cached(key: tuple[tuple[str, int], ...]) -> Catalog:
    return build_catalog(Path(p) for p, _ in key)
