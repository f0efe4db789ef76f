"""The detection engine: decoded points in, forecasts, scores and alert severities out.

One call of :meth:`Engine.process` handles one polled batch:

1. resolve each message's series to a state slot (new series get one while there is room);
2. drop points that do not move their series forward in time (out of order, duplicate);
3. lay the points out as a (K series × T points) grid, in arrival order per series;
4. scan the grid column by column, vectorised over series, for the normaliser and time
   features (numpy);
5. step all K series through the GRU in ONE torch call (gather hidden states, step,
   scatter back) — the hidden state of each series persists from call to call;
6. score the standardised residuals and apply the alert rule.

The engine is the same whether points come from Kafka or from files; it knows nothing of
Kafka. Its only torch use is the model step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from streamrnn.decode import DecodedMessage, Rejection
from streamrnn.engine.series_table import SeriesTable
from streamrnn.forecast.features import INPUT_SIZE, TIME_FEATURE_COUNT, time_features
from streamrnn.forecast.gru import GRUForecaster
from streamrnn.forecast.normaliser import ew_update, scale_of
from streamrnn.scoring.alert_rule import ThresholdRule
from streamrnn.scoring.base import Scorer

__all__ = ["Engine", "EngineBatchResult"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Int8Array = npt.NDArray[np.int8]

#: Normalised inputs are clipped to this magnitude so one wild point cannot saturate the GRU.
INPUT_CLIP = 20.0
#: Points a series must have seen before its residuals are scored (and learned by the scorer).
MIN_SEEN_TO_SCORE = 2
#: Weight of the newest gap in a series' running mean log-interval.
GAP_ALPHA = 0.05


@dataclass(frozen=True, slots=True)
class EngineBatchResult:
    """Per-point results of one batch, one entry per accepted point.

    Points of one series appear in time order; ``message_index`` says which input message
    each came from. ``forecast`` and ``spread`` are NaN for a series' first point.
    """

    message_index: IntArray
    slot: IntArray
    ts: FloatArray
    value: FloatArray
    forecast: FloatArray
    spread: FloatArray
    score: FloatArray
    severity: Int8Array
    rejections: list[tuple[int, Rejection]]

    def __len__(self) -> int:
        return len(self.ts)


class Engine:
    """Holds every series' state and steps it; see the module docstring."""

    def __init__(
        self,
        model: GRUForecaster,
        scorer: Scorer,
        rule: ThresholdRule,
        max_series: int,
        normaliser_alpha: float,
        model_version: str,
    ) -> None:
        self.model = model.eval()
        self.scorer = scorer
        self.rule = rule
        self.normaliser_alpha = normaliser_alpha
        self.model_version = model_version
        self.table = SeriesTable(max_series)
        for name in ("value_mean", "value_var", "count", "last_ts", "last_value", "log_gap_mean"):
            self.table.add_column(name)
        self.table.add_column("gap_count")
        self.table.add_column(
            "hidden", shape=(model.num_layers, model.hidden_size), dtype=np.float32
        )
        scorer.bind(self.table)

    def hidden_state(self, series: str) -> npt.NDArray[np.float32] | None:
        """A copy of a live series' hidden state, (L, H), or None if it is not live."""
        slot = self.table.slot_of(series)
        if slot is None:
            return None
        return np.array(self.table.column("hidden")[slot], copy=True)

    def process(self, messages: Sequence[DecodedMessage]) -> EngineBatchResult:
        """Forecast, score and learn every point of ``messages`` (one polled batch)."""
        rejections: list[tuple[int, Rejection]] = []
        msg_slots = self.table.resolve([m.series for m in messages], [m.labels for m in messages])
        for i in np.flatnonzero(msg_slots < 0):
            rejections.append(
                (
                    int(i),
                    Rejection(
                        "series_limit",
                        f"series limit reached ({self.table.max_series} live series)",
                        messages[int(i)].series,
                    ),
                )
            )
        counts = np.fromiter((len(m.ts) for m in messages), dtype=np.int64, count=len(messages))
        point_msg = np.repeat(np.arange(len(messages), dtype=np.int64), counts)
        point_slot = np.repeat(msg_slots, counts)
        ts = np.fromiter((t for m in messages for t in m.ts), dtype=np.float64, count=counts.sum())
        values = np.fromiter(
            (v for m in messages for v in m.values), dtype=np.float64, count=counts.sum()
        )
        # Group by series, arrival order kept within each series.
        order = np.argsort(point_slot, kind="stable")
        order = order[point_slot[order] >= 0]
        keep = self._moving_forward(
            point_slot[order], ts[order], point_msg[order], messages, rejections
        )
        order = order[keep]
        if len(order) == 0:
            return _empty_result(rejections)
        return self._step(point_msg[order], point_slot[order], ts[order], values[order], rejections)

    def _moving_forward(
        self,
        slots: IntArray,
        ts: FloatArray,
        msgs: IntArray,
        messages: Sequence[DecodedMessage],
        rejections: list[tuple[int, Rejection]],
    ) -> npt.NDArray[np.bool_]:
        """Mask of points later than everything their series has seen (grouped input)."""
        last_ts = self.table.column("last_ts")
        seen = self.table.column("count")
        first_of_group = np.ones(len(slots), dtype=bool)
        first_of_group[1:] = slots[1:] != slots[:-1]
        prev = np.empty_like(ts)
        prev[1:] = ts[:-1]
        prev[first_of_group] = np.where(
            seen[slots[first_of_group]] > 0, last_ts[slots[first_of_group]], -np.inf
        )
        keep: npt.NDArray[np.bool_] = ts > prev
        if keep.all():
            return keep
        # Rare path: walk only the series that have a problem, with a running maximum.
        for slot in np.unique(slots[~keep]):
            idx = np.flatnonzero(slots == slot)
            latest = last_ts[slot] if seen[slot] > 0 else -np.inf
            for i in idx:
                if ts[i] > latest:
                    keep[i] = True
                    latest = ts[i]
                    continue
                keep[i] = False
                reason = "duplicate_timestamp" if ts[i] == latest else "out_of_order"
                rejections.append(
                    (
                        int(msgs[i]),
                        Rejection(
                            reason,
                            f"timestamp {ts[i]!r} is not after the series' latest {latest!r}",
                            messages[int(msgs[i])].series,
                        ),
                    )
                )
        return keep

    def _step(
        self,
        point_msg: IntArray,
        point_slot: IntArray,
        ts: FloatArray,
        values: FloatArray,
        rejections: list[tuple[int, Rejection]],
    ) -> EngineBatchResult:
        slots, group_start, lengths = np.unique(point_slot, return_index=True, return_counts=True)
        k, t_max = len(slots), int(lengths.max())
        row = np.repeat(np.arange(k), lengths)
        col = np.arange(len(point_slot)) - np.repeat(group_start, lengths)
        grid_ts = np.zeros((k, t_max))
        grid_val = np.zeros((k, t_max))
        active = np.zeros((k, t_max), dtype=bool)
        grid_ts[row, col], grid_val[row, col], active[row, col] = ts, values, True

        inputs = np.zeros((k, t_max, INPUT_SIZE), dtype=np.float32)
        target = np.zeros((k, t_max, TIME_FEATURE_COUNT), dtype=np.float32)
        scale = np.ones((k, t_max))
        prev_value = np.zeros((k, t_max))
        seen_before = np.zeros((k, t_max))

        tbl = self.table
        mean, var, count = (tbl.column(c)[slots] for c in ("value_mean", "value_var", "count"))
        last_ts, last_value = tbl.column("last_ts")[slots], tbl.column("last_value")[slots]
        log_gap_mean, gap_count = tbl.column("log_gap_mean")[slots], tbl.column("gap_count")[slots]
        for j in range(t_max):
            a = active[:, j]
            has_prev = count > 0
            typical = np.where(gap_count > 0, np.exp(log_gap_mean), np.nan)
            gap = np.where(has_prev, grid_ts[:, j] - last_ts, np.nan)
            typical = np.where(np.isnan(typical), np.where(np.isnan(gap), 1.0, gap), typical)
            gap = np.where(np.isnan(gap), typical, gap)
            feats = time_features(grid_ts[:, j], gap, typical)
            s = scale_of(mean, var)
            z = np.where(has_prev, np.clip((grid_val[:, j] - mean) / s, -INPUT_CLIP, INPUT_CLIP), 0)
            inputs[:, j, 0] = z
            inputs[:, j, 1:] = feats
            target[:, j] = feats
            scale[:, j], prev_value[:, j], seen_before[:, j] = s, last_value, count

            n_mean, n_var, n_count = ew_update(
                mean, var, count, grid_val[:, j], self.normaliser_alpha
            )
            g_mean, _, g_count = ew_update(
                log_gap_mean, np.zeros(k), gap_count, np.log(np.maximum(gap, 1e-6)), GAP_ALPHA
            )
            learn_gap = a & has_prev
            log_gap_mean = np.where(learn_gap, g_mean, log_gap_mean)
            gap_count = np.where(learn_gap, g_count, gap_count)
            mean, var, count = (
                np.where(a, new, old)
                for new, old in ((n_mean, mean), (n_var, var), (n_count, count))
            )
            last_ts = np.where(a, grid_ts[:, j], last_ts)
            last_value = np.where(a, grid_val[:, j], last_value)

        hidden = tbl.column("hidden")
        with torch.inference_mode():
            h0 = torch.from_numpy(np.ascontiguousarray(hidden[slots].transpose(1, 0, 2)))
            out = self.model.step(
                h0, torch.from_numpy(inputs), torch.from_numpy(target), torch.from_numpy(lengths)
            )
            hidden[slots] = out.h_next.numpy().transpose(1, 0, 2)
            delta = out.delta_mean.double().numpy()
            log_var = out.log_var.double().numpy()

        for name, arr in (
            ("value_mean", mean),
            ("value_var", var),
            ("count", count),
            ("last_ts", last_ts),
            ("last_value", last_value),
            ("log_gap_mean", log_gap_mean),
            ("gap_count", gap_count),
        ):
            tbl.column(name)[slots] = arr

        forecast = np.where(seen_before > 0, prev_value + scale * delta, np.nan)
        spread = np.where(seen_before > 0, scale * np.exp(0.5 * log_var), np.nan)
        # A residual is only meaningful once the normaliser has seen two points.
        raw = np.where(seen_before >= MIN_SEEN_TO_SCORE, (grid_val - forecast) / spread, np.nan)
        scores = np.zeros((k, t_max))
        for j in range(t_max):
            a = active[:, j]
            scores[a, j] = self.scorer.score_and_learn(slots[a], raw[a, j])
        reported, severity = self.rule.apply(scores, seen_before)

        return EngineBatchResult(
            message_index=point_msg,
            slot=point_slot,
            ts=ts,
            value=values,
            forecast=forecast[row, col],
            spread=spread[row, col],
            score=reported[row, col],
            severity=severity[row, col],
            rejections=rejections,
        )


def _empty_result(rejections: list[tuple[int, Rejection]]) -> EngineBatchResult:
    f = np.zeros(0)
    i = np.zeros(0, dtype=np.int64)
    return EngineBatchResult(i, i, f, f, f, f, f, np.zeros(0, dtype=np.int8), rejections)
