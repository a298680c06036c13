"""The service as a team runs it: a sustained, bounded load, then a worker killed midway.

    python bench/serve_load.py [--minutes 10] [--clients 4] [--concurrent 2] [--model M.ofp]

Starts ``openfootprints serve`` on a free loopback port (default model: the shipped base model) and lets
``--clients`` threads post scenes for ``--minutes``, small and large mixed 3 to 1: the shipped Kampala crop
(768 × 512 px) and a synthetic 2048² px scene at 0.5 m. Halfway through, the busiest worker process is killed
(SIGKILL) while it runs a job. Prints the requests served, p50/p95 latency per size, every status code, what the
clients whose job died saw, and the service's memory (the server and its workers, RSS, sampled every 5 s): its
largest sample in each minute and its trend before the kill (a plateau or a slow growth). Only 127.0.0.1 is
contacted; every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hardware import machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REQUEST_TIMEOUT_S = 600.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_rss_gib(server: psutil.Process) -> float:
    """Resident memory of the server and all its descendants (workers, forkserver), GiB."""
    total = 0
    for proc in [server, *server.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**30


def wait_ready(url: str, workers: int, deadline_s: float) -> None:
    """Until /health says every worker has the model (or the deadline passes: an error)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            health = httpx.get(f"{url}/health", timeout=5).json()
            if health.get("status") == "ok" and health.get("model_loaded"):
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"the service at {url} did not become ready in {deadline_s:.0f} s")


def busiest_worker(server: psutil.Process) -> psutil.Process | None:
    """The descendant process using the most CPU over half a second (a worker in the middle of a job)."""
    procs = server.children(recursive=True)
    for p in procs:
        p.cpu_percent(None)
    time.sleep(0.5)
    usage = []
    for p in procs:
        try:
            usage.append((p.cpu_percent(None), p))
        except psutil.NoSuchProcess:
            pass
    return max(usage, key=lambda u: u[0])[1] if usage else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--concurrent", type=int, default=2, help="serve.max_concurrent: worker processes")
    parser.add_argument("--model", help="a bundle (default: the shipped base model)")
    args = parser.parse_args()

    from openfootprints.demo import DEMO_SCENE
    from openfootprints.synth.scene import SceneSpec, write_scene

    work = Path(tempfile.mkdtemp(prefix="openfootprints-load-"))
    large = work / "large.tif"
    write_scene(SceneSpec(width=2048, height=2048, resolution_m=0.5, seed=7), large, work / "large.geojson")
    scenes = {"small": (DEMO_SCENE.read_bytes(), 3), "large": (large.read_bytes(), 1)}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "openfootprints.cli", "serve", "--port", str(port),
           f"serve.max_concurrent={args.concurrent}", f"serve.max_queued={args.clients * 2}", "tracking.energy=false"]
    cmd += ["--model", args.model] if args.model else []
    log = open(work / "serve.log", "w")
    server_proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    server = psutil.Process(server_proc.pid)
    results: list[dict] = []
    lock = threading.Lock()
    try:
        wait_ready(url, args.concurrent, 600)
        order = [name for name, (_, weight) in scenes.items() for _ in range(weight)]
        started = time.monotonic()
        stop_at = started + args.minutes * 60

        def client(k: int) -> None:
            with httpx.Client(timeout=REQUEST_TIMEOUT_S) as http:
                i = k
                while time.monotonic() < stop_at:
                    name = order[i % len(order)]
                    i += 1
                    start = time.monotonic()
                    try:
                        r = http.post(f"{url}/detect", files={"file": (f"{name}.tif", scenes[name][0], "image/tiff")})
                        status, detail = r.status_code, (r.json().get("detail") if r.status_code >= 400 else None)
                    except httpx.HTTPError as err:
                        status, detail = "connection", str(err)
                    with lock:
                        results.append({"scene": name, "status": status, "seconds": time.monotonic() - start,
                                        "ended": time.monotonic(), "detail": detail})

        threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(args.clients)]
        for t in threads:
            t.start()
        samples = MemorySampler(server, started)
        samples.start()
        time.sleep(max(0.0, (stop_at - time.monotonic()) / 2))
        victim = busiest_worker(server)
        killed_at = time.monotonic() - started
        if victim is not None:
            os.kill(victim.pid, signal.SIGKILL)
        for t in threads:
            t.join()
        samples.stop()
        health = httpx.get(f"{url}/health", timeout=10).json()
    finally:
        server_proc.send_signal(signal.SIGINT)
        try:
            server_proc.wait(60)
        except subprocess.TimeoutExpired:
            server_proc.kill()
        log.close()

    print(f"# serve under load: {machine()}, {args.clients} clients, serve.max_concurrent={args.concurrent}, "
          f"{args.minutes:g} min, {time.strftime('%Y-%m-%d')}")
    codes = Counter(str(r["status"]) for r in results)
    print(f"requests: {len(results)}, status codes: {dict(codes)}")
    for name in scenes:
        ok = sorted(r["seconds"] for r in results if r["scene"] == name and r["status"] == 200)
        if ok:
            p95 = ok[min(len(ok) - 1, round(0.95 * (len(ok) - 1)))]
            print(f"{name}: {len(ok)} served, p50 {statistics.median(ok):.2f} s, p95 {p95:.2f} s")
    during = [r for r in results if r["status"] != 200]
    print(f"worker killed (pid {victim.pid if victim else None}) at {killed_at:.0f} s; "
          f"requests not served: {json.dumps([(r['scene'], r['status'], r['detail']) for r in during])}")
    print(f"health after: {json.dumps(health)}")
    minutes = samples.by_minute()
    print("service memory (server + workers, RSS), largest sample per minute: "
          + ", ".join(f"min {m + 1}: {gib:.2f} GiB" for m, gib in enumerate(minutes)))
    slope = samples.trend_gib_per_minute(until_s=killed_at)
    print(f"memory trend before the kill: {slope:+.3f} GiB/min (least squares over the samples after the first "
          f"minute); at most {max(minutes):.2f} GiB")


class MemorySampler(threading.Thread):
    """The service's RSS (:func:`service_rss_gib`) every ``every_s`` seconds, with the time since ``t0``."""

    def __init__(self, server: psutil.Process, t0: float, every_s: float = 5.0):
        super().__init__(daemon=True)
        self.server, self.t0, self.every_s = server, t0, every_s
        self.samples: list[tuple[float, float]] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.samples.append((time.monotonic() - self.t0, service_rss_gib(self.server)))
            self._done.wait(self.every_s)

    def stop(self) -> None:
        self._done.set()
        self.join()

    def by_minute(self) -> list[float]:
        """The largest sample of each minute, GiB."""
        last = int(self.samples[-1][0] // 60)
        return [max((g for t, g in self.samples if int(t // 60) == m), default=0.0) for m in range(last + 1)]

    def trend_gib_per_minute(self, until_s: float) -> float:
        """Least-squares slope of the samples from the second minute until ``until_s`` (the kill), GiB per minute."""
        points = [(t, g) for t, g in self.samples if 60 <= t < until_s]
        if len(points) < 3:
            return float("nan")
        t, g = np.array(points).T
        return float(np.polyfit(t / 60, g, 1)[0])


if __name__ == "__main__":
    main()
