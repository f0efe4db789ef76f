"""The background trainer: one long-lived child process that runs retrain jobs.

Training is CPU-heavy Python and torch; in the daemon's own process it would compete with
the consume loop for the GIL and stretch batch latency. A child process (started with
``spawn``: forking a process that runs librdkafka threads is unsafe) runs one job at a time
with ``retrain.threads`` torch threads at nice ``retrain.nice``, and the loop only checks,
between batches, whether the job has finished. The process is started at the first job and
reused; if it dies, the job is reported failed and the next job starts a new one.

Knows nothing of Kafka.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor

from streamrnn.retrain.job import RetrainJob, RetrainResult, configure_worker, run_retrain

__all__ = ["BackgroundTrainer"]


class BackgroundTrainer:
    """Runs :func:`run_retrain` in a child process, one job at a time."""

    def __init__(self, threads: int, nice: int) -> None:
        self.threads = threads
        self.nice = nice
        self._pool: ProcessPoolExecutor | None = None
        self._future: Future[RetrainResult] | None = None
        self._job: RetrainJob | None = None

    @property
    def busy(self) -> bool:
        """Whether a job was submitted and its outcome not yet collected."""
        return self._future is not None

    def submit(self, job: RetrainJob) -> None:
        """Start ``job`` in the child process (one at a time: check :attr:`busy` first)."""
        if self._future is not None:
            raise RuntimeError("a retrain is already running")
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=configure_worker,
                initargs=(self.threads, self.nice),
            )
        self._future = self._pool.submit(run_retrain, job)
        self._job = job

    def collect(self) -> tuple[RetrainJob, RetrainResult | BaseException] | None:
        """The finished job and its result (or the exception it raised); None while running
        or idle. Never blocks."""
        future, job = self._future, self._job
        if future is None or job is None or not future.done():
            return None
        self._future = self._job = None
        exc = future.exception()
        if exc is not None:
            if self._pool is not None and getattr(self._pool, "_broken", False):
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
            return job, exc
        return job, future.result()

    def close(self) -> None:
        """Stop the child process (a running job is abandoned)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            processes = getattr(self._pool, "_processes", None) or {}
            for process in list(processes.values()):
                if process.is_alive():
                    process.terminate()
            self._pool = None
        self._future = self._job = None
