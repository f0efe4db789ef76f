"""One retrain (streamrnn.retrain.job.run_retrain): warm start, gate, packaging.

Real training on small data (a few seconds): a candidate trained on the data is promoted
with a lower held-out NLL; one trained on corrupted data (values shuffled in time, and
glitches added) is rejected, and so is any candidate when the margin asks for more
than it gained.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamrnn.config import RetrainConfig, load_settings
from streamrnn.engine.build import build_engine
from streamrnn.forecast import artifact
from streamrnn.retrain.job import RetrainJob, run_retrain
from tests.retrain_scenario import shifted_series


@pytest.fixture(scope="module")
def serving() -> tuple[bytes, str]:
    torch.set_num_threads(1)
    engine = build_engine(load_settings(None, model={"pretrained": True}))
    group = engine.groups[-1]
    data, _ = artifact.to_bytes(
        group.model, engine.normaliser_alpha, {"lineage": ["older"]}, version=group.version
    )
    return data, group.version


def _recent(points: int = 512) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    data = shifted_series(24, 1400, 700, seed=1)
    return {name: (ts[-points:], values[-points:]) for name, (ts, values) in data.items()}


def test_a_candidate_trained_on_the_new_regime_is_promoted(serving: tuple[bytes, str]) -> None:
    current, version = serving
    result = run_retrain(RetrainJob("global", "drift", current, _recent(), RetrainConfig()))
    assert result.promoted
    assert result.current_version == version
    assert result.candidate_score.nll < result.current_score.nll - 0.01
    assert result.candidate_score.mase < result.current_score.mase
    assert result.candidate_score.points == result.current_score.points > 0
    assert result.artifact is not None
    loaded = artifact.from_bytes(result.artifact, "candidate")
    assert loaded.version == result.candidate_version != version
    meta = loaded.metadata
    assert meta["parent_version"] == version
    assert meta["lineage"] == ["older", version]
    assert meta["trigger"] == "drift"
    assert meta["gate"]["candidate_nll"] == pytest.approx(result.candidate_score.nll)
    assert meta["data"]["series"] == 24 and meta["data"]["points"] == 24 * 512
    assert meta["data"]["start_ts"] < meta["data"]["end_ts"]


def test_a_candidate_trained_on_corrupted_data_is_rejected(serving: tuple[bytes, str]) -> None:
    current, _ = serving
    data = _recent()
    rng = np.random.default_rng(0)
    # A broken exporter: values shuffled in time, and glitches of any size on top.
    corrupted = {
        n: (ts[:400], rng.permutation(values[:400]) + 5 * rng.standard_cauchy(400))
        for n, (ts, values) in data.items()
    }
    job = RetrainJob("global", "schedule", current, data, RetrainConfig(), train_data=corrupted)
    result = run_retrain(job)
    assert not result.promoted
    assert result.artifact is None
    assert result.candidate_score.nll > result.current_score.nll


def test_the_margin_rejects_a_candidate_that_gains_less(serving: tuple[bytes, str]) -> None:
    current, _ = serving
    config = RetrainConfig(min_improvement=100.0, epochs=1)
    result = run_retrain(RetrainJob("global", "manual", current, _recent(), config))
    assert not result.promoted
    assert result.artifact is None
    assert result.metadata["gate"]["min_improvement"] == 100.0
