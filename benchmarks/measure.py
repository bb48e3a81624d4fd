"""Timing and memory helpers shared by the benchmarks: CUDA events on a GPU, ``perf_counter`` on the CPU.

GPU work is asynchronous: a host clock read right after a launch measures the launch, not the work.
On CUDA every timed call is bracketed by two events recorded on the current stream, and the elapsed
times are read after one synchronisation at the end (no sync between calls, so the GPU is never left
idle by the measurement itself); on the CPU the wall clock around the call is its time.

Not a benchmark itself (the Makefile runs ``benchmarks/bench_*.py``): the scripts import it as a
sibling module.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch


def is_cuda(device: str | torch.device) -> bool:
    return torch.device(device).type == "cuda"


def sync(device: str | torch.device) -> None:
    """Wait for the work queued on ``device`` (nothing to wait for on the CPU)."""
    if is_cuda(device):
        torch.cuda.synchronize()


class Stopwatch:
    """Times calls run on ``device``; :meth:`seconds` gives one elapsed time per call, in order.

    Args:
        device: where the timed work runs; CUDA events there, ``time.perf_counter`` otherwise.
    """

    def __init__(self, device: str | torch.device):
        self.cuda = is_cuda(device)
        self._marks: list[Any] = []  # (start event, end event) on CUDA, elapsed seconds on the CPU

    def time(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` once, timed; returns its result."""
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            self._marks.append((start, end))
            return out
        begin = time.perf_counter()
        out = fn()
        self._marks.append(time.perf_counter() - begin)
        return out

    def seconds(self) -> list[float]:
        """Elapsed seconds of every timed call (synchronises once on CUDA)."""
        if self.cuda:
            torch.cuda.synchronize()
            return [start.elapsed_time(end) / 1e3 for start, end in self._marks]
        return list(self._marks)


def time_calls(fn: Callable[[], Any], device: str | torch.device, warmup: int, repeats: int) -> tuple[list[float], list[Any]]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed.

    Returns:
        The seconds of each timed call and what each timed call returned (e.g. a detached loss, read
        only after timing so that no value forces a sync inside the timed region).
    """
    for _ in range(warmup):
        fn()
    sync(device)
    watch = Stopwatch(device)
    results = [watch.time(fn) for _ in range(repeats)]
    return watch.seconds(), results


def time_interleaved(fns: dict[str, Callable[[], Any]], device: str | torch.device, warmup: int, rounds: int,
                     calls: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each function, measured in rounds that alternate them (fair under background load).

    Every function runs ``warmup`` times first. Each round times ``calls`` consecutive calls of every
    function, in an order rotated by one each round so that no function always goes first.

    Returns:
        For each name, one figure per round: the round's seconds divided by ``calls``.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    watches = {name: Stopwatch(device) for name in fns}
    order = list(fns)
    for r in range(rounds):
        for name in order[r % len(order):] + order[: r % len(order)]:
            fn = fns[name]
            watches[name].time(lambda fn=fn: [fn() for _ in range(calls)])
    return {name: [s / calls for s in watch.seconds()] for name, watch in watches.items()}


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def reset_peak_memory(device: str | torch.device) -> None:
    """Start a fresh peak-memory count (CUDA only; the CPU has no per-allocator counter)."""
    if is_cuda(device):
        sync(device)
        torch.cuda.reset_peak_memory_stats()


def peak_memory(device: str | torch.device) -> int | None:
    """Bytes allocated at the peak since :func:`reset_peak_memory` on CUDA; None on the CPU."""
    if is_cuda(device):
        sync(device)
        return int(torch.cuda.max_memory_allocated())
    return None


def free_memory(device: str | torch.device) -> None:
    """Return cached blocks to the driver, so the next measurement starts from what is really held."""
    import gc

    gc.collect()
    if is_cuda(device):
        torch.cuda.empty_cache()
