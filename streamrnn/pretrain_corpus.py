"""A seeded synthetic corpus that looks like production metrics, to pre-train the model.

The model that ships with streamrnn (``streamrnn/models/default.pt``) is trained on this
corpus only — never on the NAB files it is evaluated on. Every series draws

* its **timestamps** (:mod:`streamrnn.corpus.sampling`): sampled every 10 s, 1, 5, 10 or
  60 minutes with jitter, 15 % irregularly; missed scrapes and 0–4 long gaps (2x–50x);
* one **value family** (:mod:`streamrnn.corpus.families`, probability in brackets):
  request rates (0.18), bursty event counts (0.11), latencies (0.12), CPU/memory
  utilisation (0.12), queue depths (0.07), counter-derived rates (0.11), slowly trending
  gauges (0.06), flat-lines with rare steps (0.04), sensor readings (0.07) and scheduled
  work cycling faster than a day (0.12), each with its own scale, so the corpus spans
  many orders of magnitude.

Series ``i`` is named ``pretrain-{i:04d}-{family}`` (e.g. ``pretrain-0007-latency``) and
drawn from its own random stream, spawned from ``seed``: a series does not depend on how
many others are drawn. :data:`CORPUS_VERSION` names this generator; a trained artifact
records it with the seed (:func:`corpus_record`), and it changes whenever the same seed
would give different series.

Pure numpy; knows nothing of Kafka or torch.
"""

from __future__ import annotations

import numpy as np

from streamrnn.arrays import FloatArray
from streamrnn.corpus.families import FAMILIES, family_names
from streamrnn.corpus.sampling import sample_times

__all__ = [
    "CORPUS_DESCRIPTION",
    "CORPUS_VERSION",
    "corpus_record",
    "family_names",
    "pretrain_corpus",
]

#: Names this generator; bump it whenever the same seed would give different series.
CORPUS_VERSION = "streamrnn-pretrain-v3"
#: One line for artifact metadata and logs.
CORPUS_DESCRIPTION = (
    f"{CORPUS_VERSION}: synthetic production-like metrics ("
    + ", ".join(f"{family.name} {family.probability:.2f}" for family in FAMILIES)
    + "), sampled every 10 s-1 h with jitter, irregular sampling and long gaps"
)


def pretrain_corpus(
    n_series: int, points: int, seed: int
) -> dict[str, tuple[FloatArray, FloatArray]]:
    """``n_series`` series of ``points`` points each: name -> (ts epoch s, values).

    Timestamps are float64 and strictly increasing, values float64 and finite. The same
    ``seed`` gives the same corpus; series ``i`` is the same for any ``n_series > i``.
    """
    if points < 1:
        raise ValueError(f"a series needs at least one point, not {points}")
    probabilities = [family.probability for family in FAMILIES]
    corpus: dict[str, tuple[FloatArray, FloatArray]] = {}
    for i, stream in enumerate(np.random.SeedSequence(seed).spawn(n_series)):
        rng = np.random.default_rng(stream)
        family = FAMILIES[int(rng.choice(len(FAMILIES), p=probabilities))]
        ts = sample_times(rng, points).ts
        corpus[f"pretrain-{i:04d}-{family.name}"] = (ts, family.generate(rng, ts))
    return corpus


def corpus_record(n_series: int, points: int, seed: int) -> dict[str, object]:
    """What an artifact records to name the corpus it was trained on (JSON-able)."""
    return {
        "corpus": CORPUS_VERSION,
        "description": CORPUS_DESCRIPTION,
        "families": {family.name: family.probability for family in FAMILIES},
        "n_series": n_series,
        "points": points,
        "seed": seed,
    }
