"""deploy/systemd/streamrnn.service: checked by systemd's own tools, offline.

``systemd-analyze verify`` must accept the unit without a single warning (it exits 0 even on
unknown keys or bad values, so its output is checked too), ``systemd-analyze security
--offline`` must rate its exposure low, and the settings the issue asks for are there. The
unit's environment must load as a valid streamrnn configuration.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streamrnn.config import load_settings

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "systemd" / "streamrnn.service"
INSTALLED_EXEC = "/opt/streamrnn/.venv/bin/streamrnn"
ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(
    ANALYZE is None,
    reason="systemd-analyze is not installed (Debian: apt-get install systemd;"
    " deploy/quickstart.sh installs it when it runs as root)",
)


def _local_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with ExecStart pointing at this checkout's streamrnn (verify checks that
    the program exists and is executable)."""
    exe = Path(sys.executable).parent / "streamrnn"
    assert exe.is_file(), f"{exe} missing: install the project into its venv"
    unit = tmp_path / "streamrnn.service"
    unit.write_text((text or UNIT.read_text()).replace(INSTALLED_EXEC, str(exe)))
    return unit


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _service() -> dict[str, list[str]]:
    """[Service] settings, every value of repeated keys."""
    out: dict[str, list[str]] = {}
    section = None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


@needs_systemd
def test_systemd_analyze_verify_accepts_the_unit_without_warnings(tmp_path: Path) -> None:
    done = _verify(_local_copy(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr
    assert done.stdout.strip() == "", done.stdout


@needs_systemd
def test_verify_does_flag_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a typo in a key and a bad value are reported."""
    broken = UNIT.read_text().replace("Type=notify", "Type=notifyy").replace("UMask=", "UMsk=")
    done = _verify(_local_copy(tmp_path, broken))
    assert "notifyy" in done.stderr and "UMsk" in done.stderr


@needs_systemd
def test_security_exposure_is_low(tmp_path: Path) -> None:
    assert ANALYZE is not None
    done = subprocess.run(
        [ANALYZE, "security", "--offline=yes", "--no-pager", str(_local_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    line = next(x for x in done.stdout.splitlines() if "Overall exposure level" in x)
    exposure = float(line.split(":")[1].split()[0])
    print(line)
    assert exposure <= 2.5, done.stdout[-3000:]


def test_the_unit_has_what_a_production_service_needs() -> None:
    s = _service()
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert int(s["WatchdogSec"][0]) >= 60
    assert s["Restart"] == ["on-failure"]
    assert s["DynamicUser"] == ["yes"] and s["StateDirectory"] == ["streamrnn"]
    assert s["ProtectSystem"] == ["strict"] and s["NoNewPrivileges"] == ["yes"]
    assert s["EnvironmentFile"] == ["-/etc/streamrnn/streamrnn.env"]
    assert s["ExecStart"] == [f"{INSTALLED_EXEC} run --config /etc/streamrnn/config.yaml"]
    # The daemon waits up to 20 s for acknowledgements on SIGTERM, then checkpoints.
    assert int(s["TimeoutStopSec"][0]) > 20
    assert s["KillMode"] == ["mixed"]
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(UNIT.read_text())
    assert parser["Install"]["WantedBy"] == "multi-user.target"


def test_the_units_environment_is_a_valid_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for assignment in _service()["Environment"]:
        name, _, value = assignment.partition("=")
        monkeypatch.setenv(name, value)
    settings = load_settings(REPO / "config.yaml")
    # Everything the daemon writes is under StateDirectory= (the only writable place).
    assert settings.state.directory == Path("/var/lib/streamrnn/state")
    assert settings.retrain.registry_dir == Path("/var/lib/streamrnn/models")
    assert settings.logging.format == "json"
