"""Random building blocks the value families share: scales, correlated noise, bursts.

* :func:`log_uniform` draws a scale uniformly in log space, so a family's series span
  many orders of magnitude (0.1 to 10 000 requests/s, 100 µs to 10 s latencies);
* :func:`ar1` is stationary AR(1) noise of unit variance: production noise is correlated
  from one sample to the next, rarely white;
* :func:`regime_changes` places one or two changes of level, amplitude or noise in a
  series, as deployments and traffic shifts do;
* :func:`bursts` is a self-exciting excitation: rare onsets with Pareto-distributed
  (heavy-tailed) sizes that decay geometrically over the following samples, for event
  storms, incidents and traffic spikes.

Pure numpy and scipy.signal (the recursions run in :func:`scipy.signal.lfilter`, in C).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.signal import lfilter

from streamrnn.arrays import FloatArray

__all__ = ["Regimes", "ar1", "bursts", "log_uniform", "regime_changes"]


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """One draw uniform in log space between ``low`` and ``high`` (both > 0)."""
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def ar1(rng: np.random.Generator, n: int, phi: float) -> FloatArray:
    """``n`` samples of stationary AR(1) noise with coefficient ``phi`` and unit variance.

    ``x[i] = phi·x[i-1] + sqrt(1 - phi²)·z[i]``, started from a draw of the stationary
    distribution (so the first samples are not quieter than the rest). ``phi`` in [0, 1).
    """
    innovations = rng.standard_normal(n)
    x_before = rng.standard_normal()
    gain = np.sqrt(1.0 - phi * phi)
    out, _ = lfilter([gain], [1.0, -phi], innovations, zi=[phi * x_before])
    return np.asarray(out, dtype=np.float64)


def bursts(
    rng: np.random.Generator, n: int, p_onset: float, tail_index: float, decay: float
) -> FloatArray:
    """A non-negative burst excitation over ``n`` samples (0 outside bursts).

    Each sample starts a burst with probability ``p_onset``; its size is Pareto with
    tail index ``tail_index`` (smaller is heavier: below 2 the sizes have infinite
    variance) plus one, and it decays by the factor ``decay`` (in [0, 1)) per sample.
    Overlapping bursts add. Multiply a rate by ``1 + bursts(...)`` to make it bursty.
    """
    onsets = rng.random(n) < p_onset
    impulses = np.zeros(n)
    impulses[onsets] = 1.0 + rng.pareto(tail_index, int(onsets.sum()))
    out = lfilter([1.0], [1.0, -decay], impulses)
    return np.maximum(np.asarray(out, dtype=np.float64), 0.0)


class Regimes(NamedTuple):
    """Per point, piecewise constant and compounding: ``level_offset`` (value units, added),
    ``amp_mult`` (multiplies a cycle's amplitude), ``noise_mult`` (multiplies the noise)."""

    level_offset: FloatArray
    amp_mult: FloatArray
    noise_mult: FloatArray


def regime_changes(rng: np.random.Generator, n: int, noise_sd: float) -> Regimes:
    """One or two regime changes over ``n`` points, placed between 30 % and 90 % of them,
    each a level shift of 2–6 ``noise_sd`` (either sign), the amplitude times 0.3–3 or the
    noise times 0.3–3, acting from its point onwards."""
    level_offset, amp_mult, noise_mult = np.zeros(n), np.ones(n), np.ones(n)
    n_changes = int(rng.integers(1, 3))
    low = int(0.3 * n)
    change_at = np.sort(rng.integers(low, max(int(0.9 * n), low + 1), n_changes))
    for i in change_at:
        kind = int(rng.integers(0, 3))
        if kind == 0:
            level_offset[i:] += rng.choice([-1.0, 1.0]) * rng.uniform(2.0, 6.0) * noise_sd
        elif kind == 1:
            amp_mult[i:] *= rng.uniform(0.3, 3.0)
        else:
            noise_mult[i:] *= rng.uniform(0.3, 3.0)
    return Regimes(level_offset, amp_mult, noise_mult)
