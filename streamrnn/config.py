"""The daemon's configuration: one YAML file, overridden by ``STREAMRNN_*`` variables.

Precedence, highest first: explicit keyword arguments (used by tests), environment
variables (``STREAMRNN_`` prefix, ``__`` between nesting levels, e.g.
``STREAMRNN_KAFKA__BOOTSTRAP_SERVERS=broker:9092``), the YAML file, the defaults below.
Dictionaries merge key by key across sources, so ``STREAMRNN_KAFKA__CLIENT='{"sasl.password":
"..."}'`` adds a secret to the ``kafka.client`` block of the file without repeating it.

The defaults here are the ones documented in the repository's ``config.yaml``; a unit test
keeps the two equal. Every model forbids unknown keys, so a typo is an error, not a silently
ignored setting.

This module knows nothing of Kafka clients or torch: it only validates values.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

__all__ = [
    "ConfigError",
    "ConsumeConfig",
    "KafkaConfig",
    "LoggingConfig",
    "ModelConfig",
    "ScoringConfig",
    "SeriesConfig",
    "Settings",
    "TopicsConfig",
    "load_settings",
]

#: The environment variable that names the config file when ``--config`` is not given.
CONFIG_ENV_VAR = "STREAMRNN_CONFIG"

LibrdkafkaValue = str | int | float | bool


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaConfig(_Section):
    """Where the brokers are and how the clients talk to them."""

    bootstrap_servers: str = Field("127.0.0.1:9092", min_length=1)
    group_id: str = Field("streamrnn", min_length=1)
    #: librdkafka settings given to every client (consumer, producer, admin), verbatim:
    #: ``security.protocol``, ``sasl.mechanism``, ``sasl.username``, ``ssl.ca.location``, ...
    client: dict[str, LibrdkafkaValue] = Field(default_factory=dict)
    #: librdkafka settings for the consumer only (on top of ``client``).
    consumer: dict[str, LibrdkafkaValue] = Field(
        default_factory=lambda: {  # type: ignore[arg-type]
            "auto.offset.reset": "earliest",
            "fetch.queue.backoff.ms": 5,
            "partition.assignment.strategy": "cooperative-sticky",
        }
    )
    #: librdkafka settings for the producer only (on top of ``client``).
    producer: dict[str, LibrdkafkaValue] = Field(
        default_factory=lambda: {  # type: ignore[arg-type]
            "linger.ms": 5,
            "compression.type": "lz4",
            "enable.idempotence": True,
        }
    )

    @model_validator(mode="after")
    def _no_managed_keys(self) -> KafkaConfig:
        managed = {"bootstrap.servers", "group.id", "enable.auto.commit"}
        for block_name in ("client", "consumer", "producer"):
            block: dict[str, LibrdkafkaValue] = getattr(self, block_name)
            clash = managed.intersection(block)
            if clash:
                raise ValueError(
                    f"kafka.{block_name} must not set {sorted(clash)}: use kafka.bootstrap_servers"
                    " and kafka.group_id (the daemon manages offset commits itself)"
                )
        return self


class TopicsConfig(_Section):
    """Topic names. The daemon reads ``input`` and writes ``alerts`` (and ``forecasts``)."""

    input: list[str] = Field(default_factory=lambda: ["metrics"], min_length=1)
    alerts: str = Field("streamrnn-alerts", min_length=1)
    #: When set, every scored point's forecast is published here too (keyed by series).
    forecasts: str | None = None


class ConsumeConfig(_Section):
    """How the consume loop batches its work."""

    #: Messages taken from the client per loop iteration (one model step per series each).
    batch_max_messages: int = Field(5000, ge=1, le=1_000_000)
    #: Longest wait for the first message of a batch, in seconds.
    poll_timeout_s: float = Field(0.5, gt=0, le=60)
    #: Messages larger than this (bytes) are rejected without being parsed.
    max_message_bytes: int = Field(1_048_576, ge=64)


class ModelConfig(_Section):
    """The recurrent forecaster."""

    cell: Literal["gru"] = "gru"
    hidden_size: int = Field(64, ge=1, le=4096)
    num_layers: int = Field(1, ge=1, le=3)
    #: Seed for the weights of an untrained model (no ``artifact``), so runs agree.
    seed: int = 0
    #: torch intra-op threads for the consume loop.
    torch_threads: int = Field(1, ge=1, le=64)


class ScoringConfig(_Section):
    """From residual to anomaly score to alert."""

    #: Points a series must have seen before it may alert; its score is 0 until then.
    warmup_points: int = Field(30, ge=1)
    #: Weight of the newest residual in the series' running residual mean and variance.
    residual_alpha: float = Field(0.02, gt=0, le=1)
    #: Score (a two-sided tail probability, 0..1) at or above which a warning is raised.
    warning_threshold: float = Field(0.999, gt=0, lt=1)
    #: Score at or above which the alert is critical.
    critical_threshold: float = Field(0.99999, gt=0, lt=1)

    @model_validator(mode="after")
    def _ordered(self) -> ScoringConfig:
        if self.critical_threshold < self.warning_threshold:
            raise ValueError(
                "critical_threshold must be >= warning_threshold "
                f"(got {self.critical_threshold} < {self.warning_threshold})"
            )
        return self


class SeriesConfig(_Section):
    """Per-series state limits."""

    #: Live series held in memory by one instance; points of further new series are rejected.
    max_series: int = Field(100_000, ge=1)
    #: Weight of the newest point in the series' running mean and variance (normaliser).
    normaliser_alpha: float = Field(0.01, gt=0, le=1)


class LoggingConfig(_Section):
    """Log level and rendering."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: ``auto``: JSON lines when stdout is not a terminal, readable console output when it is.
    format: Literal["auto", "json", "console"] = "auto"


