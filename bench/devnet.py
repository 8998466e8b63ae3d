"""How long a 3-chain devnet takes to start, deploy and seed, end to end.

Baseline in the same run: a bare Anvil start (no deployment), so the cost of our
deployment is visible apart from the machine's process start-up cost.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from scripts.devnet.anvil import AnvilNode
from scripts.devnet.config import load_config
from scripts.devnet.devnet import Devnet
from scripts.devnet.ports import free_port


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--chains", type=int, default=3)
    args = ap.parse_args()
    bare, full = [], []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        node = AnvilNode(port=free_port(), chain_id=999)
        node.start()
        bare.append(time.perf_counter() - t0)
        node.stop()
        with tempfile.TemporaryDirectory() as d:
            net = Devnet(load_config(chains=args.chains, base_port=0), Path(d))
            t0 = time.perf_counter()
            net.start()
            full.append(time.perf_counter() - t0)
            net.stop()
    doc = {
        "chains": args.chains,
        "runs": args.runs,
        "devnetUpSeconds": {
            "min": round(min(full), 3),
            "median": round(statistics.median(full), 3),
        },
        "baselineBareAnvilStartSeconds": {"median": round(statistics.median(bare), 3)},
        "goalSeconds": 20,
    }
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
