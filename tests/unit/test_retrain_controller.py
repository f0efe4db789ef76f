"""The retrain controller in process (no broker): drift → retrain → gate → hot swap.

The trainer here runs each job synchronously when it is submitted (the daemon's runs it in a
child process; the job itself is the same real training and gate). Time is the stream's
own clock, so schedules and intervals are deterministic.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from streamrnn.config import RetrainConfig, load_settings
from streamrnn.decode import DecodedMessage
from streamrnn.engine.build import build_engine
from streamrnn.engine.engine import Engine
from streamrnn.forecast import artifact
from streamrnn.retrain.controller import RetrainController
from streamrnn.retrain.job import RetrainJob, RetrainResult, run_retrain
from streamrnn.retrain.registry import ModelRegistry
from streamrnn.state.manager import GroupInfo, SeriesStateManager
from streamrnn.state.store import LocalStateStore
from tests.retrain_scenario import shifted_series

SHIFT_AT = 700
POINTS = 1400
PER_BATCH = 5


class InlineTrainer:
    """Runs a job at submit time; ``corrupt`` shuffles its training data first."""

    def __init__(self, corrupt: bool = False) -> None:
        self.corrupt = corrupt
        self.jobs: list[RetrainJob] = []
        self._done: tuple[RetrainJob, RetrainResult | BaseException] | None = None

    @property
    def busy(self) -> bool:
        return self._done is not None

    def submit(self, job: RetrainJob) -> None:
        self.jobs.append(job)
        if self.corrupt:
            rng = np.random.default_rng(0)
            bad = {
                n: (ts[: len(ts) * 3 // 4], rng.permutation(v)[: len(ts) * 3 // 4] * 3)
                for n, (ts, v) in job.data.items()
            }
            job = dataclasses.replace(job, train_data=bad)
        self._done = (job, run_retrain(job))

    def collect(self) -> tuple[RetrainJob, RetrainResult | BaseException] | None:
        done, self._done = self._done, None
        return done

    def close(self) -> None:
        pass


@dataclasses.dataclass
class Rig:
    engine: Engine
    manager: SeriesStateManager
    registry: ModelRegistry
    controller: RetrainController
    trainer: InlineTrainer
    clock: list[float]


def _rig(tmp_path: Path, trainer: InlineTrainer, **retrain: object) -> Rig:
    torch.set_num_threads(1)
    settings = load_settings(
        None,
        model={"pretrained": True},
        retrain={
            "interval_s": None,
            "min_train_points": 5000,
            "drift_min_interval_s": 0,
            **retrain,
        },
    )
    engine = build_engine(settings)
    store = LocalStateStore(tmp_path / "state.sqlite")
    manager = SeriesStateManager(
        engine.table,
        store,
        [GroupInfo(g.version, f"state.{g.name}") for g in engine.groups],
        route=engine.group_index_of,
    )
    registry = ModelRegistry(tmp_path / "models")
    clock = [0.0]
    controller = RetrainController(
        settings.retrain, engine, manager, registry, trainer, None, clock=lambda: clock[0]
    )
    return Rig(engine, manager, registry, controller, trainer, clock)


def _stream(rig: Rig, may_train: bool = True) -> list[tuple[str, float]]:
    """Feed the shifted stream in batches; per batch after the shift (and 50 points of
    settling), the serving version and the mean scaled one-step error."""
    data = shifted_series(24, POINTS, SHIFT_AT, seed=2)
    names = sorted(data)
    errors: list[tuple[str, float]] = []
    for start in range(0, POINTS, PER_BATCH):
        messages = [
            DecodedMessage(
                series=n,
                ts=list(data[n][0][start : start + PER_BATCH]),
                values=list(data[n][1][start : start + PER_BATCH]),
                labels=None,
            )
            for n in names
        ]
        rig.clock[0] = float(data[names[0]][0][start])
        version = rig.engine.groups[-1].version
        batch = rig.engine.process(messages)
        rig.controller.observe(batch)
        rig.controller.tick(may_train)
        if start >= SHIFT_AT + 50:
            e = np.abs(batch.value - batch.forecast) / batch.error_scale
            errors.append((version, float(np.nanmean(e))))
    return errors


def test_drift_triggers_a_retrain_that_is_promoted_and_lowers_the_error(tmp_path: Path) -> None:
    rig = _rig(tmp_path, InlineTrainer())
    errors = _stream(rig)
    c = rig.controller.counters
    assert c.drift_events >= 1 and c.promotions >= 1 and c.swaps >= 1
    # The model serving when the new regime arrived, and the one serving at the end.
    old, new = errors[0][0], rig.engine.groups[-1].version
    assert new != old
    # A drift-triggered retrain trained on the new regime (it waited until the new regime
    # filled half the buffer) and was promoted.
    shift_ts = shifted_series(24, POINTS, SHIFT_AT, seed=2)["shift-000"][0][SHIFT_AT]
    late = [
        j for j in rig.trainer.jobs if max(float(ts[-1]) for ts, _ in j.data.values()) > shift_ts
    ]
    assert late and late[0].trigger == "drift"
    before = np.mean([e for v, e in errors if v == old])
    after = np.mean([e for v, e in errors if v == new])
    print(f"scaled error after the shift: old model {before:.3f}, retrained {after:.3f}")
    assert after < 0.7 * before
    # Registry: the versions kept, the newest current, with its parent and gate metrics.
    entries = {e.version: e for e in rig.registry.entries("global")}
    assert set(entries) >= {old, new}
    assert entries[new].current and not entries[old].current
    assert entries[new].parent is not None and entries[new].parent in entries
    gate = entries[new].info["gate"]
    assert gate["candidate_nll"] < gate["parent_nll"] - 0.01
    # The state layer knows the new version; the older ones stay related (states carry on).
    info = rig.manager.groups[-1]
    assert info.version == new and old in info.related


def test_a_worse_candidate_is_rejected_and_the_old_model_keeps_serving(tmp_path: Path) -> None:
    rig = _rig(tmp_path, InlineTrainer(corrupt=True))
    first = rig.engine.groups[-1].version
    model = rig.engine.groups[-1].model
    _stream(rig)
    c = rig.controller.counters
    assert len(rig.trainer.jobs) >= 1
    assert c.rejections == len(rig.trainer.jobs) and c.promotions == 0 and c.swaps == 0
    assert rig.engine.groups[-1].version == first
    assert rig.engine.groups[-1].model is model
    assert rig.registry.current("global") == first
    assert [e.version for e in rig.registry.entries("global")] == [first]


def test_the_instance_that_is_not_the_trainer_never_trains(tmp_path: Path) -> None:
    rig = _rig(tmp_path, InlineTrainer(), interval_s=60.0)
    _stream(rig, may_train=False)
    assert rig.trainer.jobs == []
    assert rig.controller.counters.drift_events >= 1


def test_schedule_triggers_without_drift(tmp_path: Path) -> None:
    rig = _rig(tmp_path, InlineTrainer(), drift="off", interval_s=3_000.0)
    _stream(rig)
    triggers = {job.trigger for job in rig.trainer.jobs}
    assert triggers == {"schedule"}
    # One every 3,000 s of stream time once the buffer holds 5,000 points (~14,000 s).
    assert 2 <= len(rig.trainer.jobs) <= 5


def test_adopting_published_models(tmp_path: Path) -> None:
    rig = _rig(tmp_path, InlineTrainer())
    group = rig.engine.groups[-1]
    assert not rig.controller.adopt("global", group.version, b"", "promotion")  # already served
    assert not rig.controller.adopt("nope", "v", b"", "promotion")  # unknown group
    assert not rig.controller.adopt("global", "v-bad", b"not an artifact", "promotion")
    assert rig.engine.groups[-1].version == group.version
    data, _ = artifact.to_bytes(
        group.model, rig.engine.normaliser_alpha, {"lineage": [group.version]}, version="v2"
    )
    assert rig.controller.adopt("global", "v2", data, "rollback")
    assert rig.engine.groups[-1].version == "v2"
    assert rig.registry.current("global") == "v2"
    assert rig.registry.find("v2").info["reason"] == "rollback"


def test_config_memory_bound_of_the_buffer(tmp_path: Path) -> None:
    rig = _rig(tmp_path, InlineTrainer(), buffer_series=100, buffer_points=64)
    assert rig.controller.buffer.nbytes == 100 * 64 * 16


@pytest.mark.parametrize("field", ["holdout_fraction", "early_stop_fraction"])
def test_fractions_are_validated(field: str) -> None:
    with pytest.raises(ValueError):
        RetrainConfig(**{field: 0.95})
