"""Geometry benchmarks: read, prompt, extract and score GeoQA, MathVista (geometry), We-Math, MM-Math and our probe.

    from mmgeolm.bench import get_benchmark
    bench = get_benchmark("mathvista")
    items = bench.read(Path("testmini.json"))

Scoring is torch-free; generation goes through ``llava_patches`` (``mmgeolm-bench generate``).
"""
from mmgeolm.bench.registry import get_benchmark, list_benchmarks, register_benchmark

__all__ = ["get_benchmark", "list_benchmarks", "register_benchmark"]
