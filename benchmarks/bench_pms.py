"""Benchmark PMS at the Stanford Cars test-set size: N = 8041 images, m = 1960 prototypes (196
classes × 10), 7×7 grid.

Each model's argmins are drawn uniformly from its own random subset of ``--used`` of the
grid's locations (fixed seed). Prints plain ``key: value`` lines: wall time, the split between
the co-occurrence matrix and the Hungarian matchings, and peak memory above the inputs.
Also runs the teacher against itself (PMS must be 1; every cap needs its own matching, the
worst case for the Hungarian part).

    python benchmarks/bench_pms.py [--n 8041] [--m 1960] [--grid 7] [--used 25]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from p2p_cli.metrics.prototype_matching import pms  # noqa: E402


def _status_mb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as fh:
            match = re.search(rf"^{key}:\s+(\d+) kB", fh.read(), re.MULTILINE)
        return int(match.group(1)) / 1024 if match else None
    except OSError:
        return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (Linux ``clear_refs`` 5); False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _maxrss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(label: str, argmin_t: np.ndarray, argmin_s: np.ndarray, n_loc: int, backend: str) -> None:
    can_reset = _reset_peak()
    before = _status_mb("VmRSS") if can_reset else _maxrss_mb()
    cpu0 = _cpu_s()
    t0 = time.perf_counter()
    res = pms(argmin_t, argmin_s, n_loc, backend=backend)
    wall = time.perf_counter() - t0
    cpu = _cpu_s() - cpu0
    peak = _status_mb("VmHWM") if can_reset else _maxrss_mb()
    print(f"[{label}]")
    print(f"pms: {res.score:.6f}")
    print(f"wall_s: {wall:.3f}")
    print(f"cpu_s: {cpu:.3f} (user+sys, all threads)")
    print(f"cooccurrence_s: {res.timings['cooccurrence']:.3f}")
    print(f"matching_s: {res.timings['matching']:.3f}")
    print(f"hungarian_solves: {res.num_solves} of {len(res.m_values)} caps")
    print(f"matched_pairs: {res.num_matched}")
    how = "VmHWM after clear_refs" if can_reset else "ru_maxrss (lower bound)"
    print(f"peak_mem_above_inputs_mb: {max(0.0, (peak or 0.0) - (before or 0.0)):.1f} ({how})")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8041, help="number of images N")
    ap.add_argument("--m", type=int, default=1960, help="prototypes per model")
    ap.add_argument("--grid", type=int, default=7, help="grid side (H = W)")
    ap.add_argument("--used", type=int, default=25, help="locations each model's argmins use")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--backend", default="auto", choices=["auto", "int8", "bf16", "fp32"])
    ap.add_argument("--no-self", action="store_true", help="skip the teacher-vs-itself run")
    args = ap.parse_args(argv)

    import torch

    n_loc = args.grid * args.grid
    used = min(args.used, n_loc)
    rng = np.random.default_rng(args.seed)
    pool_t = rng.choice(n_loc, size=used, replace=False)
    pool_s = rng.choice(n_loc, size=used, replace=False)
    argmin_t = pool_t[rng.integers(0, used, (args.n, args.m))]
    argmin_s = pool_s[rng.integers(0, used, (args.n, args.m))]
    print(f"N: {args.n}  m: {args.m}  grid: {args.grid}x{args.grid}  used_locations: {used}")
    print(f"shared_locations: {len(np.intersect1d(pool_t, pool_s))}")
    print(f"threads: {torch.get_num_threads()}  cpus: {os.cpu_count()}  backend: {args.backend}")
    if hasattr(os, "getloadavg"):
        print(f"loadavg_1min_at_start: {os.getloadavg()[0]:.2f} (other processes compete above ~0.5)")
    print(f"input_arrays_mb: {(argmin_t.nbytes + argmin_s.nbytes) / 2**20:.1f}")
    run("teacher vs student", argmin_t, argmin_s, n_loc, args.backend)
    if not args.no_self:
        run("teacher vs itself", argmin_t, argmin_t, n_loc, args.backend)


if __name__ == "__main__":
    main()
