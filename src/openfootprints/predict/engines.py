"""The engines a model runs on, behind one small interface: a normalized batch in, building probabilities out.

:class:`OnnxEngine` runs an exported model with ONNX Runtime on the CPU and never imports PyTorch;
:class:`TorchEngine` runs the bundle's network with PyTorch on any device. Anything else that can turn a batch
into probabilities (another runtime, a remote model) is an :class:`Engine` too.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from typing import Any, Protocol, cast

import numpy as np

from openfootprints.model.bundle import Bundle
from openfootprints.model.onnx import OnnxNetwork


class Engine(Protocol):
    """(N, C, H, W) float32 normalized windows → (N, H, W) float32 building probabilities (or energy)."""

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


def on_cuda(device: str) -> bool:
    return device.startswith("cuda")


GPU_DRIVER_FILES = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/dxg", "/dev/kfd")  # NVIDIA, WSL2, ROCm


def surely_cpu(device: str) -> bool:
    """Whether the ``detect.device`` setting runs on the CPU, known without importing PyTorch: ``cpu``, or ``auto``
    on a machine without any GPU driver (where ``auto`` could only pick the CPU)."""
    return device == "cpu" or (device == "auto" and not any(os.path.exists(f) for f in GPU_DRIVER_FILES))


class OnnxEngine:
    """ONNX Runtime on the CPU with ``threads`` intra-op threads, from the exported model at ``path``."""

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None):
        self.network = OnnxNetwork(path, threads)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return sigmoid(self.network(batch)[:, 0])


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """The logistic function, in the logits' dtype, without overflow for any value (NumPy alone: SciPy's
    ``expit`` would cost detection's start-up the import of ``scipy.special``)."""
    return 0.5 + 0.5 * np.tanh(0.5 * logits)


class TorchEngine:
    """The bundle's network with PyTorch on ``device``: on CUDA channels-last from pinned host memory, with bf16
    autocast; ``compile`` wraps it in ``torch.compile``."""

    def __init__(self, bundle: Bundle, device: str, compile: bool = False):
        import torch

        self.device = device
        self.net = bundle.network().to(device)
        self._bundle_statistics: dict[str, Any] | None = None  # the bundle's batch-norm statistics while adapted
        if on_cuda(device):  # NHWC: what the GPU's convolution kernels are fastest on
            self.net = self.net.to(memory_format=torch.channels_last)
        if compile:
            self.net = cast(torch.nn.Module, torch.compile(self.net))  # an OptimizedModule

    def adapt(self, batches: Iterator[np.ndarray]) -> int:
        """Re-estimate the network's batch-norm statistics on ``batches`` (AdaBN,
        :func:`~openfootprints.predict.adapt.adapt_batchnorm`); returns the windows seen. The bundle's own
        statistics are kept for :meth:`restore`."""
        from openfootprints.predict.adapt import adapt_batchnorm

        if self._bundle_statistics is None:
            self._bundle_statistics = {k: v.clone() for k, v in self.net.state_dict().items() if "running_" in k}
        return adapt_batchnorm(self.net, batches, self.device)

    def restore(self) -> None:
        """The bundle's own batch-norm statistics again, after :meth:`adapt` (nothing to do before it)."""
        if self._bundle_statistics is not None:
            self.net.load_state_dict(self._bundle_statistics, strict=False)
            self._bundle_statistics = None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(batch)
            cuda = on_cuda(self.device)
            if cuda:  # page-locked host memory: the copy runs asynchronously
                x = x.pin_memory().to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=cuda):
                logits = self.net(x)
            return torch.sigmoid(logits.float())[:, 0].cpu().numpy()


M_ARENA_MAX = -8  # glibc's mallopt parameter for the most malloc arenas (malloc.h)
MALLOC_ARENAS = 2


def fewer_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Let the threads created from now on share at most ``arenas`` glibc malloc arenas instead of up to 8 per
    core, each keeping the memory its thread freed: detection's reader, vectorizer and ONNX Runtime threads then
    reuse each other's freed memory (peak 1.34 → 1.24 GiB at 10,000 px, 1.43 → 1.27 at 20,000, as fast;
    bench/RESULTS.md, session 14). Left alone when ``MALLOC_ARENA_MAX`` is set. Returns whether the cap applies
    (False off glibc)."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt)
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))


def onnx_threads(threads: int | None) -> tuple[int, int]:
    """(runs at once, threads per run) for ONNX Runtime on ``threads`` cores (default all): two runs of half the
    threads each, so a thread taken away by reading or vectorizing stalls one run, not both halves of one."""
    total = threads or os.cpu_count() or 1
    runs = 2 if total >= 2 else 1
    return runs, max(1, total // runs)
