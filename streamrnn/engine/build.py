"""Build the detection engine from the validated configuration."""

from __future__ import annotations

from pathlib import Path

import torch

from streamrnn.config import ModelConfig, ScoringConfig, Settings
from streamrnn.engine.engine import Engine, ModelGroup
from streamrnn.forecast import artifact
from streamrnn.forecast.gru import ModelSpec, RecurrentForecaster
from streamrnn.stages import alert_rule, calibration, learning, novelty
from streamrnn.stages.chain import ChainParams
from streamrnn.stages.evt import EVTParams
from streamrnn.stages.likelihood import LikelihoodParams
from streamrnn.stages.seasonal import SeasonalParams
from streamrnn.stages.tail import TailParams

__all__ = ["SHIPPED_MODEL", "build_chain", "build_engine", "untrained_model"]

#: The model shipped with streamrnn, made by ``STREAMRNN_MODEL__DECAY=false streamrnn train
#: --synthetic 150 --synthetic-points 3000 --seed 7 --epochs 25 --patience 3 --threads 1``
#: (synthetic metrics only; see README).
SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "models" / "default.pt"


def untrained_model(config: ModelConfig) -> RecurrentForecaster:
    """The configured architecture with weights drawn from ``config.seed`` (reproducible)."""
    spec = ModelSpec(
        cell=config.cell,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        decay=config.decay,
        time_delta_features=config.time_delta_features,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(config.seed)
    try:
        return RecurrentForecaster(spec)
    finally:
        torch.random.set_rng_state(generator_state)


def build_chain(config: ScoringConfig) -> ChainParams:
    """The scoring stages' parameters the configuration describes.

    Raises:
        ValueError: an alert window the rule cannot hold, or novelty settings out of range.
    """
    a = config.alert
    rule = alert_rule.RuleParams(
        warning_threshold=a.warning_threshold,
        critical_threshold=a.critical_threshold,
        clear_threshold=a.clear_threshold,
        min_hits=a.min_hits,
        window_points=a.window_points,
        cooldown_points=a.cooldown_points,
        cooldown_s=a.cooldown_s,
    )
    alert_rule.check(rule)
    level_novelty = novelty.NoveltyParams(
        on=config.min_novelty > 0 or config.novelty_cooldown_factor > 0,
        min_novelty=config.min_novelty,
        half_life_s=config.novelty_half_life_s,
        cooldown_factor=config.novelty_cooldown_factor,
    )
    novelty.check(level_novelty)
    return ChainParams(
        seasonal=SeasonalParams(on=config.seasonal_deflation),
        calibration=calibration.CalibrationParams(
            kind=calibration.KINDS[config.calibration][0],
            likelihood=LikelihoodParams(
                config.likelihood_short_alpha, config.likelihood_long_alpha
            ),
            tail=TailParams(config.tail_alpha),
            evt=EVTParams(config.evt_quantile, config.evt_rate_alpha),
        ),
        novelty=level_novelty,
        rule=rule,
        learning=learning.LearningParams(
            warmup_points=config.warmup_points,
            learn_from_anomalies=config.learn_from_anomalies,
            max_skipped_points=config.max_skipped_points,
        ),
    )


def build_engine(settings: Settings) -> Engine:
    """An engine with the configured model groups, scorer and alert rule, and no series yet.

    The global model is the trained artifact ``model.artifact`` if given, else the shipped
    model (``model.pretrained``), else an untrained model seeded by ``model.seed`` (so
    instances, and a run and its re-run, agree). A group
    without an artifact of its own shares the global model's weights, with its own states.
    The normaliser's weight comes from the global artifact when there is one, since the
    model was trained on features normalised that way.

    Raises:
        artifact.ArtifactError: an artifact cannot be loaded.
    """
    torch.set_num_threads(settings.model.torch_threads)
    m = settings.model
    normaliser_alpha = settings.series.normaliser_alpha
    artifact_path = (
        m.artifact if m.artifact is not None else (SHIPPED_MODEL if m.pretrained else None)
    )
    if artifact_path is not None:
        loaded = artifact.load(artifact_path)
        global_model, global_version = loaded.model, loaded.version
        global_lineage = tuple(loaded.metadata.get("lineage", ()))
        normaliser_alpha = loaded.normaliser_alpha
    else:
        global_model = untrained_model(m)
        global_lineage = ()
        global_version = (
            f"untrained-{m.cell}-h{m.hidden_size}-l{m.num_layers}"
            f"{'-decay' if m.decay else ''}-seed{m.seed}"
        )
    groups = []
    for group in m.groups:
        if group.artifact is not None:
            loaded = artifact.load(group.artifact)
            lineage = tuple(loaded.metadata.get("lineage", ()))
            groups.append(
                ModelGroup(group.name, group.pattern, loaded.model, loaded.version, lineage)
            )
        else:
            groups.append(
                ModelGroup(group.name, group.pattern, global_model, global_version, global_lineage)
            )
    groups.append(ModelGroup("global", None, global_model, global_version, global_lineage))
    return Engine(
        groups=groups,
        chain=build_chain(settings.scoring),
        max_series=settings.series.max_series,
        normaliser_alpha=normaliser_alpha,
        horizon_points=m.horizon_points,
        threads=m.kernel_threads,
    )
