"""The model shipped with streamrnn is the default, loads, and forecasts better than naive."""

from __future__ import annotations

import numpy as np
import pytest

from streamrnn.config import Settings
from streamrnn.decode import DecodedMessage
from streamrnn.engine.build import SHIPPED_MODEL, build_engine
from streamrnn.forecast import artifact
from streamrnn.pretrain_corpus import pretrain_corpus


@pytest.fixture(autouse=True)
def _pretrained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMRNN_MODEL__PRETRAINED", raising=False)


def test_the_shipped_model_is_the_default_and_names_its_origin() -> None:
    assert SHIPPED_MODEL.is_file()
    engine = build_engine(Settings())
    loaded = artifact.load(SHIPPED_MODEL)
    assert engine.model_version == loaded.version
    assert "synthetic" in str(loaded.metadata["data"])


def test_pretrained_false_gives_the_untrained_model() -> None:
    engine = build_engine(Settings(model={"pretrained": False}))
    assert engine.model_version.startswith("untrained-")


def test_the_shipped_model_beats_naive_on_unseen_synthetic_metrics() -> None:
    corpus = pretrain_corpus(16, 1500, seed=12345)  # a seed it was not trained on
    engine = build_engine(Settings())
    messages = [DecodedMessage(n, ts.tolist(), v.tolist(), None) for n, (ts, v) in corpus.items()]
    result = engine.process(messages)
    ratios = []
    for i, (_, values) in enumerate(corpus.values()):
        rows = result.message_index == i
        forecast, actual = result.forecast[rows][300:], values[300:]
        naive = values[299:-1]
        ratios.append(np.mean(np.abs(actual - forecast)) / np.mean(np.abs(actual - naive)))
    # On most series the model beats the last value; on flat or step-like series (where the
    # last value is almost always exactly right) it can be worse, hence the median.
    assert np.median(ratios) < 0.95
