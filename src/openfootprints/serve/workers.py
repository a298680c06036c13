"""Detection workers: processes that each hold the model and run one detection at a time.

Why processes and not threads: a detection that runs past its time limit is stopped by killing its
process (a Python thread cannot be stopped), which frees its memory and cores at once; the pool then
starts a replacement. Workers are forked from a forkserver that imported the heavy modules once, so a
replacement costs a fork and a model load, not a fresh interpreter.

Each worker owns its model (ONNX Runtime session or torch module) and runs one job at a time, so
nothing is shared between concurrent requests and no lock is needed around inference.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import multiprocessing
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio

from openfootprints.errors import InputError

log = logging.getLogger(__name__)
SUMMARY = "summary.json"  # beside a job's result: what detect had to say about it (a warning)

STARTUP_TIMEOUT_S = 600.0  # a cold forkserver imports torch, GDAL and friends once; slow disks take a while
PRELOAD = ["openfootprints.pipeline", "openfootprints.io.vector", "openfootprints.export.buildings"]  # all a job imports


class PoolBusy(Exception):
    """Every worker is busy and the queue is full."""


class DetectionTimeout(Exception):
    """A detection ran past its time limit; its worker was killed and is being replaced."""


class WorkerFailed(Exception):
    """A worker failed for a reason that is not the input's (it died, or the code raised)."""


class NoWorker(Exception):
    """No worker is running: the pool has not started, has stopped, or could not replace its workers."""


@dataclass(frozen=True)
class Job:
    """One detection: the uploaded scene, the folder to write the result into, ``geojson`` or ``parquet``."""

    scene: str
    out_dir: str
    fmt: str


def run_job(cfg, detector, job: Job) -> Path:
    """Run :func:`openfootprints.api.detect_file` with the worker's ``detector`` on the job's scene; the buildings
    table in the job's format, written as ``detect --out`` writes it."""
    from openfootprints.api import detect_file
    from openfootprints.io.vector import read_table, write_table

    table = Path(job.out_dir) / "buildings.parquet"
    summary = detect_file(job.scene, table, detector, config=cfg)
    (Path(job.out_dir) / SUMMARY).write_text(json.dumps({k: summary.get(k) for k in ("warning", "area_km2", "drift")}))
    if job.fmt == "parquet":
        return table
    return write_table(read_table(str(table)), Path(job.out_dir) / "buildings.geojson")


