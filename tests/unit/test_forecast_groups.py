"""Model groups (routing by series-name pattern, own states, own artifacts) and k-step horizons."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from streamrnn.config import ConfigError, ModelConfig, Settings, load_settings
from streamrnn.decode import DecodedMessage
from streamrnn.engine.build import build_chain, build_engine
from streamrnn.engine.engine import Engine, EngineBatchResult, ModelGroup
from streamrnn.forecast import artifact
from streamrnn.forecast.gru import ModelSpec, RecurrentForecaster

T0 = 1_700_000_000.0
STEP = 10.0
ATOL = 1e-5


def _engine(**model: Any) -> Engine:
    return build_engine(Settings(model={"hidden_size": 16, **model}))


def _window(
    series: str, ts: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray
) -> DecodedMessage:
    return DecodedMessage(series, [float(t) for t in ts], [float(v) for v in values], None)


def _times(n: int, start: float = T0, step: float = STEP) -> np.ndarray:
    return start + step * np.arange(n)


def _smooth(n: int, seed: int = 0, level: float = 5.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return level + np.sin(np.arange(n) / 4.0) + 0.05 * rng.standard_normal(n)


def _rows(result: EngineBatchResult, messages: Sequence[DecodedMessage], series: str) -> Any:
    return np.array([messages[i].series == series for i in result.message_index], dtype=bool)


def _group_names(engine: Engine, result: EngineBatchResult) -> list[str]:
    return [engine.groups[int(g)].name for g in result.group]


def _save_group_artifact(path: Path, version: str, hidden_size: int = 8) -> RecurrentForecaster:
    torch.manual_seed(42)
    model = RecurrentForecaster(ModelSpec(hidden_size=hidden_size))
    generator = torch.Generator().manual_seed(43)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=generator))
    artifact.save(path, model, 0.01, {}, version=version)
    return model.eval()


CPU_GROUP = {"groups": [{"name": "cpu", "pattern": "*.cpu"}]}


def _cpu_batch() -> list[DecodedMessage]:
    return [
        _window("web.cpu", _times(12), _smooth(12, seed=1)),
        _window("web.mem", _times(12), _smooth(12, seed=1)),
    ]


# --- routing ---------------------------------------------------------------------------------


def test_group_of_routes_matching_series_to_the_group_and_others_to_global() -> None:
    engine = _engine(**CPU_GROUP)
    assert [g.name for g in engine.groups] == ["cpu", "global"]
    assert engine.groups[-1].pattern is None
    assert engine.group_of("web.cpu").name == "cpu"
    assert engine.group_of("db-1.cpu").name == "cpu"
    assert engine.group_of("web.mem").name == "global"
    assert engine.group_of("web.cpu.total").name == "global"  # pattern matches the whole name
    assert engine.group_of("WEB.CPU").name == "global"  # case-sensitive


def test_group_of_takes_the_first_matching_group_in_configured_order() -> None:
    engine = _engine(
        groups=[
            {"name": "web-cpu", "pattern": "web.cpu"},
            {"name": "cpu", "pattern": "*.cpu"},
            {"name": "web", "pattern": "web.*"},
            {"name": "hosts", "pattern": "host[12].*"},
        ]
    )
    assert engine.group_of("web.cpu").name == "web-cpu"
    assert engine.group_of("db.cpu").name == "cpu"
    assert engine.group_of("web.mem").name == "web"
    assert engine.group_of("host2.disk").name == "hosts"
    assert engine.group_of("host3.disk").name == "global"


def test_without_groups_everything_is_global() -> None:
    engine = _engine()
    assert [g.name for g in engine.groups] == ["global"]
    result = engine.process(_cpu_batch())
    assert _group_names(engine, result) == ["global"] * len(result)


def test_results_carry_the_group_of_each_series() -> None:
    engine = _engine(**CPU_GROUP)
    batch = _cpu_batch()
    result = engine.process(batch)
    names = np.array(_group_names(engine, result))
    assert set(names[_rows(result, batch, "web.cpu")]) == {"cpu"}
    assert set(names[_rows(result, batch, "web.mem")]) == {"global"}


def test_each_group_keeps_its_own_hidden_state_column() -> None:
    engine = _engine(**CPU_GROUP)
    engine.process(_cpu_batch())
    cpu_slot, mem_slot = engine.table.slot_of("web.cpu"), engine.table.slot_of("web.mem")
    assert cpu_slot is not None and mem_slot is not None
    cpu_states = engine.table.column("state.cpu")
    global_states = engine.table.column("state.global")
    assert np.abs(cpu_states[cpu_slot]).max() > 0
    assert not global_states[cpu_slot].any()  # the cpu series never touches the global column
    assert np.abs(global_states[mem_slot]).max() > 0
    assert not cpu_states[mem_slot].any()
    np.testing.assert_array_equal(engine.hidden_state("web.cpu"), cpu_states[cpu_slot])


def test_group_without_artifact_shares_the_global_weights_with_its_own_states() -> None:
    grouped, plain = _engine(**CPU_GROUP), _engine()
    assert grouped.groups[0].model is grouped.groups[-1].model
    assert grouped.groups[0].version == grouped.model_version
    batches = [_cpu_batch(), [_window("web.cpu", [T0 + 200.0], [5.5])]]
    for batch in batches:
        got, expected = grouped.process(batch), plain.process(batch)
        np.testing.assert_allclose(got.forecast, expected.forecast, atol=ATOL, rtol=0)
    grouped_state, plain_state = grouped.hidden_state("web.cpu"), plain.hidden_state("web.cpu")
    assert grouped_state is not None and plain_state is not None
    np.testing.assert_allclose(grouped_state, plain_state, atol=ATOL)


def test_group_with_its_own_artifact_is_built_with_that_model_and_version(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cpu.pt"
    _save_group_artifact(path, "cpu-v1", hidden_size=8)
    engine = _engine(groups=[{"name": "cpu", "pattern": "*.cpu", "artifact": str(path)}])
    cpu, glob = engine.groups
    assert cpu.version == "cpu-v1" and cpu.model.spec.hidden_size == 8
    assert glob.version == engine.model_version and glob.version.startswith("untrained-")
    assert engine.group_of("web.cpu").version == "cpu-v1"
    assert engine.table.column("state.cpu").shape[1:] == (1, 8)
    assert engine.table.column("state.global").shape[1:] == (1, 16)


def test_results_of_a_group_with_its_own_artifact_carry_that_artifacts_version(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cpu.pt"
    _save_group_artifact(path, "cpu-v1")
    engine = _engine(groups=[{"name": "cpu", "pattern": "*.cpu", "artifact": str(path)}])
    batch = _cpu_batch()
    result = engine.process(batch)
    versions = np.array([engine.groups[int(g)].version for g in result.group])
    assert set(versions[_rows(result, batch, "web.cpu")]) == {"cpu-v1"}
    assert set(versions[_rows(result, batch, "web.mem")]) == {engine.model_version}
    state = engine.hidden_state("web.cpu")
    assert state is not None and state.shape == (1, 8)


def test_series_of_a_group_with_its_own_artifact_are_forecast_by_that_model(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cpu.pt"
    _save_group_artifact(path, "cpu-v1")
    grouped = _engine(groups=[{"name": "cpu", "pattern": "*.cpu", "artifact": str(path)}])
    as_global = _engine(artifact=str(path))
    untrained = _engine()
    batch = _cpu_batch()
    got = grouped.process(batch)
    cpu, mem = _rows(got, batch, "web.cpu"), _rows(got, batch, "web.mem")
    np.testing.assert_allclose(
        got.forecast[cpu], as_global.process(batch[:1]).forecast, atol=ATOL, rtol=0
    )
    np.testing.assert_allclose(
        got.forecast[mem], untrained.process(batch[1:]).forecast, atol=ATOL, rtol=0
    )


def test_engine_requires_the_last_group_to_be_the_catch_all() -> None:
    torch.manual_seed(0)
    model = RecurrentForecaster(ModelSpec(hidden_size=4))
    kwargs: dict[str, Any] = {
        "chain": build_chain(Settings().scoring),
        "max_series": 10,
        "normaliser_alpha": 0.01,
    }
    with pytest.raises(ValueError, match="catch-all"):
        Engine(groups=[ModelGroup("cpu", "*.cpu", model, "v")], **kwargs)
    with pytest.raises(ValueError, match="catch-all"):
        Engine(groups=[], **kwargs)


# --- group configuration ----------------------------------------------------------------------


def test_duplicate_group_names_are_rejected() -> None:
    groups = [{"name": "cpu", "pattern": "*.cpu"}, {"name": "cpu", "pattern": "*.load"}]
    with pytest.raises(ValidationError, match="unique"):
        ModelConfig.model_validate({"groups": groups})
    with pytest.raises(ConfigError, match=r"model: .*unique.*\['cpu', 'cpu'\]"):
        load_settings(None, model={"groups": groups})


def test_group_named_global_is_rejected() -> None:
    with pytest.raises(ConfigError, match="not 'global'"):
        load_settings(None, model={"groups": [{"name": "global", "pattern": "*"}]})


@pytest.mark.parametrize(
    ("group", "field"),
    [
        ({"name": "has space", "pattern": "*"}, "name"),
        ({"name": "", "pattern": "*"}, "name"),
        ({"name": "cpu", "pattern": ""}, "pattern"),
        ({"name": "cpu"}, "pattern"),
        ({"name": "cpu", "pattern": "*", "weights": "x.pt"}, "weights"),
    ],
)
def test_invalid_group_entries_are_rejected_naming_the_field(
    group: dict[str, str], field: str
) -> None:
    with pytest.raises(ConfigError, match=rf"model\.groups\.0\.{field}"):
        load_settings(None, model={"groups": [group]})


def test_groups_load_from_yaml(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "model:\n  groups:\n    - name: cpu\n      pattern: '*.cpu'\n"
        "    - name: mem\n      pattern: '*.mem'\n      artifact: models/mem.pt\n"
    )
    groups = load_settings(path).model.groups
    assert [(g.name, g.pattern) for g in groups] == [("cpu", "*.cpu"), ("mem", "*.mem")]
    assert groups[0].artifact is None and groups[1].artifact == Path("models/mem.pt")


def test_missing_group_artifact_fails_the_build(tmp_path: Path) -> None:
    settings = Settings(
        model={"groups": [{"name": "cpu", "pattern": "*.cpu", "artifact": tmp_path / "x.pt"}]}
    )
    with pytest.raises(artifact.ArtifactError, match="does not exist"):
        build_engine(settings)


# --- horizon ---------------------------------------------------------------------------------


def _horizon_row(result: EngineBatchResult, engine: Engine, series: str) -> int:
    assert result.horizon_slots is not None
    slot = engine.table.slot_of(series)
    (row,) = np.flatnonzero(result.horizon_slots == slot)
    return int(row)


def test_no_horizon_unless_configured() -> None:
    result = _engine().process(_cpu_batch())
    assert result.horizon is None and result.horizon_slots is None


def test_horizon_steps_by_the_typical_interval_with_widening_spread() -> None:
    engine = _engine(horizon_points=5)
    batch = [
        _window("a", _times(20), _smooth(20)),
        _window("slow", _times(20, step=60.0), _smooth(20, seed=2, level=1e4)),
    ]
    result = engine.process(batch)
    horizon = result.horizon
    assert horizon is not None and result.horizon_slots is not None
    assert horizon.ts.shape == horizon.mean.shape == horizon.spread.shape == (2, 5)
    for series, step in (("a", STEP), ("slow", 60.0)):
        row = _horizon_row(result, engine, series)
        last_ts = _times(20, step=step)[-1]
        np.testing.assert_allclose(horizon.ts[row], last_ts + step * np.arange(1, 6), rtol=1e-9)
        assert (np.diff(horizon.ts[row]) > 0).all()
        assert np.isfinite(horizon.mean[row]).all()
        spread = horizon.spread[row]
        assert (spread > 0).all() and (np.diff(spread) >= 0).all()
        # Untrained: a persistence-like path near the last value.
        last_value = batch[0 if series == "a" else 1].values[-1]
        assert np.abs(horizon.mean[row] - last_value).max() < 5 * spread[-1]


def test_horizon_is_nan_for_a_series_with_fewer_than_two_points() -> None:
    engine = _engine(horizon_points=3)
    batch = [_window("one", [T0], [7.0]), _window("two", [T0, T0 + 5.0], [7.0, 8.0])]
    result = engine.process(batch)
    assert result.horizon is not None
    one = _horizon_row(result, engine, "one")
    assert np.isnan(result.horizon.mean[one]).all()
    assert np.isnan(result.horizon.spread[one]).all()
    two = _horizon_row(result, engine, "two")
    assert np.isfinite(result.horizon.mean[two]).all()
    np.testing.assert_allclose(result.horizon.ts[two], T0 + 5.0 + 5.0 * np.arange(1, 4))
    # The single-point series gets a horizon once its second point arrives.
    later = engine.process([_window("one", [T0 + 30.0], [7.5])])
    assert later.horizon is not None
    assert np.isfinite(later.horizon.mean[0]).all()


def test_horizon_only_covers_the_series_of_the_batch() -> None:
    engine = _engine(horizon_points=2)
    engine.process(_cpu_batch())
    result = engine.process([_window("web.mem", [T0 + 500.0], [5.0])])
    assert result.horizon is not None and result.horizon_slots is not None
    assert result.horizon_slots.tolist() == [engine.table.slot_of("web.mem")]
    assert result.horizon.mean.shape == (1, 2)


def test_first_horizon_step_equals_the_forecast_of_a_point_arriving_on_time() -> None:
    engine = _engine(horizon_points=4)
    values = _smooth(25, seed=3)
    result = engine.process([_window("a", _times(25), values)])
    assert result.horizon is not None
    expected_ts = result.horizon.ts[0, 0]
    expected_mean = result.horizon.mean[0, 0]
    expected_spread = result.horizon.spread[0, 0]
    nxt = engine.process([_window("a", [expected_ts], [values[-1]])])
    assert nxt.forecast[0] == pytest.approx(expected_mean, rel=1e-5, abs=1e-6)
    assert nxt.spread[0] == pytest.approx(expected_spread, rel=1e-5)


def test_horizon_does_not_change_the_states_or_the_next_forecasts() -> None:
    with_horizon, without = _engine(horizon_points=6), _engine()
    batches = [
        _cpu_batch(),
        [_window("web.cpu", [T0 + 130.0, T0 + 140.0], [5.1, 5.3])],
        [_window("web.mem", [T0 + 300.0], [4.0])],
    ]
    for batch in batches:
        got, expected = with_horizon.process(batch), without.process(batch)
        np.testing.assert_array_equal(got.forecast, expected.forecast)
        np.testing.assert_array_equal(got.score, expected.score)
    for series in ("web.cpu", "web.mem"):
        np.testing.assert_array_equal(
            with_horizon.hidden_state(series), without.hidden_state(series)
        )


def test_horizon_follows_an_irregular_series_typical_interval() -> None:
    engine = _engine(horizon_points=3)
    rng = np.random.default_rng(4)
    ts = T0 + np.cumsum(rng.uniform(5.0, 15.0, 40))
    result = engine.process([_window("a", ts, _smooth(40))])
    assert result.horizon is not None
    slot = engine.table.slot_of("a")
    typical = float(np.exp(engine.table.column("log_gap_mean")[slot]))
    assert 5.0 < typical < 15.0
    np.testing.assert_allclose(np.diff(result.horizon.ts[0]), typical, atol=1e-5)
    assert result.horizon.ts[0, 0] == pytest.approx(ts[-1] + typical)
