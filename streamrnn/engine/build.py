"""Build the detection engine from the validated configuration."""

from __future__ import annotations

import torch

from streamrnn.config import Settings
from streamrnn.engine.engine import Engine
from streamrnn.forecast.gru import GRUForecaster
from streamrnn.scoring.alert_rule import ThresholdRule
from streamrnn.scoring.residual_tail import ResidualTailScorer

__all__ = ["build_engine"]


def build_engine(settings: Settings) -> Engine:
    """An engine with the configured model, scorer and alert rule, and no series yet.

    Without a trained artifact the model's weights come from ``model.seed``, so two
    instances (or a run and its re-run) forecast identically.
    """
    torch.set_num_threads(settings.model.torch_threads)
    m = settings.model
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(m.seed)
    model = GRUForecaster(hidden_size=m.hidden_size, num_layers=m.num_layers)
    torch.random.set_rng_state(generator_state)
    s = settings.scoring
    return Engine(
        model=model,
        scorer=ResidualTailScorer(alpha=s.residual_alpha),
        rule=ThresholdRule(s.warmup_points, s.warning_threshold, s.critical_threshold),
        max_series=settings.series.max_series,
        normaliser_alpha=settings.series.normaliser_alpha,
        model_version=f"untrained-{m.cell}-h{m.hidden_size}-l{m.num_layers}-seed{m.seed}",
    )
