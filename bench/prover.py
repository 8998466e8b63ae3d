"""Groth16 prover benchmark: our Python prover against `snarkjs groth16 prove` on the same
R1CS, witness and proving key (exported as .zkey), measured in the same run.

Prints one JSON document: per size (2^k constraints incl. snarkjs's public-input rows, so
the FFT domain is exactly 2^k) the setup time, our prove wall time and peak RSS (a fresh
process that loads the cached key, like the snarkjs CLI loads its .zkey), snarkjs's wall
time and peak RSS, MSM throughput (G1 and G2, one process), and on-chain verification gas.

Circuits come from `settlement.zk.testing.random_circuit`; `--bits` is the share of
boolean wires (the 64-slot settlement batch circuit measures ~39% 0/1 witness values).
`--batch-slots N` adds the real batch circuit with N slots when it is available.

    .venv/bin/python -m bench.prover --sizes 12,14          # quick (CI)
    .venv/bin/python -m bench.prover                        # 12,14,15,16 + gas
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from settlement.zk import groth16
from settlement.zk import snarkjs_format as sf
from settlement.zk.constants import SCALAR_FIELD
from settlement.zk.msm import G1, G2, PointArrays, msm
from settlement.zk.r1cs import R1CS
from settlement.zk.testing import random_circuit

ROOT = Path(__file__).resolve().parent.parent
SNARKJS = ROOT / "node_modules" / "snarkjs" / "build" / "cli.cjs"
N_PUBLIC = 4


def _circuit(size_log: int, bits: float) -> tuple[R1CS, list[int]]:
    rc = random_circuit((1 << size_log) - N_PUBLIC - 1, N_PUBLIC, seed=size_log, bit_fraction=bits)
    return rc.r1cs, list(rc.witness)


def _batch_circuit(slots: int) -> tuple[R1CS, list[int]] | None:
    try:
        from settlement.zk import batch as zb
        from settlement.zk.legs import Leg, LegKind, genesis_head
    except ImportError:
        return None
    rng = random.Random(slots)
    legs = []
    for i in range(slots):
        kind = LegKind.PAYOUT if i % 2 else LegKind.PULL
        amount = rng.randrange(1, 10**24)
        min_buy = amount * 99 // 100 if kind is LegKind.PAYOUT else 0
        legs.append(
            Leg(
                kind,
                rng.getrandbits(160),
                rng.randrange(4),
                amount,
                min_buy,
                rng.randrange(SCALAR_FIELD),
            )
        )
    bw = zb.build_batch_witness(zb.Batch(31337, 0, genesis_head(31337), tuple(legs)))
    return bw.r1cs, list(bw.witness)


# Measuring through a fresh interpreter: a child forked straight from this (large) process
# would inherit its RSS high-water mark, and ru_maxrss would report that instead.
_MEASURE = """
import json, os, subprocess, sys, time
t0 = time.perf_counter()
p = subprocess.Popen(sys.argv[1:])
_, status, ru = os.wait4(p.pid, 0)
wall = time.perf_counter() - t0
print("@@MEASURE " + json.dumps({"wall": wall, "maxrss_kib": ru.ru_maxrss,
      "cpu": ru.ru_utime + ru.ru_stime}), file=sys.stderr)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _run_measured(cmd: list[str], cwd: Path | None = None) -> tuple[float, float, str, float]:
    """Wall seconds, peak RSS in MiB, stdout and CPU seconds (user + system) of `cmd`, as
    wait4 reports them for it and the descendants it waited for (our prover's forked
    helper; snarkjs's worker threads live in its process)."""
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        proc = subprocess.run(
            [sys.executable, "-c", _MEASURE, *cmd], stdout=out_f, stderr=err_f, cwd=cwd, check=False
        )
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({proc.returncode}):\n{err[-2000:]}")
    line = [ln for ln in err.splitlines() if ln.startswith("@@MEASURE ")][-1]
    m = json.loads(line.split(" ", 1)[1])
    return m["wall"], m["maxrss_kib"] / 1024, out, m["cpu"]


