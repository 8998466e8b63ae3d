"""Runs the benchmarks in bench/ and gathers their JSON into one document.

Each benchmark is a module `bench.<name>` that prints one JSON document on stdout and
measures its own baseline in the same run. They run one after another, each in a fresh
process, so one cannot warm or starve another.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["BENCHMARKS", "run_benchmarks"]

ROOT = Path(__file__).resolve().parent.parent

# name -> (full-run arguments, quick-run arguments)
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "devnet": ([], ["--runs", "1"]),
    "api": ([], ["--quick"]),
    "routing": ([], ["--latency-only"]),
    "prover": ([], ["--sizes", "10"]),
    "settlement_gas": ([], []),
    "settlement_e2e": ([], ["--quick"]),
}


def _machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def run_benchmarks(names: list[str], *, quick: bool = False) -> dict[str, Any]:
    chosen = names or [n for n in BENCHMARKS if (ROOT / "bench" / f"{n}.py").exists()]
    results: dict[str, Any] = {}
    for name in chosen:
        if name not in BENCHMARKS:
            results[name] = {"error": f"unknown benchmark; known: {sorted(BENCHMARKS)}"}
            continue
        args = BENCHMARKS[name][1 if quick else 0]
        print(f"bench {name} …", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", f"bench.{name}", *args], cwd=ROOT, capture_output=True, text=True
        )
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            results[name] = {"error": f"exit {proc.returncode}", "stderr": proc.stderr[-2000:]}
            continue
        try:
            results[name] = json.loads(proc.stdout)
        except json.JSONDecodeError:
            results[name] = {"error": "benchmark did not print JSON", "stdout": proc.stdout[-2000:]}
            continue
        results[name]["_wallSeconds"] = round(elapsed, 2)
    return {"machine": _machine(), "quick": quick, "results": results}
