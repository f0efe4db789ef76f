"""``streamrnn evaluate`` end to end on one NAB-dev category, checked by the reference scorer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

NAB_DEV = Path(__file__).resolve().parents[3] / "shared" / "data" / "nab-dev"
REFERENCE = NAB_DEV.parents[1] / "tools" / "nabscore.py"
CATEGORY = "realAdExchange"
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")

pytestmark = pytest.mark.skipif(
    not (NAB_DEV / "data" / CATEGORY).is_dir() or not REFERENCE.is_file(),
    reason="../shared/data/nab-dev or ../shared/tools/nabscore.py is not beside the checkout",
)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMRNN_")}
    env["STREAMRNN_MODEL__TORCH_THREADS"] = "1"
    return env


def test_evaluate_writes_nab_results_report_and_scores_that_the_reference_agrees_with(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    shutil.copytree(NAB_DEV / "data" / CATEGORY, data / CATEGORY)
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "streamrnn", "evaluate", "--data", str(data),
         "--labels", str(NAB_DEV / "labels" / "combined_windows.json"), "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env=_env(), check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    # (a) one CSV per input file, one row per input row, NAB columns.
    for source in sorted((data / CATEGORY).glob("*.csv")):
        written = pd.read_csv(out / CATEGORY / source.name)
        original = pd.read_csv(source)
        assert list(written.columns) == ["timestamp", "value", "anomaly_score"]
        assert written["timestamp"].tolist() == original["timestamp"].tolist()
        assert written["anomaly_score"].between(0, 1).all()
    # (c) the report.
    index = out / "report" / "index.html"
    assert index.is_file() and "standard" in index.read_text()
    assert len(list((out / "report" / "plots").glob("*.png"))) == 6

    # (b) the score table agrees with the independent reference scorer within 0.01.
    ours = _our_scores(out / "scores.txt")
    reference_json = tmp_path / "reference.json"
    subprocess.run(
        [sys.executable, str(REFERENCE), "--nab", str(NAB_DEV), "--subset", CATEGORY,
         "--json", str(reference_json), str(out)],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    reference = _reference_scores(json.loads(reference_json.read_text()))
    assert set(ours) == set(PROFILES)
    for profile, score in ours.items():
        assert abs(score - reference[profile]) <= 0.01, (profile, score, reference[profile])
    assert "points replayed" in done.stdout


def _our_scores(path: Path) -> dict[str, float]:
    """Profile -> score from the first (corpus) table of scores.txt."""
    scores: dict[str, float] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in PROFILES and parts[0] not in scores:
            scores[parts[0]] = float(parts[1])
    return scores


def _reference_scores(doc: dict[str, dict[str, dict[str, dict[str, float]]]]) -> dict[str, float]:
    """Profile -> normalised score from the reference's --json output."""
    (by_category,) = doc.values()
    return {profile: by_category[CATEGORY][profile]["score"] for profile in PROFILES}