def _worker(args: argparse.Namespace) -> None:
    """Child process: load the key, prove, report the prove() time (and check the proof)."""
    pk, vk = groth16.load_keys(Path(args.keyfile))
    witness = [int(x) for x in Path(args.witness).read_text().split()]
    r1cs = _load_r1cs(args)
    stages: dict[str, float] = {}
    mark_t = [time.perf_counter()]
    mark_s = [""]

    def progress(stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if mark_s[0]:
            stages[mark_s[0]] = stages.get(mark_s[0], 0.0) + now - mark_t[0]
        mark_t[0], mark_s[0] = now, stage

    t0 = time.perf_counter()
    proof = groth16.prove(pk, r1cs, witness, progress=progress)
    prove_s = time.perf_counter() - t0
    ok = groth16.verify(vk, r1cs.public_inputs(witness), proof)
    peak = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )
    print(
        json.dumps(
            {
                "prove_s": prove_s,
                "verified": ok,
                "stages_s": stages,
                "cpu": dict(groth16.LAST_PROVE_STATS),
                "peak_rss_mib": peak / 1024,
            }
        )
    )


def _load_r1cs(args: argparse.Namespace) -> R1CS:
    if args.kind == "batch":
        got = _batch_circuit(args.size)
        assert got is not None
        return got[0]
    return _circuit(args.size, args.bits)[0]


def _msm_rate(pk: groth16.ProvingKey) -> dict[str, float]:
    """Points/s of one-process G1 and G2 MSMs with full-size random scalars, on key points."""
    rng = random.Random(0)
    g1 = PointArrays.build(G1, pk.h_query)
    s1 = [rng.randrange(SCALAR_FIELD) for _ in range(len(pk.h_query))]
    t0 = time.perf_counter()
    msm(G1, g1, s1)
    t1 = time.perf_counter() - t0
    g2 = PointArrays.build(G2, pk.b2_query)
    s2 = [rng.randrange(SCALAR_FIELD) for _ in range(len(pk.b2_query))]
    t0 = time.perf_counter()
    msm(G2, g2, s2)
    t2 = time.perf_counter() - t0
    return {
        "g1_points": len(g1),
        "g1_points_per_s": len(g1) / t1,
        "g2_points": len(g2),
        "g2_points_per_s": len(g2) / t2,
    }


