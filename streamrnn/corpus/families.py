"""The value families of the pre-training corpus and the mix they are drawn in.

Each series of the corpus draws one family with the probability listed here; the family's
generator fills the series' timestamps with values. The mix leans towards what a metrics
platform carries most (request rates, latencies, utilisation, counter rates) while
keeping every shape the model must not be surprised by.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from streamrnn.arrays import FloatArray
from streamrnn.corpus.counters import counter_rate
from streamrnn.corpus.gauges import flat_line, sensor, trending_gauge
from streamrnn.corpus.jobs import scheduled_work
from streamrnn.corpus.resources import queue_depth, utilisation
from streamrnn.corpus.traffic import event_counts, latency, request_rate

__all__ = ["FAMILIES", "Family", "FamilyGenerator", "family_names"]

#: A family's generator: (random generator, timestamps in epoch s) -> one value per
#: timestamp, float64.
FamilyGenerator = Callable[[np.random.Generator, FloatArray], FloatArray]


class Family(NamedTuple):
    """One value family: its name (the suffix of its series' names) and its share."""

    name: str
    #: Probability that a series of the corpus belongs to this family.
    probability: float
    generate: FamilyGenerator


#: Every family, with its probability (they sum to 1).
FAMILIES: tuple[Family, ...] = (
    Family("requests", 0.18, request_rate),
    Family("events", 0.11, event_counts),
    Family("latency", 0.12, latency),
    Family("utilisation", 0.12, utilisation),
    Family("queue", 0.07, queue_depth),
    Family("counter", 0.11, counter_rate),
    Family("gauge", 0.06, trending_gauge),
    Family("flat", 0.04, flat_line),
    Family("sensor", 0.07, sensor),
    Family("jobs", 0.12, scheduled_work),
)


def family_names() -> tuple[str, ...]:
    """The family names, in the order of :data:`FAMILIES`."""
    return tuple(family.name for family in FAMILIES)
