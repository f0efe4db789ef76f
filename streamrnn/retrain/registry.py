"""The model registry: every model an instance served, on disk, with its metadata.

Layout, one directory per model group::

    {directory}/{group}/{version}.pt     the artifact (see streamrnn.forecast.artifact)
    {directory}/{group}/{version}.json   what it is: created, trigger, parent, data window,
                                         gate metrics (read without loading torch)
    {directory}/{group}/CURRENT          the version this instance serves

Files are written through a temporary file and a rename, so a crash never leaves a partial
artifact or pointer. The last ``keep`` versions of a group (by creation) are kept, and the
current one always. ``streamrnn models list`` and ``streamrnn models rollback`` read it.

Knows nothing of Kafka or torch (artifacts are bytes here).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streamrnn.forecast.artifact import write_atomic

__all__ = ["ModelRegistry", "RegistryEntry", "RegistryError"]

_SAFE = re.compile(r"^[A-Za-z0-9_.:+-]+$")


class RegistryError(LookupError):
    """A version or group the registry does not hold; the message says which."""


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    """One stored model version and its metadata."""

    group: str
    version: str
    created: str
    info: dict[str, Any]
    path: Path
    current: bool

    @property
    def parent(self) -> str | None:
        """The version it was trained from (None: not a retrain)."""
        parent = self.info.get("parent_version")
        return str(parent) if parent is not None else None


class ModelRegistry:
    """See the module docstring."""

    def __init__(self, directory: Path, keep: int = 5) -> None:
        self.directory = directory
        self.keep = keep

    def add(self, group: str, version: str, data: bytes, info: dict[str, Any]) -> Path:
        """Store an artifact and its metadata (idempotent for a version already stored)."""
        folder = self._folder(group)
        path = folder / f"{_checked(version)}.pt"
        meta = folder / f"{version}.json"
        if not path.exists():
            write_atomic(path, data)
        if not meta.exists():  # also repairs an add() cut short between the two writes
            info = {"created": datetime.now(UTC).isoformat(timespec="seconds"), **info}
            write_atomic(meta, json.dumps(info, indent=1).encode())
        return path

    def set_current(self, group: str, version: str) -> None:
        """Record ``version`` (stored) as what this instance serves, then prune."""
        folder = self._folder(group)
        if not (folder / f"{_checked(version)}.pt").exists():
            raise RegistryError(f"model group {group!r} has no version {version!r}")
        write_atomic(folder / "CURRENT", version.encode())
        self.prune(group)

    def current(self, group: str) -> str | None:
        """The version this instance last served for ``group`` (None: none recorded)."""
        pointer = self._folder(group) / "CURRENT"
        return pointer.read_text().strip() if pointer.exists() else None

    def groups(self) -> list[str]:
        """The model groups with stored versions."""
        if not self.directory.is_dir():
            return []
        return sorted(p.name for p in self.directory.iterdir() if p.is_dir())

    def entries(self, group: str | None = None) -> list[RegistryEntry]:
        """Stored versions (of one group, or all), oldest first."""
        out = []
        for name in [group] if group is not None else self.groups():
            folder = self._folder(name)
            current = self.current(name)
            for meta in folder.glob("*.json"):
                version = meta.stem
                path = folder / f"{version}.pt"
                if not path.exists():
                    continue
                info = json.loads(meta.read_text())
                out.append(
                    RegistryEntry(
                        name, version, str(info.get("created", "")), info, path, version == current
                    )
                )
        return sorted(out, key=lambda e: (e.group, e.created, e.version))

    def find(self, version: str, group: str | None = None) -> RegistryEntry:
        """The stored ``version`` (in ``group``, or in whichever group has it)."""
        matches = [e for e in self.entries(group) if e.version == version]
        if not matches:
            where = f"model group {group!r}" if group else f"the registry at {self.directory}"
            raise RegistryError(f"{where} has no version {version!r}; see `streamrnn models list`")
        if len(matches) > 1:
            groups = sorted(e.group for e in matches)
            raise RegistryError(f"version {version!r} is in several groups {groups}; pass --group")
        return matches[0]

    def prune(self, group: str) -> list[str]:
        """Delete all but the newest ``keep`` versions (never the current); returns them."""
        entries = self.entries(group)
        doomed = [e for e in entries[: max(0, len(entries) - self.keep)] if not e.current]
        for entry in doomed:
            entry.path.unlink(missing_ok=True)
            entry.path.with_suffix(".json").unlink(missing_ok=True)
        return [e.version for e in doomed]

    def _folder(self, group: str) -> Path:
        return self.directory / _checked(group)


def _checked(name: str) -> str:
    """``name`` if it is safe as a file name (no separators, no dots-only), else an error."""
    if not _SAFE.fullmatch(name) or set(name) == {"."}:
        raise RegistryError(f"{name!r} is not a valid model group or version name")
    return name
