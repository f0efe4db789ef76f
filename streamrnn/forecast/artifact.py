"""Versioned model artifacts: weights, architecture, feature spec and training metadata.

An artifact is one file written with ``torch.save`` holding only plain values and tensors,
and read back with ``torch.load(weights_only=True)`` (no pickled code runs on load). Its
feature spec must equal the running code's, so a model is never fed features it was not
trained on. Pure torch; knows nothing of Kafka.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from streamrnn.forecast.gru import ModelSpec, RecurrentForecaster
from streamrnn.stages.features import (
    GAP_ALPHA,
    INPUT_CLIP,
    STEP_ALPHA,
    STEP_FLOOR,
    TIME_FEATURES,
    VALUE_FEATURES,
)

__all__ = [
    "ARTIFACT_FORMAT",
    "ArtifactError",
    "LoadedModel",
    "feature_spec",
    "from_bytes",
    "load",
    "save",
    "to_bytes",
]

ARTIFACT_FORMAT = "streamrnn-model/1"


class ArtifactError(ValueError):
    """The file is not a usable model artifact; the message says why."""


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model ready to step, with the facts stored beside its weights."""

    model: RecurrentForecaster
    version: str
    normaliser_alpha: float
    metadata: dict[str, Any] = field(default_factory=dict)


def feature_spec() -> dict[str, Any]:
    """What the model's inputs mean; an artifact is only loaded if this matches."""
    return {
        "value_features": list(VALUE_FEATURES),
        "time_features": list(TIME_FEATURES),
        "gap_alpha": GAP_ALPHA,
        "step_alpha": STEP_ALPHA,
        "step_floor": STEP_FLOOR,
        "input_clip": INPUT_CLIP,
    }


def to_bytes(
    model: RecurrentForecaster,
    normaliser_alpha: float,
    metadata: dict[str, Any],
    version: str | None = None,
) -> tuple[bytes, str]:
    """An artifact of ``model`` as bytes, and its version (derived from the weights and the
    time if not given). What :func:`save` writes; also what the model topic carries."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if version is None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        digest = hashlib.sha256(buffer.getvalue()).hexdigest()[:10]
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        spec = model.spec
        version = f"{spec.cell}-h{spec.hidden_size}-l{spec.num_layers}-{stamp}-{digest}"
    doc = {
        "format": ARTIFACT_FORMAT,
        "version": version,
        "spec": model.spec.as_dict(),
        "features": feature_spec(),
        "normaliser_alpha": normaliser_alpha,
        "metadata": metadata,
        "state_dict": state,
    }
    out = io.BytesIO()
    torch.save(doc, out)
    return out.getvalue(), version


def save(
    path: Path,
    model: RecurrentForecaster,
    normaliser_alpha: float,
    metadata: dict[str, Any],
    version: str | None = None,
) -> str:
    """Write ``model`` to ``path`` atomically; returns its version (see :func:`to_bytes`)."""
    data, version = to_bytes(model, normaliser_alpha, metadata, version)
    write_atomic(path, data)
    return version


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename (never a partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def load(path: Path) -> LoadedModel:
    """Read an artifact written by :func:`save`.

    Raises:
        ArtifactError: missing file, not an artifact, or a feature spec this code differs from.
    """
    if not path.is_file():
        raise ArtifactError(f"model artifact {path} does not exist")
    return from_bytes(path.read_bytes(), str(path))


def from_bytes(data: bytes, origin: str) -> LoadedModel:
    """Read an artifact from bytes (``origin`` names where they came from, for errors).

    Raises:
        ArtifactError: not an artifact, or a feature spec this code differs from.
    """
    path = origin
    try:
        doc = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        # torch's own message suggests weights_only=False: unsafe advice for an unknown file.
        raise ArtifactError(
            f"{path} is not a model artifact (unreadable as a safe torch file:"
            f" {type(exc).__name__})"
        ) from exc
    if not isinstance(doc, dict) or doc.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"{path} is not a {ARTIFACT_FORMAT} artifact")
    missing = {"version", "spec", "features", "normaliser_alpha", "metadata", "state_dict"} - set(
        doc
    )
    if missing:
        raise ArtifactError(f"{path} is damaged: missing {sorted(missing)}")
    if doc["features"] != feature_spec():
        raise ArtifactError(
            f"{path} was trained on features {doc['features']}, this code computes {feature_spec()}"
        )
    try:
        model = RecurrentForecaster(ModelSpec(**doc["spec"]))
        model.load_state_dict(doc["state_dict"])
    except (TypeError, RuntimeError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise ArtifactError(f"{path} does not fit this code's model: {first_line}") from exc
    model.eval()
    return LoadedModel(model, str(doc["version"]), float(doc["normaliser_alpha"]), doc["metadata"])
