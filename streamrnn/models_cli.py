"""``streamrnn models list`` and ``streamrnn models rollback VERSION``.

Both read the model registry of this instance (``retrain.registry_dir``, else
``state.directory``/models). A rollback publishes the stored artifact to the model topic,
so every running instance of the group switches to it between two batches (and any
instance started later serves it), then marks it current in the registry.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streamrnn.config import Settings
from streamrnn.kafka.clients import client_config, transactional_id
from streamrnn.kafka.model_topic import ModelTopic
from streamrnn.retrain.registry import ModelRegistry, RegistryError

__all__ = ["registry_directory", "run_models"]


def registry_directory(settings: Settings) -> Path | None:
    """Where the daemon keeps its registry when it has a persistent one (None: temporary)."""
    if settings.retrain.registry_dir is not None:
        return settings.retrain.registry_dir
    if settings.state.directory is not None:
        return settings.state.directory / "models"
    return None


def run_models(settings: Settings, args: argparse.Namespace) -> int:
    """Run ``streamrnn models ACTION``; returns the exit code."""
    directory = registry_directory(settings)
    if directory is None:
        print(
            "streamrnn models: no registry: set retrain.registry_dir or state.directory (the"
            " daemon keeps models in a temporary directory otherwise)",
            file=sys.stderr,
        )
        return 2
    registry = ModelRegistry(directory, settings.retrain.keep_versions)
    if args.action == "list":
        return _list(registry, args.group)
    return _rollback(settings, registry, args.version, args.group)


def _list(registry: ModelRegistry, group: str | None) -> int:
    entries = registry.entries(group)
    if not entries:
        print(f"no models in {registry.directory}")
        return 0
    header = ("", "GROUP", "VERSION", "CREATED", "REASON", "PARENT", "NLL (PARENT)", "DATA")
    rows = [header]
    for e in entries:
        gate = e.info.get("gate") or {}
        data = e.info.get("data") or {}
        nll = (
            f"{gate['candidate_nll']:.4f} ({gate['parent_nll']:.4f})"
            if "candidate_nll" in gate
            else "-"
        )
        window = f"{data['series']} series, {data['points']} points" if data else "-"
        rows.append(
            (
                "*" if e.current else "",
                e.group,
                e.version,
                e.created,
                str(e.info.get("reason", "-")),
                e.parent or "-",
                nll,
                window,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    print("* = served by this instance")
    return 0


def _rollback(settings: Settings, registry: ModelRegistry, version: str, group: str | None) -> int:
    try:
        entry = registry.find(version, group)
    except RegistryError as exc:
        print(f"streamrnn models rollback: {exc}", file=sys.stderr)
        return 2
    topic = ModelTopic(
        client_config(settings, "admin"),
        settings.topics.models_of(settings.kafka.group_id),
        publisher=f"rollback by {transactional_id(settings)}",
    )
    try:
        topic.publish(entry.group, entry.version, entry.path.read_bytes(), "rollback")
    except Exception as exc:
        print(f"streamrnn models rollback: not published: {exc}", file=sys.stderr)
        return 1
    finally:
        topic.close()
    registry.set_current(entry.group, entry.version)
    print(
        f"model group {entry.group} rolled back to {entry.version}: published to"
        f" {topic.topic}; running instances switch to it within seconds"
    )
    return 0
