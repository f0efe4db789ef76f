"""The detector's per-point stages: the one implementation of its arithmetic.

Each module is one stage of a point's path — features and normaliser (:mod:`.features`,
:mod:`.ewstats`), the recurrent cell with GRU-D decay (:mod:`.cell`), the forecast head
(:mod:`.head`), the standardised residual (:mod:`.residual`), the daily profile
(:mod:`.seasonal`), each calibrator (:mod:`.likelihood`, :mod:`.tail`, :mod:`.evt`, chosen
by :mod:`.calibration`), level novelty (:mod:`.novelty`), the alert rule
(:mod:`.alert_rule`) and the learning policy (:mod:`.learning`) — and owns, in one place,
its parameters (a small named tuple), its per-series state (a named tuple of table columns
with their :class:`~streamrnn.stages.schema.Column` schema), its constants and its
per-point functions, compiled by numba (:mod:`.jit`). :mod:`.chain` composes the scoring
stages of one point; :mod:`streamrnn.engine.kernel` composes everything for a batch. With
``NUMBA_DISABLE_JIT=1`` the same source runs as plain Python (debugging, coverage).

Pure numpy/numba: nothing here knows of Kafka, torch, pydantic or structlog (an
import-linter contract in ``.ci/run`` says so).
"""
