"""The score scale: decades of improbability of a point → a score in [0, 1).

A calibrator turns a raw score into a tail probability ``p`` (how often something this
unusual happens), reported on a log scale: ``L = -log10(p)`` scores ``L / 10`` up to
:data:`LINEAR_DECADES` (score 0.5, p = 1e-5), then ``1 - 0.5 exp(-(L - 5) / 5)``, which
continues with the same slope and approaches 1 without reaching it: p = 1e-10 scores 0.82,
1e-20 scores 0.975, so a threshold can still tell a 1e-12 from a 1e-40 point. Gaussian tails
are computed in log space (:func:`log_ndtr`) so they never underflow.
"""

from __future__ import annotations

import math

from streamrnn.stages.jit import stage

__all__ = ["LINEAR_DECADES", "LN10", "log_ndtr", "score_from_log10_tail"]

#: Up to this many decades of improbability (p = 1e-5) the score is linear: L / 10.
LINEAR_DECADES = 5.0
#: Decades beyond which the score no longer changes (keeps exp() finite).
_MAX_DECADES = 1e6
LN10 = math.log(10.0)
LN2 = math.log(2.0)


@stage
def log_ndtr(x: float) -> float:
    """log of the standard normal CDF at ``x``, accurate far into both tails (scipy's
    ``log_ndtr``, which numba cannot call: an asymptotic series below -20)."""
    if x > 6.0:
        return -0.5 * math.erfc(x / math.sqrt(2.0))  # log(1 - q) ~ -q for tiny q
    if x > 0.0:
        return math.log1p(-0.5 * math.erfc(x / math.sqrt(2.0)))
    if x > -20.0:
        return math.log(0.5 * math.erfc(-x / math.sqrt(2.0)))
    log_lhs = -0.5 * x * x - math.log(-x) - 0.5 * math.log(2.0 * math.pi)
    last_total = 0.0
    rhs = 1.0
    numerator = 1.0
    denom_factor = 1.0
    denom_cons = 1.0 / (x * x)
    sign = 1.0
    i = 0
    while abs(last_total - rhs) > 2.220446049250313e-16:
        i += 1
        last_total = rhs
        sign = -sign
        denom_factor *= denom_cons
        numerator *= 2 * i - 1
        rhs += sign * numerator * denom_factor
    return log_lhs + math.log(rhs)


@stage
def score_from_log10_tail(decades: float) -> float:
    """Score in [0, 1] from ``decades`` = -log10(p) (see the module docstring: below 1 for
    any finite p; 1.0 only once the float64 exp underflows, beyond ~190 decades, or for
    p = 0); NaN or -inf score 0."""
    if math.isnan(decades) or decades == -math.inf:
        decades = 0.0
    decades = max(decades, 0.0)
    if decades <= LINEAR_DECADES:
        return decades / 10.0
    return 1.0 - 0.5 * math.exp(-(min(decades, _MAX_DECADES) - LINEAR_DECADES) / LINEAR_DECADES)
