"""The hardware catalog: ``hardware.toml`` beside this file, every figure with its source.

Sections: ``gpu``, ``cpu``, ``storage``, ``network``, ``server`` (the seed's two server classes),
``this_machine`` (filled from a profile's measured ``machine`` block) and ``assumptions``. The planner reads
the catalog through ``load_catalog``; a user may pass their own TOML of the same shape.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

CATALOG_PATH = Path(__file__).with_name("hardware.toml")
SECTIONS = ("gpu", "cpu", "storage", "network", "server")


def load_catalog(path: str | Path | None = None) -> dict[str, Any]:
    """The catalog as nested dicts; ValueError when a figure lacks its source or a reference dangles."""
    path = Path(path) if path is not None else CATALOG_PATH
    catalog = tomllib.loads(path.read_text())
    problems = missing_sources(catalog)
    for key, server in catalog.get("server", {}).items():
        for ref, section in (("gpu", "gpu"), ("drive", "storage"), ("network", "network")):
            if ref in server and server[ref] not in catalog.get(section, {}):
                problems.append(f"server.{key}.{ref} = {server[ref]!r} is not in [{section}]")
    if problems:
        raise ValueError(f"hardware catalog {path}: " + "; ".join(problems))
    return catalog


def missing_sources(catalog: dict[str, Any]) -> list[str]:
    """Names of numeric figures with no line in their entry's ``sources`` table."""
    entries = [(f"{s}.{k}", v) for s in SECTIONS for k, v in catalog.get(s, {}).items()]
    entries.append(("assumptions", catalog.get("assumptions", {})))
    out = []
    for name, entry in entries:
        sources = entry.get("sources", {})
        for field, value in entry.items():
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            if numeric and field not in sources:
                out.append(f"{name}.{field} has no source")
    return out


def figure(entry: dict[str, Any], field: str) -> dict[str, Any]:
    """``{"value", "source"}`` for one catalog figure, as the planner's derivations quote it."""
    return {"value": entry[field], "source": entry.get("sources", {}).get(field, "measured")}


def select(catalog: dict[str, Any], section: str, keys: list[str] | None) -> dict[str, dict[str, Any]]:
    """The entries of ``section`` named in ``keys`` (all when None); KeyError lists the valid names."""
    entries = catalog[section]
    if keys is None:
        return dict(entries)
    unknown = [k for k in keys if k not in entries]
    if unknown:
        raise KeyError(f"unknown {section} {unknown}; the catalog has {sorted(entries)}")
    return {k: entries[k] for k in keys}