def _bench_one(
    label: str,
    r1cs: R1CS,
    witness: list[int],
    args: argparse.Namespace,
    kind: str,
    size: int,
    work: Path,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "circuit": label,
        "constraints": r1cs.n_constraints,
        "wires": r1cs.n_wires,
        "domain": groth16.domain_size(r1cs),
        "witness_01_share": round(sum(1 for x in witness if x in (0, 1)) / len(witness), 3),
    }
    print(f"[bench] {label}: setup", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    pk, vk = groth16.setup(r1cs)
    row["setup_s"] = round(time.perf_counter() - t0, 2)
    keyfile = work / f"{label}.g16"
    groth16.save_keys(keyfile, pk, vk)
    wfile = work / f"{label}.witness"
    wfile.write_text(" ".join(str(x) for x in witness))
    zkey, wtns = work / f"{label}.zkey", work / f"{label}.wtns"
    sf.write_zkey(zkey, r1cs, pk, vk)
    sf.write_wtns(wtns, witness)

    print(f"[bench] {label}: ours", file=sys.stderr, flush=True)
    cmd = [
        sys.executable,
        "-m",
        "bench.prover",
        "--worker",
        "--keyfile",
        str(keyfile),
        "--witness",
        str(wfile),
        "--kind",
        kind,
        "--size",
        str(size),
        "--bits",
        str(args.bits),
    ]
    wall, peak, out, cpu = _run_measured(cmd, cwd=ROOT)
    ours = json.loads(out.strip().splitlines()[-1])
    ours["process_wall_s"] = round(wall, 2)
    ours["peak_rss_mib"] = round(max(peak, ours["peak_rss_mib"]), 1)
    ours["process_cpu_s"] = round(cpu, 2)  # incl. interpreter start, key load, circuit build
    row["ours"] = ours

    node = shutil.which("node")
    if node and SNARKJS.exists() and not args.no_snarkjs:
        print(f"[bench] {label}: snarkjs", file=sys.stderr, flush=True)
        wall, peak, _, cpu = _run_measured(
            [
                node,
                str(SNARKJS),
                "groth16",
                "prove",
                str(zkey),
                str(wtns),
                str(work / "p.json"),
                str(work / "pub.json"),
            ]
        )
        their = sf.read_proof_json(work / "p.json")
        row["snarkjs"] = {
            "prove_s": round(wall, 2),
            "peak_rss_mib": round(peak, 1),
            "process_cpu_s": round(cpu, 2),
            "our_verifier_accepts": groth16.verify(
                vk, sf.read_public_json(work / "pub.json"), their
            ),
        }
        row["ratio_ours_over_snarkjs"] = round(ours["prove_s"] / wall, 2)
        row["ratio_process_wall"] = round(ours["process_wall_s"] / wall, 2)
        # Under load the wall ratio mostly measures the CPU share each got; the prove()
        # CPU of our two processes against snarkjs's whole-process CPU is steadier.
        prove_cpu = ours["cpu"].get("main_cpu_s", 0.0) + ours["cpu"].get("helper_cpu_s", 0.0)
        row["ratio_prove_cpu_over_snarkjs_cpu"] = round(prove_cpu / cpu, 2) if cpu else None
    if args.msm:
        print(f"[bench] {label}: msm", file=sys.stderr, flush=True)
        row["msm"] = _msm_rate(pk)
    return row


def _gas(args: argparse.Namespace) -> dict[str, Any]:
    from web3 import Web3

    from scripts.devnet.anvil import AnvilNode
    from scripts.devnet.ports import free_port
    from scripts.solc import compile_sources
    from settlement.zk.verifier_sol import batch_call_args, generate_verifier, proof_call_args

    node = AnvilNode(port=free_port(), chain_id=31337)
    node.start()
    try:
        w3 = Web3(Web3.HTTPProvider(node.rpc_url, request_kwargs={"timeout": 60}))
        acct = w3.eth.accounts[0]

        def deploy(src: str) -> Any:
            art = compile_sources({"V.sol": src})["Groth16Verifier"]
            tx = (
                w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
                .constructor()
                .transact({"from": acct})
            )
            addr = w3.eth.wait_for_transaction_receipt(tx)["contractAddress"]
            return w3.eth.contract(address=addr, abi=art.abi)

        def gas(fn: Any) -> int:
            assert fn.call()
            tx = fn.transact({"from": acct, "gas": 10_000_000})
            return int(w3.eth.wait_for_transaction_receipt(tx)["gasUsed"])

        single: dict[int, int] = {}
        batch: dict[int, float] = {}
        for n_pub in (1, 2, 4, 8, 16):
            rc = random_circuit(40, n_pub, seed=n_pub)
            pk, vk = groth16.setup(rc.r1cs, processes=1)
            v = deploy(generate_verifier(vk))
            proofs = [
                groth16.prove(pk, rc.r1cs, rc.witness, processes=1)
                for _ in range(8 if n_pub == 4 else 1)
            ]
            single[n_pub] = gas(
                v.functions.verifyProof(*proof_call_args(proofs[0], rc.public_inputs))
            )
            if n_pub == 4:
                for k in (1, 2, 4, 8):
                    batch[k] = (
                        gas(
                            v.functions.verifyBatch(
                                *batch_call_args(proofs[:k], [rc.public_inputs] * k)
                            )
                        )
                        / k
                    )
        slope = (single[16] - single[1]) / 15
        return {
            "note": "gasUsed of a transaction (21000 base + calldata included)",
            "verifyProof_by_n_public": single,
            "per_extra_public_input": round(slope),
            "verifyBatch_per_proof_n_public_4": batch,
        }
    finally:
        node.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--sizes", default="12,14,15,16", help="log2 constraint counts, comma separated"
    )
    ap.add_argument(
        "--bits", type=float, default=0.4, help="share of boolean wires in the random circuits"
    )
    ap.add_argument(
        "--batch-slots", type=int, default=0, help="also bench the settlement batch circuit"
    )
    ap.add_argument("--no-snarkjs", action="store_true")
    ap.add_argument("--no-gas", action="store_true")
    ap.add_argument("--no-msm", dest="msm", action="store_false")
    # internal: the measured child
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--keyfile", help=argparse.SUPPRESS)
    ap.add_argument("--witness", help=argparse.SUPPRESS)
    ap.add_argument("--kind", default="random", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        _worker(args)
        return
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_start": os.getloadavg(),
        },
        "bits": args.bits,
        "rows": [],
    }
    with tempfile.TemporaryDirectory(prefix="crossbook-bench-") as tmp:
        work = Path(tmp)
        for k in (int(s) for s in args.sizes.split(",") if s):
            r1cs, witness = _circuit(k, args.bits)
            report["rows"].append(
                _bench_one(f"random-2^{k}", r1cs, witness, args, "random", k, work)
            )
            print(json.dumps(report["rows"][-1]), file=sys.stderr, flush=True)
        if args.batch_slots:
            got = _batch_circuit(args.batch_slots)
            if got is not None:
                report["rows"].append(
                    _bench_one(
                        f"batch-{args.batch_slots}", *got, args, "batch", args.batch_slots, work
                    )
                )
    if not args.no_gas:
        report["gas"] = _gas(args)
    report["machine"]["loadavg_end"] = os.getloadavg()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
