"""Which model each group serves, and which instance retrains.

Every instance serves the newest model published on the group's model topic: all of them at
start (:meth:`ModelSync.adopt_published`), and then whatever is published later, read about
once a second (:data:`MODEL_CHECK_INTERVAL_S`) between two batches. One instance of the
consumer group trains: the one assigned partition 0 of the first input topic, so the role
moves with a rebalance and never needs an election of its own (a retrain it publishes
reaches the others through the topic). Knows nothing of torch; the retrain controller
swaps the models.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from streamrnn.kafka.model_topic import ModelTopic
from streamrnn.logs import get_logger
from streamrnn.retrain.controller import RetrainController

__all__ = ["MODEL_CHECK_INTERVAL_S", "ModelSync"]

log = get_logger("daemon")

#: Seconds between checks of the model topic and of which instance trains.
MODEL_CHECK_INTERVAL_S = 1.0


class ModelSync:
    """The model topic and the trainer role, driven by the consume loop."""

    def __init__(
        self,
        models: ModelTopic,
        controller: RetrainController,
        trainer_partition: tuple[str, int],
        retrain_enabled: bool,
    ) -> None:
        """``trainer_partition``: the (topic, partition) whose owner trains."""
        self._models = models
        self._controller = controller
        self._trainer_partition = trainer_partition
        self._retrain_enabled = retrain_enabled
        #: Whether this instance holds the trainer partition (as of the last check).
        self.trainer = False
        self._next_check = 0.0

    def adopt_published(self) -> None:
        """Serve the newest published model of each group (at start, before consuming)."""
        for record in self._models.read_latest().values():
            self._controller.adopt(record.group, record.version, record.artifact, record.reason)

    def step(self, assignment: Callable[[], Sequence[tuple[str, int]]]) -> None:
        """Between two batches: about once a second adopt newly published models and
        follow the trainer role (``assignment``: the partitions this instance holds);
        then let the controller collect or start a retrain."""
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + MODEL_CHECK_INTERVAL_S
            for record in self._models.poll():
                self._controller.adopt(record.group, record.version, record.artifact, record.reason)
            owns = self._trainer_partition in assignment()
            if owns != self.trainer:
                self.trainer = owns
                log.info("training role", trainer=owns and self._retrain_enabled)
        self._controller.tick(self.trainer)
