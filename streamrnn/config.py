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

import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

__all__ = [
    "AlertConfig",
    "ConfigError",
    "ConsumeConfig",
    "HttpConfig",
    "KafkaConfig",
    "LoggingConfig",
    "ModelConfig",
    "ModelGroupConfig",
    "RetrainConfig",
    "ScoringConfig",
    "SeriesConfig",
    "Settings",
    "TopicsConfig",
    "load_settings",
]

#: The environment variable that names the config file when ``--config`` is not given.
CONFIG_ENV_VAR = "STREAMRNN_CONFIG"

LibrdkafkaValue = str | int | float | bool


#: librdkafka keys the daemon sets itself.
MANAGED_KEYS = frozenset({"bootstrap.servers", "group.id", "enable.auto.commit"})
#: Consumer settings that apply unless the config overrides them one by one.
DEFAULT_CONSUMER: dict[str, LibrdkafkaValue] = {
    "auto.offset.reset": "earliest",
    # The 1000 ms default caps consumption throughput.
    "fetch.queue.backoff.ms": 5,
    # The broker answers a fetch once it has this many bytes for it, or after
    # fetch.wait.max.ms. At the default of 1 byte, every batch a producer appends answers
    # a fetch at once: at 55,000 points/s that was ~0.35 of a core more, for the broker
    # and the daemon together (2-core machine), than fetching at most every 10 ms.
    "fetch.min.bytes": 65536,
    # ... and holds a fetch at most this long, so a point waits at most 10 ms more for it
    # (p50 latency +5 ms). An idle consumer sends 100 fetches/s per broker. A long hold also
    # delays the connection's other requests: at the 500 ms default, a newly assigned
    # partition without a committed offset (its offset lookup queued behind two fetches)
    # started ~1 s late.
    "fetch.wait.max.ms": 10,
    "partition.assignment.strategy": "cooperative-sticky",
}
#: Producer settings that apply unless the config overrides them one by one.
DEFAULT_PRODUCER: dict[str, LibrdkafkaValue] = {
    "linger.ms": 5,
    "compression.type": "lz4",
    "enable.idempotence": True,
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaConfig(_Section):
    """Where the brokers are and how the clients talk to them."""

    bootstrap_servers: str = Field("127.0.0.1:9092", min_length=1)
    group_id: str = Field("streamrnn", min_length=1)
    #: This instance's stable name in the group (static membership, group.instance.id): a
    #: restarted instance takes its partitions back at once, without a rebalance or waiting
    #: for the session of its crashed predecessor to time out. E.g. the pod name of a
    #: StatefulSet. None: dynamic membership.
    instance_id: str | None = Field(None, min_length=1)
    #: librdkafka settings given to every client (consumer, producer, admin), verbatim:
    #: ``security.protocol``, ``sasl.mechanism``, ``sasl.username``, ``ssl.ca.location``, ...
    client: dict[str, LibrdkafkaValue] = Field(default_factory=dict)
    #: librdkafka settings for the consumer only (on top of ``client``), merged key by key
    #: over :data:`DEFAULT_CONSUMER`.
    consumer: dict[str, LibrdkafkaValue] = Field(default_factory=lambda: dict(DEFAULT_CONSUMER))
    #: librdkafka settings for the producer only (on top of ``client``), merged key by key
    #: over :data:`DEFAULT_PRODUCER`.
    producer: dict[str, LibrdkafkaValue] = Field(default_factory=lambda: dict(DEFAULT_PRODUCER))

    @field_validator("client", "consumer", "producer")
    @classmethod
    def _no_managed_keys(
        cls, block: dict[str, LibrdkafkaValue], info: ValidationInfo
    ) -> dict[str, LibrdkafkaValue]:
        clash = MANAGED_KEYS.intersection(block)
        if clash:
            raise ValueError(
                f"must not set {sorted(clash)}: use kafka.bootstrap_servers and kafka.group_id"
                " (the daemon commits offsets itself)"
            )
        defaults = {"consumer": DEFAULT_CONSUMER, "producer": DEFAULT_PRODUCER}.get(
            str(info.field_name), {}
        )
        return {**defaults, **block}


class TopicsConfig(_Section):
    """Topic names. The daemon reads ``input`` and writes ``alerts`` (and ``forecasts``)."""

    input: list[str] = Field(default_factory=lambda: ["metrics"], min_length=1)
    alerts: str = Field("streamrnn-alerts", min_length=1)
    #: When set, every scored point's forecast is published here too (keyed by series).
    forecasts: str | None = None
    #: Every rejected message goes here (None: logged and counted only): its original key and
    #: bytes, with headers naming the reason and the source topic, partition and offset.
    dead_letter: str | None = Field("streamrnn-dead-letter", min_length=1)
    #: Compacted changelog of per-series state, one per input topic ("{group_id}" and
    #: "{topic}" are filled in); same partition count as its input topic.
    changelog: str = Field("{group_id}-{topic}-state", min_length=1)
    #: Compacted topic of promoted models, keyed by model group ("{group_id}" is filled in):
    #: the training instance publishes every promotion (and rollback) here, and every
    #: instance loads the newest model of each group from it, at start-up and while running.
    models: str = Field("{group_id}-models", min_length=1)
    #: Create missing output, dead-letter, changelog and model topics at start-up.
    create: bool = True

    def models_of(self, group_id: str) -> str:
        """The model topic's name."""
        return self.models.format(group_id=group_id)

    def changelog_of(self, input_topic: str, group_id: str) -> str:
        """The changelog topic that holds the state of ``input_topic``'s series."""
        return self.changelog.format(group_id=group_id, topic=input_topic)


class ConsumeConfig(_Section):
    """How the consume loop batches its work."""

    #: Messages taken from the client per loop iteration (one model step per series each).
    batch_max_messages: int = Field(5000, ge=1, le=1_000_000)
    #: Longest wait for the first message of a batch, in seconds.
    poll_timeout_s: float = Field(0.5, gt=0, le=60)
    #: Messages larger than this (bytes) are rejected without being parsed.
    max_message_bytes: int = Field(1_048_576, ge=64)
    #: Points stamped more than this many seconds after the wall clock are rejected.
    max_future_s: float = Field(86_400.0, gt=0)
    #: Points stamped more than this many seconds before the wall clock are rejected
    #: (None: any age is accepted, e.g. to replay history).
    max_age_s: float | None = Field(None, gt=0)
    #: Reject messages with top-level keys outside the schema (else they are ignored).
    reject_unknown_fields: bool = False
    #: Values larger than this in magnitude are rejected (value_out_of_range): beyond 2**53
    #: (about 9e15) a float64 no longer holds every integer, so no metric of interest lives
    #: there. None: any finite value is accepted.
    max_abs_value: float | None = Field(1e15, gt=0)
    #: Labels of a message beyond any of these limits reject it (bad_labels): entries, the
    #: characters of a key and of a value, and the bytes of their compact JSON encoding
    #: (``{"host":"web-1"}`` is 16), which is what a series keeps in memory and copies into
    #: its alerts and changelog records.
    max_labels: int = Field(32, ge=0, le=10_000)
    max_label_key_chars: int = Field(128, ge=1, le=65_536)
    max_label_value_chars: int = Field(1024, ge=1, le=1_048_576)
    max_labels_bytes: int = Field(4096, ge=2, le=1_048_576)


class DeliveryConfig(_Section):
    """How alerts, state and offsets reach the broker together."""

    #: at_least_once: a crash may repeat alerts (same ``alert_id``), never lose one;
    #: exactly_once: alerts, state and offsets are one Kafka transaction per checkpoint
    #: (subscribers read with isolation.level=read_committed).
    mode: Literal["at_least_once", "exactly_once"] = "at_least_once"
    #: exactly_once: this instance's transactional.id; must be unique per instance and stable
    #: across its restarts (None: "{group_id}-{kafka.instance_id or hostname}").
    transactional_id: str | None = None
    #: Seconds between checkpoints (changelog → flush → commit → snapshot).
    commit_interval_s: float = Field(1.0, gt=0, le=600)


class StateConfig(_Section):
    """Where per-series state is kept besides memory and the changelog topic."""

    #: Local snapshots and evicted series (SQLite) for a fast restart; None: a temporary
    #: directory removed at exit (a restart then restores from the changelog alone).
    directory: Path | None = None
    #: Seconds between local snapshots (memory → SQLite) of the series changed since the last.
    snapshot_interval_s: float = Field(60.0, gt=0)
    #: Changelog records younger than this are never compacted (min.compaction.lag.ms), so a
    #: restore within this time of a crash finds the state the committed offsets point at.
    changelog_compaction_lag_s: float = Field(86_400.0, ge=0)


class ModelGroupConfig(_Section):
    """A named model for the series whose names match ``pattern``."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    #: Shell-style pattern on the series name (``*``, ``?``, ``[abc]``), e.g. ``"*.cpu"``.
    pattern: str = Field(min_length=1)
    #: Trained artifact of this group; when absent the group uses the global model's weights.
    artifact: Path | None = None


class ModelConfig(_Section):
    """The recurrent forecaster."""

    #: Architecture of an untrained model and the default of ``streamrnn train``;
    #: a loaded artifact brings its own.
    cell: Literal["gru", "lstm"] = "gru"
    hidden_size: int = Field(64, ge=1, le=4096)
    num_layers: int = Field(1, ge=1, le=3)
    #: GRU-D decay of the hidden state by the gap before each point.
    decay: bool = True
    #: Feed the gap features (log gap ratio, log gap, gap flag) to the model.
    time_delta_features: bool = True
    #: Seed for the weights of an untrained model (no ``artifact``), so instances agree.
    seed: int = 0
    #: Trained model artifact (``streamrnn train``) of the global model; null = see below.
    artifact: Path | None = None
    #: Without an ``artifact``: true = the model shipped with streamrnn (pre-trained on
    #: synthetic operational metrics, never on evaluation data), false = untrained weights.
    pretrained: bool = True
    #: Named model groups; a series uses the first whose pattern matches, else the global model.
    groups: list[ModelGroupConfig] = Field(default_factory=list)
    #: Points ahead forecast after each point and published to ``topics.forecasts`` (0 = off).
    horizon_points: int = Field(0, ge=0, le=1000)
    #: torch intra-op threads of the serving process (loading and exporting models; the
    #: consume loop itself runs the compiled kernel, not torch).
    torch_threads: int = Field(1, ge=1, le=64)
    #: Cores the compiled kernel may use: the series of a batch are stepped in parallel.
    kernel_threads: int = Field(2, ge=1, le=64)

    @model_validator(mode="after")
    def _unique_groups(self) -> ModelConfig:
        names = [g.name for g in self.groups]
        if len(set(names)) != len(names) or "global" in names:
            raise ValueError(f"model group names must be unique and not 'global', got {names}")
        return self


class AlertConfig(_Section):
    """The alert rule: when a scored point raises an alert, and how loud."""

    #: Score at or above which a point is a hit (see README: 0.4 is a 1-in-10,000 point,
    #: 0.6 about one in a million).
    warning_threshold: float = Field(0.6, gt=0, le=1)
    #: Score at or above which an alert is critical (0.7: about one in 30 million).
    critical_threshold: float = Field(0.7, gt=0, le=1)
    #: An alert episode stays open (no new alert) until the score drops below this.
    clear_threshold: float = Field(0.2, ge=0, le=1)
    #: Hits needed among the last ``window_points`` points to fire (m-of-n).
    min_hits: int = Field(1, ge=1, le=62)
    window_points: int = Field(1, ge=1, le=62)
    #: Points after an alert during which the series cannot open a new episode.
    cooldown_points: int = Field(0, ge=0)
    #: Seconds after an alert during which the series cannot open a new episode (0 = off);
    #: the default allows at most one alert episode per series per day.
    cooldown_s: float = Field(86_400.0, ge=0)

    @field_validator("critical_threshold")
    @classmethod
    def _critical_above_warning(cls, critical: float, info: ValidationInfo) -> float:
        warning = info.data.get("warning_threshold")
        if warning is not None and critical < warning:
            raise ValueError(f"must be >= warning_threshold ({warning})")
        return critical

    @field_validator("clear_threshold")
    @classmethod
    def _clear_below_warning(cls, clear: float, info: ValidationInfo) -> float:
        warning = info.data.get("warning_threshold")
        if warning is not None and clear > warning:
            raise ValueError(f"must be <= warning_threshold ({warning})")
        return clear

    @field_validator("window_points")
    @classmethod
    def _window_holds_hits(cls, window: int, info: ValidationInfo) -> int:
        hits = info.data.get("min_hits")
        if hits is not None and window < hits:
            raise ValueError(f"must be >= min_hits ({hits})")
        return window


class ScoringConfig(_Section):
    """From residual to anomaly score to alert (see README, "Scoring")."""

    #: ``tail``: how improbable this residual is given the series' recent residuals;
    #: ``likelihood``: how unusual the recent run of residuals is (Numenta-style).
    calibration: Literal["tail", "likelihood", "evt"] = "likelihood"
    #: Weight of the newest raw score in the tail calibration's running mean and variance.
    tail_alpha: float = Field(0.02, gt=0, le=1)
    #: Weights of the likelihood's short-run average and of its long-run statistics.
    likelihood_short_alpha: float = Field(0.2, gt=0, le=1)
    likelihood_long_alpha: float = Field(0.005, gt=0, le=1)
    #: EVT: quantile of residual magnitudes above which peaks are modelled, and the weight
    #: of the newest point in the peak rate.
    evt_quantile: float = Field(0.98, gt=0.5, lt=1)
    evt_rate_alpha: float = Field(0.002, gt=0, le=1)
    #: Shrink raw scores at times of day whose residuals are usually large (see README).
    seasonal_deflation: bool = True
    #: An alert may open only where the value's deviation from the series' typical level is
    #: at least this fraction of the largest recent deviation on that side (0: off).
    min_novelty: float = Field(0.5, ge=0)
    #: Half-life (seconds) of the remembered largest deviation used by ``min_novelty``.
    novelty_half_life_s: float = Field(604_800.0, gt=0)
    #: During the alert cooldown, a point at least this many times as far from the series'
    #: typical level as the last alert may still open an alert (0: off).
    novelty_cooldown_factor: float = Field(3.0, ge=0)
    #: Points a series must have seen before it may alert; its score is 0 until then.
    warmup_points: int = Field(30, ge=1)
    #: Learn from hits too (false: an anomalous point does not update the series' state).
    learn_from_anomalies: bool = False
    #: After this many consecutive unlearned hits a series learns again (a lasting change
    #: becomes the new normal).
    max_skipped_points: int = Field(20, ge=0)
    alert: AlertConfig = Field(default_factory=AlertConfig)


class SeriesConfig(_Section):
    """Per-series state limits."""

    #: Live series held in memory by one instance; beyond it the least recently seen series
    #: are evicted to the local state store (and come back when they do).
    max_series: int = Field(100_000, ge=1)
    #: Weight of the newest point in the series' running mean and variance (normaliser).
    normaliser_alpha: float = Field(0.01, gt=0, le=1)


class RetrainConfig(_Section):
    """Background retraining: when it runs, on what data, and what a candidate must beat.

    Only the instance that owns partition 0 of the first input topic trains (see README);
    it publishes promoted models to ``topics.models`` and every instance serves them.
    """

    #: false: never train here (models published by another instance are still loaded).
    enabled: bool = True
    #: Seconds between scheduled retrains of each model group (None: on drift only).
    interval_s: float | None = Field(21_600.0, gt=0)
    #: Drift detector on each model group's one-step forecast error (river.drift):
    #: adwin, page_hinkley, or off.
    drift: Literal["adwin", "page_hinkley", "off"] = "adwin"
    #: ADWIN confidence (smaller: fewer, surer detections).
    drift_delta: float = Field(0.002, gt=0, lt=1)
    #: A detected change counts as drift only if the recent error is at least this multiple
    #: of the error before it (small, statistically significant wobbles are not worth a
    #: retrain).
    drift_min_ratio: float = Field(1.25, ge=1)
    #: Forecast errors fed to the detector per model group per batch (a uniform sample).
    drift_sample_points: int = Field(64, ge=1)
    #: Seconds after a retrain (or start-up) before drift may trigger another.
    drift_min_interval_s: float = Field(1_800.0, ge=0)
    #: Training buffer: most recent points kept per series...
    buffer_points: int = Field(512, ge=32)
    #: ...for at most this many series (a uniform reservoir over the series seen). Memory:
    #: buffer_series x buffer_points x 16 bytes (64 MiB at the defaults).
    buffer_series: int = Field(8_192, ge=1)
    #: A group is trained only when its buffered series hold this many points in all.
    min_train_points: int = Field(20_000, ge=100)
    #: Passes over the buffer per retrain (early stopping may end sooner), and patience.
    epochs: int = Field(10, ge=1)
    patience: int = Field(3, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    #: Truncated-BPTT chunk (points) and gradient-norm clip, as in ``streamrnn train``.
    chunk_points: int = Field(64, ge=4)
    grad_clip: float = Field(1.0, gt=0)
    #: Last fraction of every buffered series held out for the promotion gate (never trained
    #: on); early stopping uses the last ``early_stop_fraction`` of the rest.
    holdout_fraction: float = Field(0.2, gt=0, lt=0.9)
    early_stop_fraction: float = Field(0.15, gt=0, lt=0.9)
    #: A candidate is promoted only if its held-out forecast NLL (nats per point) is lower
    #: than the serving model's by at least this much.
    min_improvement: float = Field(0.01, ge=0)
    #: Torch threads of the trainer process, and its nice value (background priority).
    threads: int = Field(1, ge=1, le=64)
    nice: int = Field(10, ge=0, le=19)
    #: Where promoted models are kept (None: ``state.directory``/models, else a temporary
    #: directory); the last ``keep_versions`` of each group are kept.
    registry_dir: Path | None = None
    keep_versions: int = Field(5, ge=1)


class HttpConfig(_Section):
    """The HTTP endpoints: ``/healthz``, ``/readyz``, ``/metrics``."""

    #: Address to listen on ("0.0.0.0": every interface, as a container needs).
    host: str = "0.0.0.0"
    #: TCP port (None: no HTTP server; 0: any free port, logged at start).
    port: int | None = Field(8080, ge=0, le=65535)
    #: ``/healthz`` fails when the consume loop has not completed an iteration for this many
    #: seconds (a loop iteration is at most ``consume.poll_timeout_s`` when idle; a restore
    #: of a large changelog inside a rebalance is the longest legitimate pause).
    liveness_stall_s: float = Field(120.0, gt=0)


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
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    scoring: ScoringConfig = Field(default_factory=ScoringConfig)
    series: SeriesConfig = Field(default_factory=SeriesConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
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
            detail = " ".join(str(exc).split())
            raise ConfigError(f"config file {config_path} is not valid YAML: {detail}") from exc
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
    except SettingsError as exc:
        # A STREAMRNN_* variable that should hold a JSON list or map does not.
        raise ConfigError(_describe_env_json_error(exc)) from exc


def _describe(exc: ValidationError) -> str:
    """One message naming each invalid field as ``a.b.c`` with what is wrong with it."""
    problems: list[str] = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        if loc and loc[-1] in _UNION_TAGS:
            loc = loc[:-1]  # one message per field, not one per member of a union type
        field = ".".join(loc) or "(top level)"
        problem = error["msg"].removeprefix("Value error, ")
        value = error.get("input")
        # Show scalar inputs only, and never librdkafka values (they may be credentials).
        if (
            error["type"] != "extra_forbidden"
            and isinstance(value, str | int | float | bool)
            and not field.startswith("kafka.")
        ):
            problem += f", got {value!r}"
        line = f"{field}: {problem}"
        if not any(p.startswith(f"{field}:") for p in problems):
            problems.append(line)
    return "invalid config: " + "; ".join(problems)


_UNION_TAGS = {"str", "int", "float", "bool"}


def _describe_env_json_error(exc: SettingsError) -> str:
    """Name the STREAMRNN_* variables whose JSON does not parse, as dotted fields."""
    prefix = "STREAMRNN_"
    bad = []
    for name, value in sorted(os.environ.items()):
        if not name.startswith(prefix) or value.lstrip()[:1] not in ("[", "{"):
            continue
        try:
            json.loads(value)
        except json.JSONDecodeError as err:
            field = name.removeprefix(prefix).lower().replace("__", ".")
            bad.append(f"{field}: {name} is not valid JSON ({err.msg} at char {err.pos})")
    if not bad:
        bad.append(" ".join(str(exc).split()))
    return "invalid config: " + "; ".join(bad)
