"""The stages run as plain Python with ``NUMBA_DISABLE_JIT=1`` (debugging, coverage), and
agree with the compiled code to float32 rounding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

_SCRIPT = """
import json, sys
import numpy as np
from streamrnn.config import Settings
from streamrnn.decode import DecodedMessage
from streamrnn.engine.build import build_engine

engine = build_engine(Settings(
    model={"pretrained": False, "hidden_size": 8, "num_layers": 2, "horizon_points": 2},
    scoring={"warmup_points": 5},
))
rng = np.random.default_rng(3)
out = []
t = 1_700_000_000.0
for batch in range(6):
    messages = []
    for k in range(3):
        ts = [t + 3600.0 * (batch * 10 + j) + rng.uniform(0, 900) for j in range(10)]
        values = (100.0 * (k + 1) + rng.normal(0, 5, 10)).tolist()
        if batch == 4 and k == 1:
            values[3] = 1e6
        messages.append(DecodedMessage(f"s{k}", ts, values, None))
    result = engine.process(messages)
    out.append([result.forecast.tolist(), result.score.tolist(), result.severity.tolist(),
                result.horizon.mean.tolist()])
json.dump(out, sys.stdout)
"""


def _run(disable_jit: bool) -> list[list[list[float]]]:
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1" if disable_jit else "0"}
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=600,
    )
    result: list[list[list[float]]] = json.loads(done.stdout)
    return result


def test_plain_python_stages_agree_with_the_compiled_ones() -> None:
    compiled, plain = _run(disable_jit=False), _run(disable_jit=True)
    assert len(compiled) == len(plain) == 6
    alerts = 0
    for fast, slow in zip(compiled, plain, strict=True):
        for a, b in zip(fast[:2] + fast[3:], slow[:2] + slow[3:], strict=True):
            np.testing.assert_allclose(np.array(b, dtype=float), np.array(a, dtype=float),
                                       rtol=1e-5, atol=1e-9)  # fmt: skip
        assert fast[2] == slow[2]  # the same alerts
        alerts += sum(1 for s in fast[2] if s > 0)
    assert alerts >= 1  # the 1e6 point alerts, so the comparison covers an alert
