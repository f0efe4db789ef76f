"""The fused per-series kernel: a whole batch of points through features, model and scoring.

The engine's reference path (:meth:`streamrnn.engine.engine.Engine._step_columns`) walks a
batch column by column, each column a few hundred numpy and torch calls vectorised over the
series in it. Those calls cost microseconds each however few series a column holds, so a batch
of single-point messages (many columns of a handful of series) or of 64-point windows spends
most of its time on call overhead, not arithmetic. This kernel, compiled by numba, runs the
same computation — features (:mod:`streamrnn.forecast.features`), GRU-D decay, forecast
head and GRU cell (:mod:`streamrnn.forecast.gru`), standardised residual, seasonal
deflation, calibration, level novelty, the alert rule and the learning policy
(:mod:`streamrnn.scoring`) — in compiled loops. The series of a batch are independent, so
they are split into chunks of about equal points run on ``threads`` cores (numba
``prange``); within a chunk the points go column by column, the scalar work point by point
and the model's matrix products (head, and two per GRU layer) as one BLAS call over the
chunk's active series, where a 64 x 192 product costs 0.27 us a series against 0.6 us as a
per-point loop.

Everything reads and writes the :class:`~streamrnn.engine.series_table.SeriesTable` columns
in place, indexed by slot. The model runs in float32 like torch, with another summation
order, so forecasts agree with the reference path to about 1e-6 relative, not bit for bit;
``tests/unit/test_fused_kernel.py`` holds the two paths together.

Values of any finite magnitude are safe, as on the reference path: each is clamped to ±1e30
(``VALUE_LIMIT`` of :mod:`streamrnn.forecast.features`, passed in ``params``) before anything
uses it, which keeps every derived quantity finite, and a point beyond the limit is held out
of learning like an anomaly and never learned by the level novelty or the seasonal profile
(:mod:`streamrnn.scoring.chain`). ``tests/unit/test_engine_extreme_values.py`` checks both.

Pure numpy/numba; knows nothing of Kafka or torch.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["CAL_EVT", "CAL_LIKELIHOOD", "CAL_TAIL", "log_ndtr", "step_batch"]

#: Calibrator codes of :func:`step_batch`.
CAL_LIKELIHOOD = 0
CAL_TAIL = 1
CAL_EVT = 2

_LN10 = math.log(10.0)
_LN2 = math.log(2.0)
_TWO_PI = 2.0 * math.pi
_DAY_S = 86_400.0
_WEEK_S = 7 * _DAY_S
_F32 = np.float32


@numba.njit(cache=True, nogil=True, error_model="numpy")
def log_ndtr(x: float) -> float:
    """log of the standard normal CDF at ``x``, accurate far into both tails (scipy's
    ``log_ndtr``, which numba cannot call: an asymptotic series below -20)."""
    if x > 6.0:
        return -0.5 * math.erfc(x / math.sqrt(2.0))  # log(1 - q) ~ -q for tiny q
    if x > 0.0:
        return math.log1p(-0.5 * math.erfc(x / math.sqrt(2.0)))
    if x > -20.0:
        return math.log(0.5 * math.erfc(-x / math.sqrt(2.0)))
    # Asymptotic series (scipy's log_ndtr for x <= -20).
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


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _score_from_log10_tail(decades: float) -> float:
    """:func:`streamrnn.scoring.base.score_from_log10_tail` of one value."""
    if math.isnan(decades) or decades == -math.inf:
        decades = 0.0
    decades = max(decades, 0.0)
    if decades <= 5.0:
        return decades / 10.0
    return 1.0 - 0.5 * math.exp(-(min(decades, 1e6) - 5.0) / 5.0)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _clip(x: float, low: float, high: float) -> float:
    return min(max(x, low), high)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _clamp(x: float, limit: float) -> float:
    """``x`` clamped to [-limit, limit]; NaN stays NaN (as ``np.clip``)."""
    if x > limit:
        return limit
    if x < -limit:
        return -limit
    return x


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _time_of(t: float, period: float) -> float:
    """``t % period`` for t >= 0 (seconds into the day or week), inlined: numba's float
    ``%`` is a call into a C helper (``numba_fmod``, 1.5 % of perf samples of the engine on
    64-point windows, three calls a point). Exact where ``t / period`` is not
    within one rounding of a whole number (any timestamp that is not a whole multiple of
    the period to within a microsecond; whole multiples give 0, as ``%`` does)."""
    r = t - math.floor(t / period) * period
    if r < 0.0:
        return r + period
    if r >= period:
        return r - period
    return r


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _tanh(a: np.float32) -> np.float32:
    """tanh in float32 by a [13/6] rational approximation on [-7.9, 7.9] (Eigen's
    ``generic_fast_tanh_float``): within 3e-7 of the exact value, and plain arithmetic, so the
    loops over a layer's units vectorise (a libm call per unit does not)."""
    x = min(max(a, _F32(-7.90531110763549805)), _F32(7.90531110763549805))
    x2 = x * x
    p = x2 * _F32(-2.76076847742355e-16) + _F32(2.00018790482477e-13)
    p = p * x2 + _F32(-8.60467152213735e-11)
    p = p * x2 + _F32(5.12229709037114e-08)
    p = p * x2 + _F32(1.48572235717979e-05)
    p = p * x2 + _F32(6.37261928875436e-04)
    p = p * x2 + _F32(4.89352455891786e-03)
    q = x2 * _F32(1.19825839466702e-06) + _F32(1.18534705686654e-04)
    q = q * x2 + _F32(2.26843463243900e-03)
    q = q * x2 + _F32(4.89352518554385e-03)
    return p * x / q


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _sigmoid(x: np.float32) -> np.float32:
    """The logistic function as ``(1 + tanh(x / 2)) / 2`` (exact identity; see :func:`_tanh`)."""
    return _F32(0.5) + _F32(0.5) * _tanh(_F32(0.5) * x)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _gru_gates(
    gi: np.ndarray,
    gh: np.ndarray,
    b_ih: np.ndarray,
    b_hh: np.ndarray,
    h: np.ndarray,
    out: np.ndarray,
) -> None:
    """The gates of one GRU cell step (torch.nn.GRUCell) from its two matrix products:
    ``gi`` = W_ih·x and ``gh`` = W_hh·h (3H each: reset, update, new), biases added here."""
    hidden = h.shape[0]
    for r in range(hidden):
        reset = _sigmoid(gi[r] + b_ih[r] + gh[r] + b_hh[r])
        u = hidden + r
        update = _sigmoid(gi[u] + b_ih[u] + gh[u] + b_hh[u])
        n = 2 * hidden + r
        new = _tanh(gi[n] + b_ih[n] + reset * (gh[n] + b_hh[n]))
        out[r] = new + update * (h[r] - new)


