"""Timing helpers of the benchmarks: repeated and interleaved calls, the printed table, the machine's line."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np


def timed(fn, repeats: int) -> list[float]:
    """Seconds per call of `fn`, after one warm-up (tracing, allocation, caches)."""
    return interleaved([fn], repeats)[0]


def interleaved(fns: list, repeats: int) -> list[list[float]]:
    """Seconds per call of each of `fns`, taking turns (after one warm-up each), so all see the same machine."""
    for fn in fns:
        fn()
    out = [[] for _ in fns]
    for _ in range(repeats):
        for store, fn in zip(out, fns):
            start = time.perf_counter()
            fn()
            store.append(time.perf_counter() - start)
    return out


class Table:
    def __init__(self):
        self.rows = []

    def add(self, name: str, ours: list[float] | float, naive: list[float] | float | None, unit: str,
            higher_is_better: bool = False) -> None:
        self.rows.append((name, ours, naive, unit, higher_is_better))
        print(self._format(self.rows[-1]), flush=True)

    @staticmethod
    def _stat(values) -> tuple[float, str]:
        if values is None:
            return float("nan"), "-"
        v = np.atleast_1d(np.asarray(values, float))
        if len(v) == 1:
            return float(v[0]), f"{v[0]:.1f}"
        return float(np.median(v)), f"{np.median(v):.1f} ({v.min():.1f}-{v.max():.1f})"

    def _format(self, row) -> str:
        name, ours, naive, unit, higher = row
        o, o_text = self._stat(ours)
        n, n_text = self._stat(naive)
        ratio = "" if np.isnan(o) or np.isnan(n) else f"{(o / n if higher else n / o):.1f}x"
        return f"{name:<48}{o_text:>26}{n_text:>26}  {unit:<8}{ratio:>6}"

    def header(self) -> None:
        print(f"{'measure':<48}{'ours: median (min-max)':>26}{'naive baseline':>26}  {'unit':<8}{'gain':>6}")


def machine() -> str:
    import tensorflow as tf

    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        line = next(row for row in text.splitlines() if row.startswith("flags"))
        wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")
        flags = " ".join(f for f in wanted if f" {f}" in line)
    except (OSError, StopIteration):
        pass
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = "not installed"
    return (f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, flags: {flags}; "
            f"Python {platform.python_version()}, TensorFlow {tf.__version__}, ONNX Runtime {ort}")
