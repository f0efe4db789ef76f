"""Model sync: published models are adopted, and the owner of the trainer partition trains."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from streamrnn.kafka.model_topic import ModelRecord, ModelTopic
from streamrnn.model_sync import ModelSync
from streamrnn.retrain.controller import RetrainController


@dataclass
class FakeTopic:
    latest: dict[str, Any]
    published: list[Any] = field(default_factory=list)

    def read_latest(self) -> dict[str, Any]:
        return self.latest

    def poll(self) -> list[Any]:
        out, self.published = self.published, []
        return out


@dataclass
class FakeController:
    adopted: list[tuple[str, str]] = field(default_factory=list)
    ticks: list[bool] = field(default_factory=list)

    def adopt(self, group: str, version: str, data: bytes, reason: str) -> bool:
        self.adopted.append((group, version))
        return True

    def tick(self, may_train: bool) -> None:
        self.ticks.append(may_train)


def _record(group: str, version: str) -> ModelRecord:
    return ModelRecord(group, version, b"", "test", publisher="other", offset=0)


def test_models_are_adopted_and_the_trainer_partition_owner_trains() -> None:
    topic = FakeTopic({"global": _record("global", "v1")})
    controller = FakeController()
    sync = ModelSync(cast(ModelTopic, topic), cast(RetrainController, controller), ("in", 0), True)
    sync.adopt_published()
    assert controller.adopted == [("global", "v1")]

    topic.published = [_record("global", "v2")]
    sync.step(lambda: [("in", 0), ("in", 1)])
    assert controller.adopted[-1] == ("global", "v2") and sync.trainer
    assert controller.ticks == [True]

    # Checked about once a second: a lost partition is noticed at the next check.
    sync.step(lambda: [("in", 1)])
    assert controller.ticks == [True, True]
    sync._next_check = 0.0
    sync.step(lambda: [("in", 1)])
    assert not sync.trainer and controller.ticks[-1] is False