class Settings(BaseSettings):
    """The whole configuration. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMRNN_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    topics: TopicsConfig = Field(default_factory=TopicsConfig)
    consume: ConsumeConfig = Field(default_factory=ConsumeConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    series: SeriesConfig = Field(default_factory=SeriesConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("yaml_file"):
            sources.append(YamlConfigSettingsSource(settings_cls))
        return tuple(sources)


class ConfigError(Exception):
    """The configuration cannot be used; the message names the field and the problem."""


def resolve_config_path(explicit: str | os.PathLike[str] | None) -> Path | None:
    """The config file to read: ``--config``, else ``$STREAMRNN_CONFIG``, else ``./config.yaml``.

    Returns None when none is given and ``./config.yaml`` does not exist (defaults apply).
    """
    if explicit is not None:
        return Path(explicit)
    from_env = os.environ.get(CONFIG_ENV_VAR)
    if from_env:
        return Path(from_env)
    local = Path("config.yaml")
    return local if local.is_file() else None


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Validate the configuration from ``path`` (see :func:`resolve_config_path`) and env.

    Raises:
        ConfigError: the file is missing or not YAML, or a value is invalid; the message
            names every offending field as a dotted path.
    """
    config_path = resolve_config_path(path)
    settings_cls: type[Settings] = Settings
    if config_path is not None:
        if not config_path.is_file():
            raise ConfigError(f"config file {config_path} does not exist")
        try:
            document = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {config_path} is not valid YAML: {exc}") from exc
        if document is not None and not isinstance(document, dict):
            raise ConfigError(f"config file {config_path} must hold a mapping at the top level")
        settings_cls = type(
            "FileSettings",
            (Settings,),
            {
                "model_config": SettingsConfigDict(
                    {**Settings.model_config, "yaml_file": config_path}
                )
            },
        )
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        source = f" (from {config_path} and STREAMRNN_* variables)" if config_path else ""
        raise ConfigError(_describe(exc) + source) from exc


def _describe(exc: ValidationError) -> str:
    """One message naming each invalid field as ``a.b.c`` with what is wrong with it."""
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "(top level)"
        problem = error["msg"]
        if error["type"] != "extra_forbidden" and "input" in error:
            problem += f", got {error['input']!r}"
        problems.append(f"{field}: {problem}")
    return "invalid config: " + "; ".join(problems)