def worker_main(conn, cfg_dict: dict, model_path: str, scratch: str, threads: int) -> None:
    """A worker process: load the model, say ``ready``, then answer one job at a time until the pipe closes.

    Answers are ``("ok", path)``, ``("input", message)`` for bad input, ``("error", message)`` otherwise.
    """
    tempfile.tempdir = scratch  # detect's temporary files land where the pool removes them, even after a kill
    try:
        import torch
        from omegaconf import OmegaConf

        from openfootprints.api import load_detector

        torch.set_num_threads(threads)
        cfg = OmegaConf.create(cfg_dict)
        detector = load_detector(model_path, config=cfg, threads=threads, workdir=scratch)
    except Exception as err:  # reported to the pool, which refuses to start
        conn.send(("error", str(err) if isinstance(err, InputError) else f"{model_path}: {err}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        try:
            conn.send(("ok", str(run_job(cfg, detector, job))))
        except InputError as err:
            conn.send(("input", str(err)))
        except Exception as err:  # a bug or a resource problem, not the input's fault: logged here, 500 there
            log.exception("detection of %s failed", job.scene)
            conn.send(("error", f"{type(err).__name__}: {err}"))


class Worker:
    """One worker process and the pipe to it."""

    def __init__(self, ctx, cfg_dict: dict, model_path: str, scratch: Path, threads: int):
        self.scratch = scratch
        scratch.mkdir(parents=True, exist_ok=True)
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=worker_main, args=(child, cfg_dict, model_path, str(scratch), threads),
                                   daemon=True, name=f"openfootprints-{scratch.name}")
        self.process.start()
        child.close()

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the model is loaded; :class:`WorkerFailed` if loading failed or took too long."""
        if not self.conn.poll(timeout_s):
            raise WorkerFailed(f"a detection worker did not load the model within {timeout_s:.0f} s")
        kind, message = self._receive()
        if kind != "ready":
            raise WorkerFailed(message)

    def run(self, job: Job, timeout_s: float) -> Path:
        """The job's result; :class:`DetectionTimeout` (the caller must :meth:`kill` this worker),
        :class:`InputError` or :class:`WorkerFailed`."""
        try:
            self.conn.send(job)
        except OSError:  # the process died since its last job
            raise WorkerFailed(f"the detection worker stopped (exit code {self.process.exitcode}); "
                               "it is being replaced") from None
        if not self.conn.poll(timeout_s):
            raise DetectionTimeout(f"detection took longer than serve.max_seconds={timeout_s:g} s and was stopped; "
                                   "send a smaller scene")
        kind, payload = self._receive()
        if kind == "input":
            raise InputError(payload)
        if kind == "error":
            raise WorkerFailed(f"detection failed: {payload}")
        assert payload is not None  # "ok": the path of the result
        return Path(payload)

    def _receive(self) -> tuple[str, str | None]:
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            self.process.join(5)
            raise WorkerFailed(f"the detection worker stopped (exit code {self.process.exitcode}); "
                               "it is being replaced") from None

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the worker to exit, kill it if it does not, remove its scratch folder."""
        with contextlib.suppress(OSError):
            self.conn.send(None)
        self.process.join(timeout_s)
        self.kill()

    def kill(self) -> None:
        """Stop the worker now (mid-job too) and remove its scratch folder."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()
        shutil.rmtree(self.scratch, ignore_errors=True)


class WorkerPool:
    """``size`` worker processes holding the model; at most ``size`` detections run and ``max_queued`` wait.

    A request holds :meth:`admit` (non-blocking, raises :class:`PoolBusy`) around :meth:`detect`, which waits
    its turn without holding a thread (first come, first served) and runs the job on a free worker.
    """

    def __init__(self, cfg_dict: dict, model_path: str, size: int, max_queued: int, threads: int | None = None):
        self.cfg_dict, self.model_path, self.size, self.max_queued = cfg_dict, model_path, size, max_queued
        self.threads = threads or max(1, (os.cpu_count() or 1) // size)
        self._idle: queue.SimpleQueue[Worker] = queue.SimpleQueue()
        self._workers: set[Worker] = set()
        self._waiting: collections.deque[object] = collections.deque()  # admitted requests, oldest first
        self._lock = threading.Lock()
        self._busy = self._started = 0
        self._root: Path | None = None
        self._closed = False

    def start(self) -> None:
        """Start the workers and wait until each has loaded the model; :class:`WorkerFailed` if one cannot."""
        self._root = Path(tempfile.mkdtemp(prefix="openfootprints-serve-"))
        workers = [self._spawn() for _ in range(self.size)]
        try:
            for worker in workers:
                worker.wait_ready(STARTUP_TIMEOUT_S)
        except WorkerFailed:
            self.close()
            raise
        for worker in workers:
            self._idle.put(worker)

    def _spawn(self) -> Worker:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)  # only read when the forkserver starts, once per process
        assert self._root is not None  # set by start()
        with self._lock:
            self._started += 1
            worker = Worker(ctx, self.cfg_dict, self.model_path, self._root / f"worker{self._started}", self.threads)
            self._workers.add(worker)
        return worker

    @contextlib.contextmanager
    def admit(self) -> Iterator[object]:
        """A place in the queue of detections (a ticket for :meth:`detect`); :class:`PoolBusy` when it is full."""
        ticket = object()
        with self._lock:
            if len(self._waiting) + self._busy >= self.size + self.max_queued:
                raise PoolBusy(f"{self.size} detection(s) running and {self.max_queued} waiting "
                               "(serve.max_concurrent, serve.max_queued); retry later")
            self._waiting.append(ticket)
        try:
            yield ticket
        finally:
            with self._lock:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(ticket)

    async def detect(self, ticket: object, job: Job, timeout_s: float) -> Path:
        """Wait for this ticket's turn and a free worker, then run the job on it (in a thread; see :meth:`run_on`)."""
        while (worker := self._take(ticket)) is None:
            await anyio.sleep(0.05)
        return await anyio.to_thread.run_sync(self.run_on, worker, job, timeout_s)

    def _take(self, ticket: object) -> Worker | None:
        """A free worker if ``ticket`` is the oldest waiting and one is free, else None. A worker that died while
        idle (out of memory?) is replaced; :class:`NoWorker` when none is running or starting."""
        with self._lock:
            if self._closed or not self._workers:
                raise NoWorker("no detection worker is running (starting, or failed: see the server log); "
                               "retry later")
            if self._waiting[0] is not ticket:
                return None
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                return None
            if worker.alive:
                self._waiting.popleft()
                self._busy += 1
                return worker
        log.warning("a detection worker died while idle (exit code %s); replacing it", worker.process.exitcode)
        self._replace(worker)
        return None

    def run_on(self, worker: Worker, job: Job, timeout_s: float) -> Path:
        """Run a job on a worker taken by :meth:`detect` (blocking); a worker that overruns or dies is replaced."""
        try:
            result = worker.run(job, timeout_s)
        except (DetectionTimeout, WorkerFailed) as err:
            if isinstance(err, DetectionTimeout) or not worker.alive:
                self._replace(worker)
            else:
                self._idle.put(worker)
            raise
        except BaseException:
            self._idle.put(worker)
            raise
        finally:
            with self._lock:
                self._busy -= 1
        self._idle.put(worker)
        return result

    def _replace(self, worker: Worker) -> None:
        """Kill ``worker`` now; its replacement loads the model in the background, then takes jobs."""
        worker.kill()
        with self._lock:
            closed = self._closed
        replacement = None if closed else self._spawn()  # before the discard: waiting requests see a worker coming
        with self._lock:
            self._workers.discard(worker)
        if replacement is not None:
            threading.Thread(target=self._enlist, args=(replacement,), name="openfootprints-replace",
                             daemon=True).start()

    def _enlist(self, worker: Worker) -> None:
        """Put a new worker in the idle queue once it has loaded the model."""
        try:
            worker.wait_ready(STARTUP_TIMEOUT_S)
        except WorkerFailed as err:
            with self._lock:
                self._workers.discard(worker)
                closed = self._closed
            if not closed:
                log.error("a replacement detection worker failed to start: %s", err)
            worker.kill()
            return
        with self._lock:
            closed = self._closed
        if closed:
            worker.stop()
        else:
            self._idle.put(worker)

    def status(self) -> dict:
        """Workers running or starting (``workers``), free for a job (``idle``), running one (``busy``), requests
        waiting for one (``queued``)."""
        with self._lock:
            return {"workers": len(self._workers), "idle": self._idle.qsize(), "busy": self._busy,
                    "queued": len(self._waiting)}

    def close(self) -> None:
        """Stop every worker (running jobs too) and remove the scratch folders."""
        with self._lock:
            self._closed = True
            workers = list(self._workers)
            self._workers.clear()
        for worker in workers:
            worker.stop()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
