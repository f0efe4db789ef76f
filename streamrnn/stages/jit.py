"""How stage functions are compiled: one decorator, so every stage compiles the same way.

``cache=True`` keeps compiled code in ``__pycache__`` (a restart loads it in a second or
two instead of compiling for ~15 s); ``nogil`` lets the kernel's threads run side by side;
``error_model="numpy"`` makes a division by zero give inf/NaN as numpy does instead of
raising, which the stages rely on (and which keeps the loops free of checks);
``inline="always"`` inlines a stage into its caller at numba-IR level, so a composer
compiled without numba's reference counting (:mod:`streamrnn.stages.blas` says why) runs
the stages without it too, and pays no call per stage and point. With
``NUMBA_DISABLE_JIT=1`` the decorated functions are the plain Python functions.

numba's cache checks only the source file of the cached function itself, not of the
functions it calls, so an edited stage would leave the kernel's cached code stale: on
import, :func:`_drop_stale_cache` compares a digest of every compiled source file of the
package with the one recorded beside the cache and drops streamrnn's cached code when
they differ.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import numba

__all__ = ["composer", "stage"]

_F = TypeVar("_F", bound=Callable[..., Any])
_PACKAGE = Path(__file__).resolve().parent.parent
#: Source files with compiled functions (the stages and their composers).
_COMPILED = ("stages/*.py", "engine/kernel.py", "engine/rollout.py")


def stage(fn: _F) -> _F:
    """Compile a per-point stage function (see the module docstring)."""
    return cast(_F, numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")(fn))


#: Flags of a composer (:mod:`streamrnn.engine.kernel`): no NRT (see the module docstring).
_COMPOSER: dict[str, Any] = {"cache": True, "nogil": True, "error_model": "numpy", "_nrt": False}


def composer(fn: _F) -> _F:
    """Compile a composer of stages that allocates nothing (its scratch is passed in), without
    numba's reference-counting runtime: the stages inlined into it run without it too."""
    return cast(_F, numba.njit(**_COMPOSER)(fn))


def _drop_stale_cache() -> None:
    """Delete streamrnn's numba cache files if any compiled source changed since they were
    written (see the module docstring); best effort (a read-only install keeps its cache)."""
    digest = hashlib.sha256()
    for pattern in _COMPILED:
        for path in sorted(_PACKAGE.glob(pattern)):
            digest.update(path.name.encode() + path.read_bytes())
    stamp = _PACKAGE / "stages" / "__pycache__" / "compiled-sources.sha256"
    try:
        if stamp.exists() and stamp.read_text() == digest.hexdigest():
            return
        for pattern in ("*.nbi", "*.nbc"):
            for cached in _PACKAGE.glob(f"**/__pycache__/{pattern}"):
                cached.unlink(missing_ok=True)
        stamp.parent.mkdir(exist_ok=True)
        stamp.write_text(digest.hexdigest())
    except OSError:
        pass


_drop_stale_cache()
