"""The pieces of the synthetic pre-training corpus (:mod:`streamrnn.pretrain_corpus`).

* :mod:`.sampling` — when a series is sampled: nominal interval, jitter, gaps;
* :mod:`.noise` — shared random building blocks: log-uniform scales, AR(1), bursts;
* :mod:`.load` — the traffic a service sees: daily/weekly cycles, holidays, trend;
* :mod:`.traffic` — request rates, bursty event counts, latencies;
* :mod:`.resources` — CPU and memory utilisation, queue depths;
* :mod:`.counters` — monotone counters with restarts and their Prometheus-style rates;
* :mod:`.gauges` — slowly trending gauges, flat-lines with rare steps, sensors;
* :mod:`.families` — the family registry and the mix the corpus draws from.

Pure numpy (and scipy.signal for the AR recursions): nothing here knows of Kafka, torch,
pydantic or structlog.
"""
