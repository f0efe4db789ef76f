"""The model registry: storing artifacts (opaque bytes) with their metadata, the CURRENT
pointer, listing oldest first with the current flag and parent, idempotent adds, pruning to
the newest ``keep`` (never the current), finding a version across groups, refusing unsafe
names, and leaving no temporary files behind."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from streamrnn.retrain.registry import ModelRegistry, RegistryError


def _created(second: int) -> str:
    return f"2026-01-01T00:00:{second:02d}"


def _add(registry: ModelRegistry, group: str, version: str, second: int, **info: object) -> Path:
    return registry.add(
        group, version, f"bytes of {version}".encode(), {"created": _created(second), **info}
    )


def _versions(registry: ModelRegistry, group: str | None = None) -> list[str]:
    return [e.version for e in registry.entries(group)]


def test_add_set_current_and_list(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "models")
    assert registry.groups() == [] and registry.entries() == []
    data = bytes(range(256)) * 3  # opaque: not text, not an artifact
    path = registry.add("global", "v1", data, {"created": _created(1), "trigger": "initial"})
    assert path == tmp_path / "models" / "global" / "v1.pt"
    assert path.read_bytes() == data
    _add(registry, "global", "v2", 2, parent_version="v1", trigger="drift")
    _add(registry, "other", "w1", 3)
    assert registry.current("global") is None

    registry.set_current("global", "v2")
    assert registry.current("global") == "v2"
    assert registry.current("other") is None
    assert registry.groups() == ["global", "other"]

    entries = registry.entries("global")
    assert [e.version for e in entries] == ["v1", "v2"]
    assert [e.current for e in entries] == [False, True]
    assert [e.parent for e in entries] == [None, "v1"]
    assert [e.created for e in entries] == [_created(1), _created(2)]
    assert entries[1].info["trigger"] == "drift"
    assert entries[0].path.read_bytes() == data
    assert [(e.group, e.version) for e in registry.entries()] == [
        ("global", "v1"),
        ("global", "v2"),
        ("other", "w1"),
    ]
    # The metadata is plain JSON next to the artifact (read without torch).
    meta = json.loads((tmp_path / "models" / "global" / "v2.json").read_text())
    assert meta["parent_version"] == "v1"


def test_entries_are_ordered_by_creation_not_by_name(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    _add(registry, "g", "b", 3)
    _add(registry, "g", "c", 1)
    _add(registry, "g", "a", 2)
    assert _versions(registry, "g") == ["c", "a", "b"]


def test_created_is_added_only_when_the_info_lacks_it(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    registry.add("g", "auto", b"x", {"trigger": "schedule"})
    _add(registry, "g", "given", 7)
    by_version = {e.version: e for e in registry.entries("g")}
    assert by_version["given"].created == _created(7)
    auto = by_version["auto"]
    assert auto.info["trigger"] == "schedule"
    stamp = datetime.fromisoformat(auto.created)
    assert stamp.tzinfo is not None  # an aware UTC time, to the second
    assert stamp.microsecond == 0
    assert abs((datetime.now(stamp.tzinfo) - stamp).total_seconds()) < 60


def test_adding_a_stored_version_again_changes_nothing(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    first = registry.add("g", "v1", b"first", {"created": _created(1), "k": 1})
    again = registry.add("g", "v1", b"second", {"created": _created(9), "k": 2})
    assert again == first
    assert first.read_bytes() == b"first"
    (entry,) = registry.entries("g")
    assert (entry.created, entry.info["k"]) == (_created(1), 1)


def test_set_current_prunes_to_the_newest_but_never_the_current(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path, keep=2)
    # Names in the opposite order of creation: pruning must go by created.
    for second, version in enumerate(["e", "d", "c", "b", "a"], start=1):
        _add(registry, "g", version, second)
    _add(registry, "h", "other", 0)  # another group is never touched
    registry.set_current("g", "e")  # the oldest
    assert _versions(registry, "g") == ["e", "b", "a"]
    assert registry.current("g") == "e"
    folder = tmp_path / "g"
    assert sorted(p.name for p in folder.iterdir()) == [
        "CURRENT",
        "a.json",
        "a.pt",
        "b.json",
        "b.pt",
        "e.json",
        "e.pt",
    ]
    assert _versions(registry, "h") == ["other"]

    # Serving the newest: the old current is an ordinary old version now.
    registry.set_current("g", "a")
    assert _versions(registry, "g") == ["b", "a"]


def test_prune_returns_what_it_deleted(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path, keep=3)
    for second in range(1, 6):
        _add(registry, "g", f"v{second}", second)
    assert registry.prune("g") == ["v1", "v2"]
    assert _versions(registry, "g") == ["v3", "v4", "v5"]
    assert registry.prune("g") == []
    registry.keep = 0
    registry.set_current("g", "v4")
    assert _versions(registry, "g") == ["v4"]


def test_find_a_version_in_whichever_group_has_it(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    _add(registry, "g1", "only-here", 1)
    _add(registry, "g1", "shared", 2, parent_version="only-here")
    _add(registry, "g2", "shared", 3)
    found = registry.find("only-here")
    assert (found.group, found.version) == ("g1", "only-here")
    found = registry.find("shared", group="g2")
    assert (found.group, found.created) == ("g2", _created(3))
    assert registry.find("shared", group="g1").parent == "only-here"

    with pytest.raises(RegistryError, match="several groups"):
        registry.find("shared")
    with pytest.raises(RegistryError, match="no version 'missing'"):
        registry.find("missing")
    with pytest.raises(RegistryError, match="'g2' has no version 'only-here'"):
        registry.find("only-here", group="g2")
    with pytest.raises(RegistryError):
        registry.find("shared", group="no-such-group")


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".", "...", "", "a b", "/abs", "a\\b"])
def test_unsafe_names_are_refused(tmp_path: Path, name: str) -> None:
    root = tmp_path / "models"
    registry = ModelRegistry(root)
    _add(registry, "g", "v1", 1)
    with pytest.raises(RegistryError, match="not a valid"):
        registry.add(name, "v2", b"x", {})
    with pytest.raises(RegistryError, match="not a valid"):
        registry.add("g", name, b"x", {})
    with pytest.raises(RegistryError, match="not a valid"):
        registry.set_current("g", name)
    with pytest.raises(RegistryError, match="not a valid"):
        registry.set_current(name, "v1")
    with pytest.raises(RegistryError, match="not a valid"):
        registry.current(name)
    with pytest.raises(RegistryError, match="not a valid"):
        registry.entries(name)
    # Nothing was written anywhere (in particular not beside or above the registry).
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "models",
        "models/g",
        "models/g/v1.json",
        "models/g/v1.pt",
    ]


def test_names_with_the_allowed_punctuation_are_accepted(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    version = "2026-01-01T00:00:00+00:00_v1.2"
    _add(registry, "group_A-1.x", version, 1)
    registry.set_current("group_A-1.x", version)
    assert registry.current("group_A-1.x") == version
    assert registry.find(version).group == "group_A-1.x"


def test_set_current_of_an_unknown_version_raises(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    _add(registry, "g", "v1", 1)
    registry.set_current("g", "v1")
    with pytest.raises(RegistryError, match="no version 'v9'"):
        registry.set_current("g", "v9")
    with pytest.raises(RegistryError, match="no version 'v1'"):
        registry.set_current("other", "v1")
    assert registry.current("g") == "v1"
    assert registry.current("other") is None


def test_no_temporary_files_are_left_behind(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path, keep=1)
    for second in range(1, 4):
        _add(registry, "g", f"v{second}", second)
        registry.set_current("g", f"v{second}")
    _add(registry, "g", "v3", 9)  # idempotent re-add
    assert list(tmp_path.rglob("*.tmp")) == []
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["CURRENT", "v3.json", "v3.pt"]


def test_a_name_with_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    with pytest.raises(RegistryError):
        registry.add("g", "v1\n", b"x", {"created": _created(1)})


def test_adding_again_repairs_an_artifact_left_without_metadata(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "v1.pt").write_bytes(b"artifact")  # the .json rename never happened
    registry.add("g", "v1", b"artifact", {"created": _created(1)})
    assert _versions(registry, "g") == ["v1"]
