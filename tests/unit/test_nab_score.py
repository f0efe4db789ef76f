"""NAB scoring: the rules one by one on tiny corpora, then agreement with the reference scorer.

The reference (``/work/shared/tools/nabscore.py``) is run as a subprocess on the same result
directories; those tests skip when it is not on this machine.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from streamrnn.evaluation.nab_score import (
    PROFILES,
    CorpusScore,
    Detections,
    Profile,
    Window,
    category_frame,
    format_score_lines,
    load_profiles,
    load_windows,
    probationary_rows,
    read_results_dir,
    score_corpus,
    score_frame,
    score_table,
)

REFERENCE = Path("/work/shared/tools/nabscore.py")
NAB_DEV = Path("/work/shared/data/nab-dev")
TOLERANCE = 0.01  # normalised-score points
# A line of the reference's table: "<detector> <subset> <profile> score=  12.34  raw=...".
PRINTED_SCORE = re.compile(r"^\S+\s+\S+\s+(\S+)\s+score=\s*(\S+)", re.MULTILINE)

STANDARD = PROFILES[0]

Spec = Mapping[str, tuple[int, Sequence[tuple[int, int]]]]
"""Per relative file path: number of rows and windows as (first row, last row)."""

# Windows all after probation (15 % of the rows): a perfect detector can reach 100.
CLEAN: Spec = {
    "catA/a1.csv": (400, [(100, 139), (250, 289)]),
    "catA/a2.csv": (300, [(200, 219)]),
    "catB/b1.csv": (500, [(300, 349)]),
    "catB/b2.csv": (350, []),
}
# NAB's corner cases: a window lost to probation (rows 0-44 of a2 are probation), one
# straddling its end, back-to-back windows, and a repeated timestamp at a window's end.
QUIRKY: Spec = {
    "catA/a1.csv": (400, [(70, 109), (110, 129), (250, 289)]),
    "catA/a2.csv": (300, [(10, 30), (40, 79), (200, 219)]),
    "catB/b1.csv": (500, [(300, 349), (420, 421)]),
    "catB/b2.csv": (350, []),
    "catC/c1.csv": (260, [(60, 100)]),
}
DUPLICATED_ROW = ("catB/b1.csv", 350)  # this row repeats the previous row's timestamp

PROFILES_JSON = {
    name: {"CostMatrix": {"tpWeight": tp, "fnWeight": fn, "fpWeight": fp, "tnWeight": 1.0}}
    for name, tp, fp, fn in [
        ("standard", 1.0, 0.11, 1.0),
        ("reward_low_FP_rate", 1.0, 0.22, 1.0),
        ("reward_low_FN_rate", 1.0, 0.11, 2.0),
    ]
}


# --- building corpora ------------------------------------------------------------------------


def _timestamps(name: str, n_rows: int) -> np.ndarray:
    """Five-minute rows, a different start per file, one repeated timestamp in one file."""
    start = pd.Timestamp("2021-03-01") + pd.Timedelta(days=7 * (sum(map(ord, name)) % 50))
    steps = np.arange(n_rows)
    if name == DUPLICATED_ROW[0]:
        steps[DUPLICATED_ROW[1] :] -= 1
    return (start + pd.to_timedelta(steps * 5, unit="min")).to_numpy(dtype="datetime64[ns]")


def _corpus(spec: Spec) -> tuple[dict[str, np.ndarray], dict[str, list[Window]]]:
    """Row timestamps and windows of every file of ``spec``."""
    stamps = {name: _timestamps(name, n) for name, (n, _) in spec.items()}
    windows = {
        name: [(pd.Timestamp(stamps[name][a]), pd.Timestamp(stamps[name][b])) for a, b in spans]
        for name, (_, spans) in spec.items()
    }
    return stamps, windows


def _detections(stamps: Mapping[str, np.ndarray], scores: Mapping[str, np.ndarray]) -> Detections:
    return {name: (stamps[name], np.asarray(scores[name], dtype=np.float64)) for name in stamps}


def _write_nab(root: Path, spec: Spec) -> dict[str, list[Window]]:
    """A NAB-layout tree: data/<cat>/<file>.csv, labels/combined_windows.json, config/."""
    stamps, windows = _corpus(spec)
    rng = np.random.default_rng(7)
    for name, ts in stamps.items():
        path = root / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"timestamp": _fmt(ts), "value": rng.normal(size=len(ts))}).to_csv(
            path, index=False
        )
    labels = {
        name: [[f"{a:%Y-%m-%d %H:%M:%S.%f}", f"{b:%Y-%m-%d %H:%M:%S.%f}"] for a, b in spans]
        for name, spans in windows.items()
    }
    (root / "labels").mkdir()
    (root / "labels" / "combined_windows.json").write_text(json.dumps(labels, indent=1))
    (root / "config").mkdir()
    (root / "config" / "profiles.json").write_text(json.dumps(PROFILES_JSON, indent=1))
    return windows


def _write_results(
    out: Path, stamps: Mapping[str, np.ndarray], scores: Mapping[str, np.ndarray]
) -> None:
    """Detector output in NAB layout: out/<cat>/<file>.csv with timestamp,value,anomaly_score."""
    for name, ts in stamps.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        frame = pd.DataFrame({"timestamp": _fmt(ts), "value": 0.0, "anomaly_score": scores[name]})
        frame.to_csv(path, index=False)


def _fmt(ts: np.ndarray) -> list[str]:
    return [f"{t:%Y-%m-%d %H:%M:%S}" for t in pd.DatetimeIndex(ts)]


def _run_reference(nab_root: Path, results: Path, subset: str) -> dict[str, dict[str, float]]:
    """The reference scorer's numbers per profile for ``results`` on ``subset``.

    Exact values come from its ``--json`` output; the printed table (two decimals) is
    parsed too and must say the same.
    """
    if not REFERENCE.is_file():
        pytest.skip(f"reference scorer {REFERENCE} not available")
    json_path = results.parent / f"{results.name}-reference.json"
    command = [sys.executable, str(REFERENCE), "--nab", str(nab_root), "--subset", subset]
    command += ["--json", str(json_path), str(results)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    (by_subset,) = json.loads(json_path.read_text()).values()
    (by_profile,) = by_subset.values()
    assert isinstance(by_profile, dict)
    printed = dict(PRINTED_SCORE.findall(proc.stdout))
    assert printed.keys() == by_profile.keys()
    for profile, score in printed.items():
        assert float(score) == pytest.approx(by_profile[profile]["score"], abs=0.006)
    return by_profile


def _assert_agrees(
    ours: Sequence[CorpusScore], reference: Mapping[str, Mapping[str, float]]
) -> None:
    assert sorted(s.profile for s in ours) == sorted(reference)
    for score in ours:
        ref = reference[score.profile]
        assert abs(score.score - ref["score"]) <= TOLERANCE, (score, ref)
        assert score.windows == ref["windows"]
        if score.threshold == ref["threshold"]:
            assert score.windows_detected == ref["windows_detected"]
            assert score.fp_rows == ref["fp_rows"]
            assert score.raw == pytest.approx(ref["raw"], abs=1e-9)


def _one_at_window_starts(spec: Spec) -> dict[str, np.ndarray]:
    scores = {}
    for name, (n, spans) in spec.items():
        s = np.zeros(n)
        s[[a for a, _ in spans]] = 1.0
        scores[name] = s
    return scores


# --- the rules -------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_perfect_detector_scores_100(profile: Profile) -> None:
    stamps, windows = _corpus(CLEAN)
    result = score_corpus(_detections(stamps, _one_at_window_starts(CLEAN)), windows, profile)
    assert result.score == pytest.approx(100.0)
    assert result.threshold == 1.0
    assert (result.windows_detected, result.windows, result.fp_rows) == (4, 4, 0)


def test_detecting_nothing_scores_0() -> None:
    stamps, windows = _corpus(CLEAN)
    zeros = _detections(stamps, {name: np.zeros(n) for name, (n, _) in CLEAN.items()})
    at_fixed = score_corpus(zeros, windows, STANDARD, threshold=0.5)
    assert at_fixed.score == 0.0
    assert at_fixed.raw == -4.0  # one miss per window
    # Flagging every row would cost far more in false positives: the optimum is "nothing".
    optimised = score_corpus(zeros, windows, STANDARD)
    assert optimised.threshold > 1.0
    assert optimised.score == 0.0
    assert optimised.windows_detected == 0


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_each_false_positive_far_from_windows_costs_fp_weight(profile: Profile) -> None:
    stamps, windows = _corpus(CLEAN)
    scores = _one_at_window_starts(CLEAN)
    scores["catA/a1.csv"][[70, 80, 90]] = 0.9  # after probation (60 rows), before any window
    scores["catB/b2.csv"][[100, 200]] = 0.9  # a file without windows
    result = score_corpus(_detections(stamps, scores), windows, profile, threshold=0.5)
    assert result.fp_rows == 5
    span = result.perfect - result.null
    assert result.score == pytest.approx(100.0 - 100.0 * 5 * profile.fp_weight / span)


def test_a_false_positive_just_after_a_window_costs_less_than_one_far_away() -> None:
    stamps, windows = _corpus(CLEAN)

    def cost_of_fp_at(row: int) -> float:
        scores = _one_at_window_starts(CLEAN)
        scores["catB/b1.csv"][row] = 1.0  # the window is rows 300-349 (50 rows)
        return 100.0 - score_corpus(_detections(stamps, scores), windows, STANDARD, 0.5).score

    costs = [cost_of_fp_at(row) for row in (350, 360, 400, 499)]
    assert 0 < costs[0] < costs[1] < costs[2] < costs[3]
    assert costs[0] < 0.1 * costs[3]  # right after the window it is nearly free
    # From three window widths on (and before the first window) it costs the full weight.
    assert costs[3] == pytest.approx(cost_of_fp_at(250))


def test_earlier_detection_in_a_window_scores_more() -> None:
    stamps, windows = _corpus(CLEAN)

    def score_detecting_at(row: int) -> float:
        scores = _one_at_window_starts(CLEAN)
        scores["catB/b1.csv"][:] = 0.0
        scores["catB/b1.csv"][row] = 1.0  # the window is rows 300-349
        return score_corpus(_detections(stamps, scores), windows, STANDARD, 0.5).score

    rows = [300, 310, 325, 340, 349]
    scores = [score_detecting_at(row) for row in rows]
    assert scores[0] == pytest.approx(100.0)
    assert all(a > b for a, b in itertools.pairwise(scores))
    # Even the last row of the window beats missing it.
    missed = score_detecting_at(0)  # row 0 is probation: nothing detected in b1
    assert scores[-1] > missed


def test_only_the_earliest_detection_in_a_window_counts() -> None:
    stamps, windows = _corpus(CLEAN)
    scores = _one_at_window_starts(CLEAN)
    once = score_corpus(_detections(stamps, scores), windows, STANDARD, 0.5)
    scores["catA/a1.csv"][101:139] = 1.0  # the rest of the first window of a1
    many = score_corpus(_detections(stamps, scores), windows, STANDARD, 0.5)
    assert many.score == pytest.approx(once.score)
    assert many.fp_rows == 0


def test_probationary_rows_are_not_scored() -> None:
    stamps, windows = _corpus(CLEAN)
    scores = _one_at_window_starts(CLEAN)
    clean = score_corpus(_detections(stamps, scores), windows, STANDARD)
    for name, (n, _) in CLEAN.items():
        scores[name][: probationary_rows(n)] = 1.0  # would be FPs after probation
    flagged = score_corpus(_detections(stamps, scores), windows, STANDARD)
    assert flagged.score == pytest.approx(clean.score)
    assert flagged.fp_rows == 0


def test_a_window_lost_to_probation_is_not_missed_but_caps_the_score() -> None:
    spec: Spec = {"c/x.csv": (400, [(10, 40), (200, 239)])}  # probation: rows 0-59
    stamps, windows = _corpus(spec)
    nothing = score_corpus(_detections(stamps, {"c/x.csv": np.zeros(400)}), windows, STANDARD)
    assert (nothing.windows, nothing.null, nothing.perfect) == (1, -1.0, 2.0)
    assert nothing.score == 0.0
    # NAB's normaliser counts every labelled window as reachable: 100 is out of reach.
    perfect = score_corpus(_detections(stamps, _one_at_window_starts(spec)), windows, STANDARD)
    assert perfect.windows_detected == 1
    assert perfect.score == pytest.approx(100.0 * 2.0 / 3.0)


@pytest.mark.parametrize("n_rows, expected", [(0, 0), (6, 0), (7, 1), (400, 60), (4032, 604)])
def test_probation_is_15_percent_of_rows(n_rows: int, expected: int) -> None:
    assert probationary_rows(n_rows) == expected


def test_probation_is_capped_at_750_rows() -> None:
    assert probationary_rows(5000) == 750
    assert probationary_rows(15902) == 750


def test_optimised_threshold_is_the_best_fixed_threshold() -> None:
    """The sweep reaches the brute-force optimum, and picks the highest threshold of ties."""
    stamps, windows = _corpus(QUIRKY)
    rng = np.random.default_rng(3)
    scores = {name: np.round(rng.random(n) ** 4, 2) for name, (n, _) in QUIRKY.items()}
    detections = _detections(stamps, scores)
    candidates = [*np.unique(np.concatenate(list(scores.values()))).tolist(), 1.1]
    for profile in PROFILES:
        best = score_corpus(detections, windows, profile)
        raw = {t: score_corpus(detections, windows, profile, t).raw for t in candidates}
        top = max(raw.values())
        assert best.raw == pytest.approx(top, abs=1e-9)
        assert best.threshold == max(t for t, r in raw.items() if r >= top - 1e-9)
        assert best.score > 0.0  # a real optimum, not "detect nothing"


def test_per_file_parts_add_up_to_the_corpus_score() -> None:
    stamps, windows = _corpus(QUIRKY)
    rng = np.random.default_rng(5)
    scores = {name: rng.random(n) for name, (n, _) in QUIRKY.items()}
    for result in score_table(_detections(stamps, scores), windows):
        assert sum(f.raw for f in result.files) == pytest.approx(result.raw)
        assert sum(f.fp_rows for f in result.files) == result.fp_rows
        assert sum(f.windows_labelled for f in result.files) == 9
        assert result.windows == 8  # the first window of a2 is lost to probation
        by_category = category_frame([result])
        assert list(by_category["category"]) == ["catA", "catB", "catC"]
        assert by_category["raw"].sum() == pytest.approx(result.raw)


def test_text_and_frame_tables_list_every_profile_and_category() -> None:
    stamps, windows = _corpus(CLEAN)
    table = score_table(_detections(stamps, _one_at_window_starts(CLEAN)), windows)
    frame = score_frame(table)
    assert list(frame["profile"]) == [p.name for p in PROFILES]
    assert list(frame["score"]) == pytest.approx([100.0] * 3)
    text = "\n".join(format_score_lines(table))
    for name in ("standard", "reward_low_FP_rate", "reward_low_FN_rate", "catA", "catB"):
        assert name in text
    assert "100.00" in text
    assert "4/4" in text


def test_inputs_that_cannot_be_scored_are_rejected() -> None:
    stamps, windows = _corpus(CLEAN)
    scores = _one_at_window_starts(CLEAN)
    with pytest.raises(ValueError, match="no entry in the labels"):
        score_corpus(_detections(stamps, scores), {"catA/a1.csv": []}, STANDARD)
    scores["catA/a1.csv"][5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        score_corpus(_detections(stamps, scores), windows, STANDARD)
    off_grid = dict(windows)
    start, end = windows["catA/a2.csv"][0]
    off_grid["catA/a2.csv"] = [(start + pd.Timedelta(seconds=1), end)]
    with pytest.raises(ValueError, match="not a row timestamp"):
        score_corpus(_detections(stamps, _one_at_window_starts(CLEAN)), off_grid, STANDARD)


def test_profiles_and_windows_load_from_a_nab_tree(tmp_path: Path) -> None:
    windows = _write_nab(tmp_path, QUIRKY)
    assert load_profiles(tmp_path / "config" / "profiles.json") == PROFILES
    assert load_profiles() == PROFILES
    assert load_windows(tmp_path / "labels" / "combined_windows.json") == windows


def test_results_dir_reads_back_what_was_written(tmp_path: Path) -> None:
    stamps, _ = _corpus(CLEAN)
    rng = np.random.default_rng(0)
    scores = {name: rng.random(n) for name, (n, _) in CLEAN.items()}
    _write_results(tmp_path / "out", stamps, scores)
    (tmp_path / "out" / "report").mkdir()  # other output beside the results is ignored
    (tmp_path / "out" / "report" / "index.html").write_text("<html></html>")
    back = read_results_dir(tmp_path / "out")
    assert sorted(back) == sorted(CLEAN)
    for name, (ts, s) in back.items():
        np.testing.assert_array_equal(ts, stamps[name])
        np.testing.assert_array_equal(s, scores[name])


# --- agreement with the reference scorer -----------------------------------------------------


def _random_scores(spec: Spec, seed: int) -> dict[str, np.ndarray]:
    """Per file one of several score styles, mixing ties, all zeros, 1.0s and near-hits."""
    rng = np.random.default_rng(seed)
    scores = {}
    for name, (n, spans) in spec.items():
        style = rng.integers(6)
        if style == 0:
            s = rng.random(n)
        elif style == 1:
            s = np.round(rng.random(n), 1)  # many ties
        elif style == 2:
            s = np.zeros(n)
        elif style == 3:
            s = (rng.random(n) < 0.03).astype(float)  # 0 or 1
        else:
            s = np.round(rng.beta(0.5, 6.0, n), 3)
            for a, b in spans:  # bursts around windows: early, late, or just after
                at = int(rng.integers(a - 5, b + 15))
                s[max(at, 0) : at + int(rng.integers(1, 4))] = rng.choice([1.0, 0.9, 0.75])
            if style == 5:
                s[rng.integers(0, n, 5)] = 1.0
        scores[name] = s
    return scores


@pytest.mark.parametrize("spec_name", ["CLEAN", "QUIRKY"])
@pytest.mark.parametrize("case", ["seed0", "seed1", "seed2", "seed3", "zeros", "ones"])
def test_agrees_with_reference_scorer(tmp_path: Path, spec_name: str, case: str) -> None:
    spec = CLEAN if spec_name == "CLEAN" else QUIRKY
    windows = _write_nab(tmp_path / "nab", spec)
    stamps, _ = _corpus(spec)
    if case == "zeros":
        scores = {name: np.zeros(n) for name, (n, _) in spec.items()}
    elif case == "ones":
        scores = {name: np.ones(n) for name, (n, _) in spec.items()}
    else:
        scores = _random_scores(spec, seed=int(case.removeprefix("seed")) + len(spec))
    out = tmp_path / "out"
    _write_results(out, stamps, scores)
    categories = ",".join(sorted({name.split("/")[0] for name in spec}))
    reference = _run_reference(tmp_path / "nab", out, categories)

    ours = score_table(
        read_results_dir(out),
        load_windows(tmp_path / "nab" / "labels" / "combined_windows.json"),
        load_profiles(tmp_path / "nab" / "config" / "profiles.json"),
    )
    assert load_windows(tmp_path / "nab" / "labels" / "combined_windows.json") == windows
    _assert_agrees(ours, reference)


def test_agrees_with_reference_scorer_on_nab_dev(tmp_path: Path) -> None:
    """All 27 dev files, scored by a rolling z-score of the value (past rows only)."""
    if not (NAB_DEV / "labels" / "combined_windows.json").is_file():
        pytest.skip(f"{NAB_DEV} not available")
    out = tmp_path / "zscore"
    for path in sorted((NAB_DEV / "data").glob("*/*.csv")):
        frame = pd.read_csv(path)
        value = frame["value"].astype(float)
        past = value.shift(1).rolling(200, min_periods=10)
        z = ((value - past.mean()) / past.std()).abs()
        z = z.replace(np.inf, np.nan).fillna(0.0)
        frame["anomaly_score"] = np.round(np.clip(z / 8.0, 0.0, 1.0), 3)  # ties and 1.0s
        target = out / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(target, index=False)
    reference = _run_reference(NAB_DEV, out, "DEV")

    ours = score_table(
        read_results_dir(out),
        load_windows(NAB_DEV / "labels" / "combined_windows.json"),
        load_profiles(NAB_DEV / "config" / "profiles.json"),
    )
    _assert_agrees(ours, reference)
    assert sum(len(s.files) for s in ours) == 3 * 27
    assert ours[0].windows == 53
    assert not math.isnan(ours[0].score)
