"""Extreme-value calibration: how extreme is this residual among the series' own extremes?

After SPOT (Siffer, Fouque, Termier, Largouët 2017, "Anomaly Detection in Streams with
Extreme Value Theory", KDD): the magnitudes ``x = |raw|`` above a high quantile ``t`` of a
series (its *peaks*) follow a generalised Pareto distribution, so the tail probability of a
magnitude beyond ``t`` is ``p = phi * (1 + gamma (x - t) / sigma) ** (-1 / gamma)`` with
``phi`` the rate of peaks. Unlike a Gaussian tail this knows how heavy the series' own tail
is: a bursty series whose bursts are routine needs a much larger burst to score high.

Everything is streaming and vectorised over series, a handful of numbers per series:
``t`` tracks the ``quantile`` of ``x`` by stochastic approximation, ``phi`` is an
exponentially weighted rate, and ``gamma``/``sigma`` come from exponentially weighted
moments of the excesses ``x - t`` (method of moments: ``gamma = (1 - m^2/v) / 2``,
``sigma = m (1 + m^2/v) / 2``). Below ``t`` the tail probability is interpolated in log space
between 1 (at 0) and ``phi`` (at ``t``).

Pure numpy; knows nothing of Kafka or torch.
"""

from __future__ import annotations

import numpy as np

from streamrnn.arrays import FloatArray, IntArray
from streamrnn.engine.series_table import SeriesTable
from streamrnn.scoring.base import score_from_log10_tail

__all__ = ["EVTCalibrator"]


#: Magnitudes a series must have learned, and peaks it must have seen, before it scores.
MIN_LEARNED = 30
MIN_PEAKS = 5
#: The shape parameter is kept in this range (heavy tails up to gamma = 0.5).
GAMMA_RANGE = (-0.4, 0.5)
#: Weight floor of the newest excess in the moment estimates.
EXCESS_ALPHA = 0.02
#: Step of the quantile tracker, relative to the running mean magnitude.
QUANTILE_STEP = 0.05


class EVTCalibrator:
    """Streaming peaks-over-threshold (GPD) calibration of residual magnitudes, per series."""

    def __init__(self, quantile: float, rate_alpha: float) -> None:
        self.quantile = quantile
        self.rate_alpha = rate_alpha
        self._table: SeriesTable | None = None

    def bind(self, table: SeriesTable) -> None:
        """Declare threshold, peak rate, excess moments, counts and mean magnitude columns."""
        for name in ("evt_t", "evt_phi", "evt_m", "evt_v", "evt_peaks", "evt_n", "evt_mean"):
            table.add_column(name)
        self._table = table

    def _columns(self, slots: IntArray) -> dict[str, FloatArray]:
        assert self._table is not None, "bind() first"
        names = ("evt_t", "evt_phi", "evt_m", "evt_v", "evt_peaks", "evt_n", "evt_mean")
        return {name: self._table.column(name)[slots] for name in names}

    def score(self, slots: IntArray, raw: FloatArray) -> FloatArray:
        """See :meth:`streamrnn.scoring.base.Calibrator.score`."""
        c = self._columns(slots)
        ok = np.isfinite(raw) & (c["evt_n"] >= MIN_LEARNED) & (c["evt_peaks"] >= MIN_PEAKS)
        x = np.where(ok, np.abs(raw), 0.0)
        t = np.maximum(c["evt_t"], 1e-9)
        phi = np.clip(c["evt_phi"], 1e-6, 1.0)
        m = np.maximum(c["evt_m"], 1e-9)
        ratio = np.clip(m * m / np.maximum(c["evt_v"], 1e-18), 1e-3, 1e3)
        gamma = np.clip(0.5 * (1.0 - ratio), *GAMMA_RANGE)
        sigma = np.maximum(0.5 * m * (1.0 + ratio), 1e-9)
        excess = np.maximum(x - t, 0.0)
        base = 1.0 + gamma * excess / sigma
        # log10 of the GPD survival; a bounded tail (gamma < 0) beyond its end is certain.
        with np.errstate(divide="ignore", invalid="ignore"):
            gpd = np.where(
                np.abs(gamma) < 1e-6,
                -excess / sigma / np.log(10.0),
                np.where(base > 0, -np.log10(np.maximum(base, 1e-300)) / gamma, -np.inf),
            )
        log10_p_above = np.log10(phi) + gpd
        log10_p_below = np.log10(phi) * np.minimum(x / t, 1.0)
        log10_p = np.where(x > t, log10_p_above, log10_p_below)
        return np.where(ok, score_from_log10_tail(-log10_p), 0.0)

    def learn(self, slots: IntArray, raw: FloatArray) -> None:
        """See :meth:`streamrnn.scoring.base.Calibrator.learn`."""
        assert self._table is not None, "bind() first"
        ok = np.isfinite(raw)
        slots, x = slots[ok], np.abs(raw[ok])
        c = self._columns(slots)
        n = c["evt_n"] + 1.0
        mean = c["evt_mean"] + (x - c["evt_mean"]) / np.minimum(n, 200.0)
        t = np.where(c["evt_n"] > 0, c["evt_t"], x)
        above = x > t
        # Quantile tracking (stochastic approximation), scaled by the typical magnitude.
        t = t + QUANTILE_STEP * mean * (above - (1.0 - self.quantile))
        t = np.maximum(t, 0.0)
        phi = c["evt_phi"] + np.maximum(self.rate_alpha, 1.0 / n) * (above - c["evt_phi"])
        peaks = c["evt_peaks"] + above
        weight = np.maximum(EXCESS_ALPHA, 1.0 / np.maximum(peaks, 1.0))
        excess = np.maximum(x - t, 0.0)
        delta = excess - c["evt_m"]
        m = np.where(above, c["evt_m"] + weight * delta, c["evt_m"])
        v = np.where(above, (1 - weight) * (c["evt_v"] + weight * delta * delta), c["evt_v"])
        tbl = self._table
        for name, value in (
            ("evt_t", t),
            ("evt_phi", phi),
            ("evt_m", m),
            ("evt_v", v),
            ("evt_peaks", peaks),
            ("evt_n", n),
            ("evt_mean", mean),
        ):
            tbl.column(name)[slots] = value
