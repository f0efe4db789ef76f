"""Model artifacts: save/load round trip through an engine, versions, and refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from streamrnn.config import Settings, load_settings
from streamrnn.decode import DecodedMessage
from streamrnn.engine.build import build_chain, build_engine, untrained_model
from streamrnn.engine.engine import Engine, EngineBatchResult, ModelGroup
from streamrnn.forecast import artifact
from streamrnn.forecast.artifact import ARTIFACT_FORMAT, ArtifactError, feature_spec
from streamrnn.forecast.gru import ModelSpec, RecurrentForecaster

T0 = 1_700_000_000.0


def _trained_looking(spec: ModelSpec, seed: int = 0) -> RecurrentForecaster:
    """A model whose weights differ from any seeded initialisation."""
    torch.manual_seed(seed)
    model = RecurrentForecaster(spec)
    generator = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=generator))
    return model.eval()


def _batches() -> list[list[DecodedMessage]]:
    rng = np.random.default_rng(0)
    out = []
    for b in range(3):
        batch = []
        for s, scale in enumerate([1.0, 1e4, 1e-2]):
            n = 15
            ts = T0 + 1000.0 * b * 15 + 10.0 * np.arange(n) * (s + 1) + rng.uniform(0, 2, n)
            values = scale * (5 + np.sin(np.arange(n) / 3.0) + 0.1 * rng.standard_normal(n))
            batch.append(DecodedMessage(f"s{s}", ts.tolist(), values.tolist(), None))
        out.append(batch)
    return out


def _run(engine: Engine) -> list[EngineBatchResult]:
    return [engine.process(batch) for batch in _batches()]


def _engine_over(model: RecurrentForecaster) -> Engine:
    """An engine serving ``model`` from memory, otherwise configured as by build_engine."""
    return Engine(
        groups=[ModelGroup("global", None, model, "in-memory")],
        chain=build_chain(Settings().scoring),
        max_series=100,
        normaliser_alpha=0.01,
    )


def _save(tmp_path: Path, model: RecurrentForecaster, name: str = "model.pt", **kw: Any) -> Path:
    path = tmp_path / name
    artifact.save(path, model, kw.pop("normaliser_alpha", 0.01), kw.pop("metadata", {}), **kw)
    return path


# --- round trip ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec(hidden_size=16),
        ModelSpec(cell="lstm", hidden_size=8, num_layers=2, decay=True),
        ModelSpec(cell="gru", hidden_size=12, num_layers=3, decay=False, time_delta_features=False),
    ],
    ids=["gru", "lstm-2-layers", "gru-3-layers-plain"],
)
def test_save_load_round_trip_gives_identical_forecasts_through_an_engine(
    tmp_path: Path, spec: ModelSpec
) -> None:
    model = _trained_looking(spec)
    path = _save(tmp_path, model, version="test-v1")

    loaded_engine = build_engine(Settings(model={"artifact": path}))
    direct_engine = _engine_over(model)
    for got, expected in zip(_run(loaded_engine), _run(direct_engine), strict=True):
        for name in ("forecast", "spread", "score", "severity"):
            np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), name)
    np.testing.assert_array_equal(
        loaded_engine.hidden_state("s1"), direct_engine.hidden_state("s1")
    )
    assert loaded_engine.groups[-1].model.spec == spec


def test_loaded_model_has_the_same_spec_weights_and_is_in_eval_mode(tmp_path: Path) -> None:
    spec = ModelSpec(cell="lstm", hidden_size=8, num_layers=2, decay=True)
    model = _trained_looking(spec, seed=3)
    path = _save(tmp_path, model, normaliser_alpha=0.05, metadata={"note": "x", "n": [1, 2]})
    loaded = artifact.load(path)
    assert loaded.model.spec == spec
    assert not loaded.model.training
    assert loaded.normaliser_alpha == 0.05
    assert loaded.metadata == {"note": "x", "n": [1, 2]}
    expected = model.state_dict()
    got = loaded.model.state_dict()
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def test_artifact_normaliser_alpha_overrides_the_configured_one(tmp_path: Path) -> None:
    path = _save(tmp_path, _trained_looking(ModelSpec(hidden_size=8)), normaliser_alpha=0.2)
    engine = build_engine(Settings(model={"artifact": path}, series={"normaliser_alpha": 0.01}))
    assert engine.normaliser_alpha == 0.2


def test_load_settings_override_points_the_engine_at_the_artifact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./config.yaml
    path = _save(tmp_path, _trained_looking(ModelSpec(hidden_size=8)), version="from-override")
    settings = load_settings(None, model={"artifact": str(path)})
    assert build_engine(settings).model_version == "from-override"


# --- versions --------------------------------------------------------------------------------


def test_given_version_is_recorded_and_exposed_by_the_engine_and_its_results(
    tmp_path: Path,
) -> None:
    path = _save(tmp_path, _trained_looking(ModelSpec(hidden_size=8)), version="cpu-2024-06")
    assert artifact.load(path).version == "cpu-2024-06"
    engine = build_engine(Settings(model={"artifact": path}))
    assert engine.model_version == "cpu-2024-06"
    result = engine.process(_batches()[0])
    assert len(result) > 0
    assert {engine.groups[int(g)].version for g in result.group} == {"cpu-2024-06"}


def test_derived_version_names_the_architecture_and_the_weights(tmp_path: Path) -> None:
    spec = ModelSpec(cell="lstm", hidden_size=8, num_layers=2)
    model = _trained_looking(spec)
    version = artifact.save(tmp_path / "a.pt", model, 0.01, {})
    assert version.startswith("lstm-h8-l2-")
    assert artifact.load(tmp_path / "a.pt").version == version
    # Same weights: same digest; other weights: another digest.
    again = artifact.save(tmp_path / "b.pt", model, 0.01, {})
    other = artifact.save(tmp_path / "c.pt", _trained_looking(spec, seed=1), 0.01, {})
    assert version.rsplit("-", 1)[1] == again.rsplit("-", 1)[1]
    assert version.rsplit("-", 1)[1] != other.rsplit("-", 1)[1]


def test_untrained_engine_version_names_the_configuration() -> None:
    engine = build_engine(Settings(model={"hidden_size": 8, "num_layers": 2, "seed": 5}))
    assert engine.model_version == "untrained-gru-h8-l2-decay-seed5"


def test_save_leaves_no_temporary_file_and_creates_parent_folders(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "model.pt"
    artifact.save(path, untrained_model(Settings(model={"hidden_size": 4}).model), 0.01, {})
    assert path.is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]


def test_artifact_holds_only_plain_values_and_tensors(tmp_path: Path) -> None:
    path = _save(tmp_path, _trained_looking(ModelSpec(hidden_size=8)), version="v")
    doc = torch.load(path, weights_only=True)
    assert doc["format"] == ARTIFACT_FORMAT
    assert doc["features"] == feature_spec()
    assert doc["spec"] == ModelSpec(hidden_size=8).as_dict()


# --- refusals --------------------------------------------------------------------------------


def test_missing_artifact_raises_artifact_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.pt"
    with pytest.raises(ArtifactError, match="does not exist") as excinfo:
        artifact.load(path)
    assert str(path) in str(excinfo.value)
    with pytest.raises(ArtifactError, match="does not exist"):
        build_engine(Settings(model={"artifact": path}))


@pytest.mark.parametrize("content", ["series,ts,value\na,1,2\n", "not a model\n", ""])
def test_file_that_is_not_a_torch_file_raises_artifact_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "model.pt"
    path.write_text(content)
    with pytest.raises(ArtifactError, match="is not a model artifact") as excinfo:
        artifact.load(path)
    assert str(path) in str(excinfo.value)


def test_not_an_artifact_message_is_one_line_without_unsafe_advice(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_text("not a model\n")
    with pytest.raises(ArtifactError, match="is not a model artifact") as excinfo:
        artifact.load(path)
    message = str(excinfo.value)
    assert "\n" not in message
    assert "weights_only` set to `False`" not in message


@pytest.mark.parametrize(
    "doc",
    [
        {"format": "something-else/1"},
        {"weights": torch.zeros(3)},
        [1, 2, 3],
        torch.zeros(2),
    ],
    ids=["other-format", "no-format", "list", "tensor"],
)
def test_torch_file_that_is_not_an_artifact_raises_artifact_error(
    tmp_path: Path, doc: object
) -> None:
    path = tmp_path / "model.pt"
    torch.save(doc, path)
    with pytest.raises(ArtifactError, match=f"is not a {ARTIFACT_FORMAT} artifact"):
        artifact.load(path)


def test_pickled_code_is_refused_not_run(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"format": ARTIFACT_FORMAT, "obj": ModelSpec()}, path)
    with pytest.raises(ArtifactError, match="is not a model artifact"):
        artifact.load(path)


@pytest.mark.parametrize(
    "change",
    [
        {"time_features": ["log_gap_ratio", "tod_sin"]},
        {"gap_alpha": 0.5},
        {"input_clip": 5.0},
    ],
    ids=["time-features", "gap-alpha", "input-clip"],
)
def test_feature_spec_mismatch_raises_artifact_error_saying_both_specs(
    tmp_path: Path, change: dict[str, Any]
) -> None:
    path = _save(tmp_path, _trained_looking(ModelSpec(hidden_size=8)))
    doc = torch.load(path, weights_only=True)
    doc["features"] = {**doc["features"], **change}
    torch.save(doc, path)
    with pytest.raises(ArtifactError, match="was trained on features") as excinfo:
        artifact.load(path)
    message = str(excinfo.value)
    assert str(path) in message and "this code computes" in message
    with pytest.raises(ArtifactError):
        build_engine(Settings(model={"artifact": path}))


def test_artifact_with_missing_fields_raises_artifact_error(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save({"format": ARTIFACT_FORMAT, "version": "v"}, path)
    with pytest.raises(ArtifactError):
        artifact.load(path)


def test_artifact_with_an_unknown_spec_field_raises_artifact_error(tmp_path: Path) -> None:
    path = _save(tmp_path, _trained_looking(ModelSpec(hidden_size=8)))
    doc = torch.load(path, weights_only=True)
    doc["spec"]["dropout"] = 0.1
    torch.save(doc, path)
    with pytest.raises(ArtifactError):
        artifact.load(path)


def test_artifact_whose_weights_do_not_fit_its_spec_raises_artifact_error(tmp_path: Path) -> None:
    path = _save(tmp_path, _trained_looking(ModelSpec(hidden_size=8)))
    doc = torch.load(path, weights_only=True)
    doc["spec"]["hidden_size"] = 16
    torch.save(doc, path)
    with pytest.raises(ArtifactError):
        artifact.load(path)


def test_run_with_a_missing_artifact_exits_2_with_a_one_line_message(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMRNN_")}
    env["STREAMRNN_MODEL__ARTIFACT"] = str(tmp_path / "nope.pt")
    env["STREAMRNN_KAFKA__BOOTSTRAP_SERVERS"] = "127.0.0.1:1"
    proc = subprocess.run(
        [sys.executable, "-m", "streamrnn", "run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "nope.pt" in lines[0]
