"""Offline training: loading series from CSV/Parquet, train_model, and ``streamrnn train``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from streamrnn.cli import main as cli_main
from streamrnn.config import Settings
from streamrnn.decode import DecodedMessage
from streamrnn.engine.build import build_engine
from streamrnn.forecast import artifact
from streamrnn.forecast.dataset import DataError, load_series
from streamrnn.forecast.gru import ModelSpec
from streamrnn.forecast.train import TrainConfig, TrainProgress, TrainReport, train_model
from streamrnn.synthetic import SyntheticSpec, synthetic_stream

T0 = 1_700_000_000.0
JAN_1_2024 = 1_704_067_200.0  # 2024-01-01T00:00:00Z

Series = dict[str, tuple[np.ndarray, np.ndarray]]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _synthetic(series: int = 6, points: int = 300, seed: int = 7) -> Series:
    frame = synthetic_stream(
        SyntheticSpec(series=series, points=points, anomalies_per_series=0, seed=seed)
    )
    return {
        str(name): (g["ts"].to_numpy(np.float64), g["value"].to_numpy(np.float64))
        for name, g in frame.groupby("series")
    }


def _can_write_parquet(tmp_path: Path) -> bool:
    try:
        pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "probe.parquet")
    except ImportError:
        return False
    (tmp_path / "probe.parquet").unlink()
    return True


# --- load_series: layouts ----------------------------------------------------------------------


def test_load_series_reads_long_format_with_many_series(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "metrics.csv",
        "series,ts,value\n"
        "web.cpu,1700000020,3\n"
        "web.cpu,1700000000,1\n"  # out of order in the file: sorted on load
        "db.mem,1700000000,10\n"
        "web.cpu,1700000010,2\n"
        "db.mem,1700000060,11\n",
    )
    data = load_series(path)
    assert sorted(data.series) == ["db.mem", "web.cpu"]
    ts, values = data.series["web.cpu"]
    np.testing.assert_array_equal(ts, [T0, T0 + 10, T0 + 20])
    np.testing.assert_array_equal(values, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(data.series["db.mem"][1], [10.0, 11.0])
    assert data.points == 5
    assert data.dropped == {"duplicate_timestamp": 0, "missing_or_non_finite": 0}


def test_load_series_reads_one_file_per_series_with_iso_timestamps(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    _write(
        folder / "a.csv",
        "timestamp,value\n2024-01-01T00:00:00,1.5\n2024-01-01T00:00:10,2.5\n"
        "2024-01-01T00:00:20,3.5\n",
    )
    _write(folder / "b.csv", "timestamp,value\n2024-01-01T00:01:00Z,7\n2024-01-01T00:02:00Z,8\n")
    data = load_series(folder)
    assert sorted(data.series) == ["a", "b"]
    np.testing.assert_array_equal(data.series["a"][0], JAN_1_2024 + np.array([0.0, 10.0, 20.0]))
    np.testing.assert_array_equal(data.series["a"][1], [1.5, 2.5, 3.5])
    np.testing.assert_array_equal(data.series["b"][0], JAN_1_2024 + np.array([60.0, 120.0]))


def test_load_series_treats_naive_times_as_utc_and_converts_offsets(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "x.csv",
        "ts,value\n2024-01-01T00:00:00,1\n2024-01-01T01:00:10+01:00,2\n2024-01-01 00:00:20,3\n",
    )
    ts, _ = load_series(path).series["x"]
    np.testing.assert_array_equal(ts, JAN_1_2024 + np.array([0.0, 10.0, 20.0]))


def test_load_series_names_per_file_series_by_relative_path(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    _write(folder / "host1" / "cpu.csv", "ts,value\n1,1\n2,2\n")
    _write(folder / "host2" / "cpu.CSV", "ts,value\n1,1\n2,2\n")
    _write(folder / "notes.txt", "ignored")
    data = load_series(folder)
    assert sorted(data.series) == [str(Path("host1/cpu")), str(Path("host2/cpu"))]


def test_load_series_reads_parquet(tmp_path: Path) -> None:
    if not _can_write_parquet(tmp_path):
        pytest.skip("pandas cannot write Parquet here (no pyarrow or fastparquet)")
    frame = pd.DataFrame(
        {
            "series": ["a", "a", "a", "b", "b"],
            "ts": pd.to_datetime(
                [
                    "2024-01-01T00:00:00",
                    "2024-01-01T00:01:00",
                    "2024-01-01T00:02:00",
                    "2024-01-01T00:00:00",
                    "2024-01-01T00:00:30",
                ]
            ),
            "value": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )
    frame.to_parquet(tmp_path / "metrics.parquet")
    pd.DataFrame({"ts": [T0, T0 + 5.0], "value": [1.0, 2.0]}).to_parquet(tmp_path / "c.parquet")
    data = load_series(tmp_path)
    assert sorted(data.series) == ["a", "b", "c"]
    np.testing.assert_array_equal(data.series["a"][0], JAN_1_2024 + np.array([0.0, 60.0, 120.0]))
    np.testing.assert_array_equal(data.series["b"][1], [4.0, 5.0])
    np.testing.assert_array_equal(data.series["c"][0], [T0, T0 + 5.0])


# --- load_series: cleaning ---------------------------------------------------------------------


def test_load_series_drops_duplicate_timestamps_keeping_the_first_and_counts_them(
    tmp_path: Path,
) -> None:
    path = _write(
        tmp_path / "x.csv",
        "ts,value\n1700000000,1\n1700000010,2\n1700000010,99\n1700000020,3\n1700000000,98\n",
    )
    data = load_series(path)
    ts, values = data.series["x"]
    np.testing.assert_array_equal(ts, [T0, T0 + 10, T0 + 20])
    np.testing.assert_array_equal(values, [1.0, 2.0, 3.0])
    assert data.dropped["duplicate_timestamp"] == 2
    assert data.dropped["missing_or_non_finite"] == 0


def test_load_series_drops_missing_and_non_finite_values_and_counts_them(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "x.csv",
        "ts,value\n1700000000,1\n1700000010,\n1700000020,NaN\n1700000030,n/a\n"
        "1700000040,inf\n1700000050,2\n,3\n",
    )
    data = load_series(path)
    ts, values = data.series["x"]
    np.testing.assert_array_equal(ts, [T0, T0 + 50])
    np.testing.assert_array_equal(values, [1.0, 2.0])
    assert data.dropped == {"duplicate_timestamp": 0, "missing_or_non_finite": 5}


def test_load_series_skips_series_with_fewer_than_two_points(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.csv", "series,ts,value\na,1,1\na,2,2\nb,1,5\n")
    assert sorted(load_series(path).series) == ["a"]


def test_load_series_keeps_every_point_of_a_series_split_over_two_files(tmp_path: Path) -> None:
    _write(tmp_path / "day1.csv", "series,ts,value\na,1,1\na,2,2\na,3,3\n")
    _write(tmp_path / "day2.csv", "series,ts,value\na,4,4\na,5,5\n")
    try:
        data = load_series(tmp_path)
    except DataError:
        return  # refusing the ambiguous layout would be acceptable too
    np.testing.assert_array_equal(data.series["a"][0], [1.0, 2.0, 3.0, 4.0, 5.0])


# --- load_series: errors -----------------------------------------------------------------------


def test_load_series_missing_column_names_the_file_and_the_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.csv", "time,val\n1,2\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['ts', 'value'\]") as excinfo:
        load_series(tmp_path)
    assert str(path) in str(excinfo.value)
    assert "have ['time', 'val']" in str(excinfo.value)


def test_load_series_in_a_folder_names_the_bad_file_among_good_ones(tmp_path: Path) -> None:
    _write(tmp_path / "a.csv", "ts,value\n1,1\n2,2\n")
    bad = _write(tmp_path / "b.csv", "ts,amount\n1,1\n2,2\n")
    with pytest.raises(DataError, match="'value'") as excinfo:
        load_series(tmp_path)
    assert str(bad) in str(excinfo.value)


def test_load_series_empty_folder_raises_data_error(tmp_path: Path) -> None:
    _write(tmp_path / "readme.txt", "nothing here")
    with pytest.raises(DataError, match=r"no \.csv or \.parquet files") as excinfo:
        load_series(tmp_path)
    assert str(tmp_path) in str(excinfo.value)


def test_load_series_missing_path_raises_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_series(tmp_path / "nope")


def test_load_series_unparseable_timestamps_name_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "x.csv", "ts,value\nyesterday-ish,1\nlater,2\n")
    with pytest.raises(DataError, match="neither epoch seconds nor dates") as excinfo:
        load_series(path)
    assert str(path) in str(excinfo.value)


def test_load_series_unreadable_file_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "empty.csv", "")
    with pytest.raises(DataError, match="cannot be read") as excinfo:
        load_series(path)
    assert str(path) in str(excinfo.value)


def test_load_series_with_no_usable_series_raises_data_error(tmp_path: Path) -> None:
    _write(tmp_path / "x.csv", "ts,value\n1,1\n2,\n")
    with pytest.raises(DataError, match="at least two points"):
        load_series(tmp_path)


# --- train_model -------------------------------------------------------------------------------

SMALL_SPEC = ModelSpec(hidden_size=12)
SMALL_CONFIG = TrainConfig(epochs=3, chunk_points=50, learning_rate=1e-2, patience=3, seed=0)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Tiny models train fastest on one thread (as the daemon and ``streamrnn train`` do)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained() -> tuple[Series, TrainReport, list[TrainProgress]]:
    data = _synthetic()
    seen: list[TrainProgress] = []
    _, report = train_model(data, SMALL_SPEC, SMALL_CONFIG, seen.append)
    return data, report, seen


def test_training_lowers_validation_nll_from_the_first_epoch_to_the_best(
    trained: tuple[Series, TrainReport, list[TrainProgress]],
) -> None:
    _, report, _ = trained
    assert len(report.val_nll) == report.epochs_run
    best = report.val_nll[report.best_epoch - 1]
    assert best == min(report.val_nll)
    assert best < report.val_nll[0] - 1e-3
    assert report.train_nll[-1] < report.train_nll[0]


def test_training_report_fields_are_filled(
    trained: tuple[Series, TrainReport, list[TrainProgress]],
) -> None:
    data, report, _ = trained
    assert report.series == len(data) == 6
    assert report.points == 6 * 300
    assert 1 <= report.best_epoch <= report.epochs_run <= SMALL_CONFIG.epochs
    assert len(report.train_nll) == report.epochs_run
    assert np.isfinite(report.train_nll).all() and np.isfinite(report.val_nll).all()
    assert np.isfinite(report.val_mae) and report.val_mae > 0
    assert np.isfinite(report.val_naive_mae) and report.val_naive_mae > 0
    assert report.seconds > 0
    plain = report.as_dict()
    assert plain["best_epoch"] == report.best_epoch and plain["val_nll"] == report.val_nll


def test_train_and_validation_points_partition_every_usable_point(
    trained: tuple[Series, TrainReport, list[TrainProgress]],
) -> None:
    data, report, _ = trained
    # A point is usable once the normaliser has seen two points before it.
    usable = sum(len(ts) - 2 for ts, _ in data.values())
    assert report.train_points + report.val_points == usable
    # The last 20 % of each series (time-ordered) is held out.
    expected_val = sum(len(ts) - int(np.floor(len(ts) * 0.8)) for ts, _ in data.values())
    assert report.val_points == expected_val
    assert report.val_points / usable == pytest.approx(0.2, abs=0.01)


def test_training_reports_progress_for_every_chunk_and_epoch(
    trained: tuple[Series, TrainReport, list[TrainProgress]],
) -> None:
    _, report, seen = trained
    chunks = seen[0].chunks
    assert chunks == 6  # one batch of 6 series × 300 points in chunks of 50
    per_epoch = [p for p in seen if p.val_nll is not None]
    assert [p.epoch for p in per_epoch] == list(range(1, report.epochs_run + 1))
    assert [p.val_nll for p in per_epoch] == report.val_nll
    assert all(p.chunk == chunks for p in per_epoch)
    assert [p.chunk for p in seen if p.epoch == 1 and p.val_nll is None] == list(
        range(1, chunks + 1)
    )


def _weights(data: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, torch.Tensor]:
    config = TrainConfig(epochs=1, chunk_points=40, learning_rate=1e-2, seed=3)
    model, _ = train_model(data, ModelSpec(hidden_size=8), config)
    return model.state_dict()


def test_validation_points_are_never_trained_on() -> None:
    data = _synthetic(series=3, points=200, seed=11)
    baseline = _weights(data)

    # Wild validation values (the last 20 % of each series): the weights must not move.
    val_changed = {}
    for name, (ts, values) in data.items():
        wild = values.copy()
        wild[int(np.floor(len(ts) * 0.8)) :] *= -50.0
        val_changed[name] = (ts, wild)
    for key, value in _weights(val_changed).items():
        torch.testing.assert_close(value, baseline[key], atol=1e-6, rtol=0, msg=key)

    # Sanity: changing one training point does move them.
    train_changed = dict(data)
    name = sorted(data)[0]
    ts, values = data[name]
    wild = values.copy()
    wild[50] += 100.0
    train_changed[name] = (ts, wild)
    moved = _weights(train_changed)
    assert any(not torch.allclose(moved[k], baseline[k], atol=1e-6) for k in baseline)


def test_early_stopping_stops_after_patience_epochs_without_improvement() -> None:
    data = _synthetic(series=2, points=120, seed=12)
    config = TrainConfig(epochs=10, chunk_points=60, learning_rate=0.0, patience=2, seed=0)
    _, report = train_model(data, ModelSpec(hidden_size=8), config)
    assert report.best_epoch == 1
    assert report.epochs_run == 3  # epochs 2 and 3 did not improve
    assert report.val_nll[0] == pytest.approx(report.val_nll[-1])


def test_training_is_reproducible_and_warm_start_leaves_the_initial_model_untouched() -> None:
    data = _synthetic(series=2, points=120, seed=13)
    config = TrainConfig(epochs=1, chunk_points=60, learning_rate=1e-2, seed=5)
    first, report_a = train_model(data, ModelSpec(hidden_size=8), config)
    second, report_b = train_model(data, ModelSpec(hidden_size=8), config)
    assert report_a.val_nll == report_b.val_nll
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key

    before = {k: v.clone() for k, v in first.state_dict().items()}
    warm, _ = train_model(data, first.spec, config, initial=first)
    for key, value in first.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert any(not torch.equal(warm.state_dict()[k], before[k]) for k in before)
    assert not warm.training


# --- streamrnn train ---------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMRNN_")}
    env.update(extra)
    return env


def test_cli_train_writes_a_loadable_artifact_and_exits_0(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    for name, (ts, values) in _synthetic(series=3, points=150, seed=14).items():
        data_dir.mkdir(exist_ok=True)
        pd.DataFrame({"ts": ts, "value": values}).to_csv(data_dir / f"{name}.csv", index=False)
    out = tmp_path / "models" / "m.pt"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamrnn",
            "train",
            "--data",
            str(data_dir),
            "--out",
            str(out),
            "--epochs",
            "2",
            "--threads",
            "1",
        ],
        cwd=tmp_path,  # no ./config.yaml
        env=_env(STREAMRNN_MODEL__HIDDEN_SIZE="8"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    loaded = artifact.load(out)
    assert loaded.model.spec == ModelSpec(hidden_size=8)
    assert loaded.version in proc.stderr
    report = loaded.metadata["report"]
    assert report["series"] == 3 and 1 <= report["epochs_run"] <= 2
    assert loaded.metadata["train_config"]["epochs"] == 2
    # The daemon can serve it.
    engine = build_engine(Settings(model={"artifact": out}))
    assert engine.model_version == loaded.version
    result = engine.process([DecodedMessage("x", [T0, T0 + 10, T0 + 20], [1.0, 2.0, 1.5], None)])
    assert np.isfinite(result.forecast[1:]).all()


def test_cli_train_with_a_bad_data_path_exits_2_with_a_one_line_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./config.yaml
    missing = tmp_path / "no-such-data"
    code = cli_main(["train", "--data", str(missing), "--out", str(tmp_path / "m.pt")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("streamrnn train:") and str(missing) in err[0]
    assert not (tmp_path / "m.pt").exists()


def test_cli_train_with_a_bad_warm_start_exits_2_with_a_one_line_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "d" / "a.csv", "ts,value\n1,1\n2,2\n3,3\n")
    _write(tmp_path / "junk.pt", "not a model")
    code = cli_main(
        ["train", "--data", str(tmp_path / "d"), "--warm-start", str(tmp_path / "junk.pt")]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    # (The message itself spans several lines: see the artifact tests.)
    assert err[0].startswith("streamrnn train:") and "junk.pt is not a model artifact" in err[0]
    assert not (tmp_path / "streamrnn-model.pt").exists()


def test_cli_train_bad_data_file_exits_2_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    bad = _write(tmp_path / "d" / "a.csv", "time,v\n1,1\n")
    assert cli_main(["train", "--data", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0]