@numba.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def step_batch(
    # the batch: rows (series) with their points contiguous in ts/values
    row_slot: np.ndarray,
    row_start: np.ndarray,
    row_length: np.ndarray,
    chunks: np.ndarray,
    ts: np.ndarray,
    values: np.ndarray,
    # feature state columns (table)
    f_mean: np.ndarray,
    f_var: np.ndarray,
    f_count: np.ndarray,
    f_last_ts: np.ndarray,
    f_last_value: np.ndarray,
    f_log_gap_mean: np.ndarray,
    f_gap_count: np.ndarray,
    f_step_var: np.ndarray,
    normaliser_alpha: float,
    # model: every row is of group g; state is that group's (capacity, S, H) column
    g: int,
    state: np.ndarray,
    w_ih0_t: np.ndarray,
    w_ihn_t: np.ndarray,
    w_hh_t: np.ndarray,
    b_ih: np.ndarray,
    b_hh: np.ndarray,
    decay_w_t: np.ndarray,
    decay_b: np.ndarray,
    h_prior: np.ndarray,
    head_w1_t: np.ndarray,
    head_b1: np.ndarray,
    head_w2: np.ndarray,
    head_b2: np.ndarray,
    input_mask: np.ndarray,
    target_mask: np.ndarray,
    use_decay: bool,
    log_var_low: float,
    log_var_high: float,
    # scoring chain
    params: np.ndarray,
    calibration: int,
    cal: tuple[np.ndarray, ...],
    use_seasonal: bool,
    season_mag: np.ndarray,
    season_count: np.ndarray,
    season_first_day: np.ndarray,
    season_overall: np.ndarray,
    season_overall_count: np.ndarray,
    use_novelty: bool,
    nov_centre: np.ndarray,
    nov_mad: np.ndarray,
    nov_up: np.ndarray,
    nov_down: np.ndarray,
    nov_ts: np.ndarray,
    nov_count: np.ndarray,
    nov_alert_dev: np.ndarray,
    rule_hits: np.ndarray,
    rule_episode: np.ndarray,
    rule_cooldown: np.ndarray,
    rule_last_alert_ts: np.ndarray,
    skipped_run: np.ndarray,
    # outputs, one per point (aligned with ts)
    out_forecast: np.ndarray,
    out_spread: np.ndarray,
    out_scale: np.ndarray,
    out_score: np.ndarray,
    out_armed: np.ndarray,
    out_severity: np.ndarray,
) -> None:
    """Forecast, score and learn every point of a batch, series in parallel.

    Rows ``chunks[i]`` to ``chunks[i + 1]`` are one unit of parallel work (in order).

    ``params`` (float64) holds the scalar settings, in order: normaliser-independent
    feature constants first (gap factor, input clip, gap alpha, step alpha, step floor), then
    min seen to score, warm-up points, learn from anomalies (0/1), max skipped points,
    calibrator parameters a and b (likelihood: short/long alpha; tail: alpha, unused; evt:
    quantile, rate alpha), warning, critical and clear thresholds, min hits, window points,
    cooldown points, cooldown seconds, novelty min, novelty half-life (s), novelty cooldown
    factor, seasonal bins, value limit. See :class:`streamrnn.engine.fused.FusedStepper` for
    the packing.

    Values are clamped to ± the value limit before anything uses them, and a point beyond it
    is held out of learning like an anomaly and never learned by the level novelty or the
    seasonal profile (:func:`streamrnn.forecast.features.clamp_values`,
    :mod:`streamrnn.scoring.chain`).
    """
    gap_factor = params[0]
    input_clip = params[1]
    gap_alpha = params[2]
    step_alpha = params[3]
    step_floor = params[4]
    min_seen = params[5]
    warmup = params[6]
    learn_anomalies = params[7] > 0.5
    max_skipped = params[8]
    cal_a = params[9]
    cal_b = params[10]
    warn_at = params[11]
    crit_at = params[12]
    clear_at = params[13]
    min_hits = int(params[14])
    window_mask = (np.int64(1) << np.int64(int(params[15]))) - np.int64(1)
    cooldown_points = params[16]
    cooldown_s = params[17]
    min_novelty = params[18]
    half_life_s = params[19]
    cooldown_factor = params[20]
    bins = int(params[21])
    value_limit = params[22]

    layers = w_hh_t.shape[1]
    hidden = w_hh_t.shape[2]
    head_hidden = head_b1.shape[1]
    n_inputs = input_mask.shape[0]
    n_time = target_mask.shape[0]

    for chunk in numba.prange(chunks.shape[0] - 1):
        # A chunk's rows are stepped column by column (point j of every row that has one);
        # per column the head and the GRU's matrix products run as one BLAS call over the
        # chunk's active rows, the rest point by point. Buffers are once per chunk.
        first_row = chunks[chunk]
        rows = chunks[chunk + 1] - first_row
        # Products run over at least 2 rows: BLAS takes another path for a single row (a
        # matrix-vector product) whose float32 sums differ in the last bits, and a series'
        # forecasts must not depend on how many others share its batch (a restart replays
        # the same points in other batches). Row 2 of a 1-row product is zeros, ignored.
        padded = max(rows, 2)
        h = np.empty((rows, layers, hidden), dtype=np.float32)
        hd = np.zeros((layers, padded, hidden), dtype=np.float32)
        new_h = np.zeros((layers, padded, hidden), dtype=np.float32)
        head_in = np.zeros((padded, hidden + n_time), dtype=np.float32)
        z1 = np.empty((padded, head_hidden), dtype=np.float32)
        x = np.zeros((padded, n_inputs), dtype=np.float32)
        gi = np.empty((padded, 3 * hidden), dtype=np.float32)
        gh = np.empty((padded, 3 * hidden), dtype=np.float32)
        xrow = np.empty(n_inputs, dtype=np.float32)
        target = np.empty(n_time, dtype=np.float32)
        # Per column: the chunk row, slot and point index of each series with a point in it.
        active = np.empty(rows, dtype=np.int64)
        act_slot = np.empty(rows, dtype=np.int64)
        act_point = np.empty(rows, dtype=np.int64)
        scale_a = np.empty(rows)
        gap_a = np.empty(rows)
        learn_a = np.empty(rows, dtype=np.bool_)
        longest = 0
        for i in range(rows):
            s = row_slot[first_row + i]
            for layer in range(layers):
                for c in range(hidden):
                    h[i, layer, c] = state[s, layer, c]
            longest = max(longest, row_length[first_row + i])

        for j in range(longest):
            m = 0
            for i in range(rows):
                row = first_row + i
                if row_length[row] > j:
                    active[m] = i
                    act_slot[m] = row_slot[row]
                    act_point[m] = row_start[row] + j
                    m += 1
            # -- features and decay, per point ---------------------------------------------
            for a in range(m):
                i = active[a]
                s = act_slot[a]
                p = act_point[a]
                # features (forecast.features.point_features), of the clamped value
                t = ts[p]
                v = _clamp(values[p], value_limit)
                count = f_count[s]
                mean = f_mean[s]
                var = f_var[s]
                last_value = f_last_value[s]
                has_prev = count > 0
                gap = t - f_last_ts[s] if has_prev else 1.0
                typical = math.exp(f_log_gap_mean[s]) if f_gap_count[s] > 0 else gap
                gap_c = max(gap, 1e-6)
                typical_c = max(typical, 1e-6)
                day_phase = (_TWO_PI / _DAY_S) * _time_of(t, _DAY_S)
                week_phase = (_TWO_PI / _WEEK_S) * _time_of(t, _WEEK_S)
                target[0] = _clip(math.log(gap_c / typical_c), -10.0, 10.0)
                target[1] = math.log1p(gap_c) / 10.0
                target[2] = 1.0 if gap_c > gap_factor * typical_c else 0.0
                target[3] = math.sin(day_phase)
                target[4] = math.cos(day_phase)
                target[5] = math.sin(week_phase)
                target[6] = math.cos(week_phase)
                level = max(math.sqrt(max(var, 0.0)), 1e-6 + 1e-4 * abs(mean))
                if count >= 2:
                    scale = max(math.sqrt(max(f_step_var[s], 0.0)), step_floor * level)
                else:
                    scale = level
                if has_prev:
                    xrow[0] = _clip((v - mean) / level, -input_clip, input_clip)
                    xrow[1] = _clip((v - last_value) / scale, -input_clip, input_clip)
                else:
                    xrow[0] = 0.0
                    xrow[1] = 0.0
                for c in range(n_time):
                    xrow[2 + c] = target[c]
                for c in range(n_inputs):
                    xrow[c] *= input_mask[c]
                for c in range(n_time):
                    target[c] *= target_mask[c]
                for c in range(n_inputs):
                    x[a, c] = xrow[c]
                scale_a[a] = scale
                gap_a[a] = gap
                # GRU-D decay (forecast.gru.decay_state), then the head's input
                for layer in range(layers):
                    for c in range(hidden):
                        hv = h[i, layer, c]
                        if use_decay:
                            lin = decay_b[g, layer, c]
                            lin += decay_w_t[g, layer, 0, c] * target[0]
                            lin += decay_w_t[g, layer, 1, c] * target[1]
                            gamma = np.exp(-max(lin, _F32(0.0)))
                            prior = h_prior[g, layer, c]
                            hd[layer, a, c] = prior + gamma * (hv - prior)
                        else:
                            hd[layer, a, c] = hv
                for c in range(hidden):
                    head_in[a, c] = hd[layers - 1, a, c]
                for c in range(n_time):
                    head_in[a, hidden + c] = target[c]
            # -- forecast head (forecast.gru.predict): one matrix product ----------------------
            mm = max(m, 2)
            np.dot(head_in[:mm], head_w1_t[g], z1[:mm])
            # -- forecast, score, alert and learn, per point -------------------------------------
            for a in range(m):
                s = act_slot[a]
                p = act_point[a]
                t = ts[p]
                v = _clamp(values[p], value_limit)
                beyond = abs(values[p]) > value_limit
                count = f_count[s]
                mean = f_mean[s]
                var = f_var[s]
                last_value = f_last_value[s]
                has_prev = count > 0
                scale = scale_a[a]
                gap = gap_a[a]
                delta = head_b2[g, 0]
                log_var = head_b2[g, 1]
                for r in range(head_hidden):
                    act = _tanh(z1[a, r] + head_b1[g, r])
                    delta += head_w2[g, 0, r] * act
                    log_var += head_w2[g, 1, r] * act
                log_var_f = _clip(float(log_var), log_var_low, log_var_high)

                # -- raw score (scoring.raw) -------------------------------------------------------
                forecast = math.nan
                spread = math.nan
                if count > 0:
                    forecast = last_value + scale * float(delta)
                    spread = scale * math.exp(0.5 * log_var_f)
                raw = math.nan
                usable = math.isfinite(forecast) and math.isfinite(spread) and spread > 0
                if count >= min_seen and usable:
                    raw = (v - forecast) / spread

                # -- seasonal deflation (scoring.seasonal) -----------------------------------------
                if use_seasonal:
                    original = raw
                    b = int(_time_of(t, _DAY_S) * (bins / _DAY_S)) % bins
                    day = math.floor(t / _DAY_S)
                    overall = season_overall[s]
                    ready = season_first_day[s, b] < day and season_overall_count[s] >= 10
                    if ready:
                        raw = raw / max(1.0, season_mag[s, b] / max(overall, 1e-9))
                    if math.isfinite(original) and not beyond:
                        magnitude = min(abs(original), 50.0)
                        season_first_day[s, b] = min(
                            float(season_first_day[s, b]), _clip(day, 0.0, 65534.0)
                        )
                        bin_count = float(season_count[s, b]) + 1.0
                        weight = max(1.0 / bin_count, 0.3)
                        mag = float(season_mag[s, b])
                        season_mag[s, b] = mag + weight * (magnitude - mag)
                        season_count[s, b] = min(bin_count, 255.0)
                        n = season_overall_count[s] + 1.0
                        w = max(1.0 / n, 0.01)
                        season_overall[s] = overall + w * (magnitude - overall)
                        season_overall_count[s] = n

                # -- calibration (scoring.likelihood / tail / evt) ---------------------------------
                score = 0.0
                finite = math.isfinite(raw)
                if count >= warmup:
                    if calibration == 0:
                        short, l_mean, l_var, l_count = cal[0][s], cal[1][s], cal[2][s], cal[3][s]
                        magnitude = abs(raw) if finite else 0.0
                        w = cal_a if l_count > 0 else 1.0
                        short_now = short + w * (magnitude - short)
                        l_spread = max(math.sqrt(l_var), 1e-3)
                        z = -math.inf
                        if finite and l_count >= 10:
                            z = (short_now - l_mean) / l_spread
                        score = _score_from_log10_tail(-log_ndtr(-z) / _LN10)
                    elif calibration == 1:
                        t_mean, t_var, t_count = cal[0][s], cal[1][s], cal[2][s]
                        t_spread = max(math.sqrt(t_var), 1e-3)
                        z = 0.0
                        if finite and t_count >= 2:
                            z = abs(raw - t_mean) / t_spread
                        score = _score_from_log10_tail(-(log_ndtr(-z) + _LN2) / _LN10)
                    else:
                        score = _evt_score(cal, s, raw)

                # -- level novelty (scoring.novelty) -----------------------------------------------
                eligible = True
                skip_cooldown = False
                deviation = 0.0
                if use_novelty:
                    age = max(t - nov_ts[s], 0.0)
                    fade = 2.0 ** (-age / half_life_s)
                    up = float(nov_up[s]) * fade
                    down = float(nov_down[s]) * fade
                    centre = nov_centre[s]
                    signed = v - centre
                    deviation = abs(signed) if math.isfinite(signed) else 0.0
                    envelope = up if signed >= 0 else down
                    novelty = 0.0
                    if math.isfinite(signed) and abs(signed) > 0:
                        novelty = abs(signed) / envelope if envelope > 0 else math.inf
                    eligible = nov_count[s] < 10 or novelty >= min_novelty
                    last_dev = float(nov_alert_dev[s])
                    skip_cooldown = (
                        cooldown_factor > 0
                        and last_dev > 0
                        and deviation >= cooldown_factor * last_dev
                    )
                    if math.isfinite(v) and not beyond:
                        mad = float(nov_mad[s])
                        n_count = float(nov_count[s]) + 1.0
                        first = n_count == 1.0
                        dev = 0.0 if first else v - centre
                        weight = max(1.0 / n_count, 0.01)
                        bound = 3.0 * mad if n_count > 10 else math.inf
                        clipped = _clip(dev, -bound, bound)
                        new_centre = v if first else centre + weight * clipped
                        shift = new_centre - centre
                        if first:
                            up = 0.0
                            down = 0.0
                        else:
                            up = max(max(up, dev) - shift, 0.0)
                            down = max(max(down, -dev) + shift, 0.0)
                        nov_centre[s] = new_centre
                        nov_mad[s] = mad + weight * (abs(clipped) - mad)
                        nov_up[s] = up
                        nov_down[s] = down
                        nov_ts[s] = t
                        nov_count[s] = n_count

                # -- alert rule (scoring.alert_rule) -----------------------------------------------
                hit = score >= warn_at
                hits = ((rule_hits[s] << 1) | (1 if hit else 0)) & window_mask
                episode = 0 if score < clear_at else int(rule_episode[s])
                cooldown = rule_cooldown[s]
                last_alert = rule_last_alert_ts[s]
                cooled = cooldown <= 0
                if cooldown_s > 0:
                    cooled = cooled and t - last_alert >= cooldown_s
                if use_novelty:
                    cooled = cooled or skip_cooldown
                armed = episode == 0 and cooled and eligible
                bits = 0
                rest = hits
                while rest:
                    bits += rest & 1
                    rest >>= 1
                critical = score >= crit_at
                fire = armed and bits >= min_hits and hit
                severity = 0
                if fire or (episode == 1 and critical):
                    severity = 2 if critical else 1
                    episode = severity
                rule_hits[s] = hits
                rule_episode[s] = episode
                rule_cooldown[s] = cooldown_points if fire else max(cooldown - 1, 0.0)
                if fire:
                    rule_last_alert_ts[s] = t
                if use_novelty and severity > 0 and armed:
                    nov_alert_dev[s] = deviation

                # -- learning policy (scoring.chain) -----------------------------------------------
                skipped = skipped_run[s]
                held = beyond or (hit and not learn_anomalies)
                skip = held and skipped < max_skipped
                if skip:
                    skipped_run[s] = skipped + 1
                elif not (hit or beyond):
                    skipped_run[s] = 0
                learn = not skip
                if learn and finite:
                    if calibration == 0:
                        magnitude = min(abs(raw), 10.0)
                        short = cal[0][s]
                        w = cal_a if cal[3][s] > 0 else 1.0
                        short = short + w * (magnitude - short)
                        _ew_update(cal[1], cal[2], cal[3], s, short, cal_b)
                        cal[0][s] = short
                    elif calibration == 1:
                        _ew_update(cal[0], cal[1], cal[2], s, _clip(raw, -10.0, 10.0), cal_a)
                    else:
                        _evt_learn(cal, s, raw, cal_a, cal_b)

                out_forecast[p] = forecast
                out_spread[p] = spread
                out_scale[p] = scale
                out_score[p] = score
                out_armed[p] = score if armed else 0.0
                out_severity[p] = severity
                learn_a[a] = learn
                if not learn:
                    continue

                # -- learn the point: features (forecast.features.learn_point) and state -----------
                if has_prev:
                    change = v - last_value
                    clipped_change = _clip(change, -5.0 * scale, 5.0 * scale)
                    if count > 1:
                        f_step_var[s] = (1 - step_alpha) * f_step_var[s] + step_alpha * (
                            clipped_change * clipped_change
                        )
                    else:
                        f_step_var[s] = change * change
                    g_count = f_gap_count[s] + 1.0
                    g_weight = max(1.0 / g_count, gap_alpha)
                    f_log_gap_mean[s] = f_log_gap_mean[s] + g_weight * (
                        math.log(max(gap, 1e-6)) - f_log_gap_mean[s]
                    )
                    f_gap_count[s] = g_count
                count1 = count + 1.0
                weight = max(1.0 / count1, normaliser_alpha)
                d = v - mean
                f_mean[s] = mean + weight * d
                f_var[s] = (1.0 - weight) * (var + weight * d * d)
                f_count[s] = count1
                f_last_ts[s] = t
                f_last_value[s] = v

            # -- the GRU cells (forecast.gru.advance): two matrix products per layer ------------
            for layer in range(layers):
                if layer == 0:
                    np.dot(x[:mm], w_ih0_t[g], gi[:mm])
                else:
                    np.dot(new_h[layer - 1, :mm], w_ihn_t[g, layer - 1], gi[:mm])
                np.dot(hd[layer, :mm], w_hh_t[g, layer], gh[:mm])
                for a in range(m):
                    _gru_gates(
                        gi[a], gh[a], b_ih[g, layer], b_hh[g, layer], hd[layer, a],
                        new_h[layer, a],
                    )  # fmt: skip
            # A point not learned leaves its series' state as it was (undecayed).
            for a in range(m):
                if learn_a[a]:
                    i = active[a]
                    for layer in range(layers):
                        for c in range(hidden):
                            h[i, layer, c] = new_h[layer, a, c]

        for i in range(rows):
            s = row_slot[first_row + i]
            for layer in range(layers):
                for c in range(hidden):
                    state[s, layer, c] = h[i, layer, c]


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _ew_update(
    mean: np.ndarray, var: np.ndarray, count: np.ndarray, s: int, x: float, alpha: float
) -> None:
    """:func:`streamrnn.forecast.normaliser.ew_update` of one row, in place."""
    n = count[s] + 1.0
    weight = max(1.0 / n, alpha)
    delta = x - mean[s]
    mean[s] = mean[s] + weight * delta
    var[s] = (1.0 - weight) * (var[s] + weight * delta * delta)
    count[s] = n


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _evt_score(cal: tuple[np.ndarray, ...], s: int, raw: float) -> float:
    """:meth:`streamrnn.scoring.evt.EVTCalibrator.score` of one point."""
    c_t, c_phi, c_m, c_v, c_peaks, c_n = (
        cal[0][s],
        cal[1][s],
        cal[2][s],
        cal[3][s],
        cal[4][s],
        cal[5][s],
    )
    if not (math.isfinite(raw) and c_n >= 30 and c_peaks >= 5):
        return 0.0
    x = abs(raw)
    t = max(c_t, 1e-9)
    phi = _clip(c_phi, 1e-6, 1.0)
    m = max(c_m, 1e-9)
    ratio = _clip(m * m / max(c_v, 1e-18), 1e-3, 1e3)
    gamma = _clip(0.5 * (1.0 - ratio), -0.4, 0.5)
    sigma = max(0.5 * m * (1.0 + ratio), 1e-9)
    excess = max(x - t, 0.0)
    base = 1.0 + gamma * excess / sigma
    if abs(gamma) < 1e-6:
        gpd = -excess / sigma / _LN10
    elif base > 0:
        gpd = -math.log10(max(base, 1e-300)) / gamma
    else:
        gpd = -math.inf
    log10_p = math.log10(phi) + gpd if x > t else math.log10(phi) * min(x / t, 1.0)
    return _score_from_log10_tail(-log10_p)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _evt_learn(
    cal: tuple[np.ndarray, ...], s: int, raw: float, quantile: float, rate: float
) -> None:
    """:meth:`streamrnn.scoring.evt.EVTCalibrator.learn` of one point."""
    x = abs(raw)
    old_n = cal[5][s]
    n = old_n + 1.0
    mean = cal[6][s] + (x - cal[6][s]) / min(n, 200.0)
    t = cal[0][s] if old_n > 0 else x
    above = 1.0 if x > t else 0.0
    t = max(t + 0.05 * mean * (above - (1.0 - quantile)), 0.0)
    cal[1][s] = cal[1][s] + max(rate, 1.0 / n) * (above - cal[1][s])
    peaks = cal[4][s] + above
    weight = max(0.02, 1.0 / max(peaks, 1.0))
    excess = max(x - t, 0.0)
    delta = excess - cal[2][s]
    if above > 0:
        cal[3][s] = (1 - weight) * (cal[3][s] + weight * delta * delta)
        cal[2][s] = cal[2][s] + weight * delta
    cal[0][s] = t
    cal[4][s] = peaks
    cal[5][s] = n
    cal[6][s] = mean
