"""Our Poseidon against circomlibjs (the pinned dev tool), widths 1..6 and random inputs."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from settlement.zk.constants import SCALAR_FIELD as R
from settlement.zk.poseidon import poseidon

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
CIRCOMLIBJS = ROOT / "node_modules" / "circomlibjs"

# Run with cwd = repo root so the ESM import resolves node_modules/circomlibjs.
_SCRIPT = """
import { buildPoseidon, buildPoseidonReference } from "circomlibjs";
const fast = await buildPoseidon();
const ref = await buildPoseidonReference();
const cases = JSON.parse(process.argv[1]);
const out = cases.map(c => {
  const xs = c.map(BigInt);
  return [fast.F.toString(fast(xs)), ref.F.toString(ref(xs))];
});
console.log(JSON.stringify(out));
"""


def _circomlibjs(cases: list[list[int]]) -> list[list[str]]:
    node = shutil.which("node")
    if node is None or not CIRCOMLIBJS.is_dir():
        pytest.skip("node or node_modules/circomlibjs missing")
    res = subprocess.run(
        [
            node,
            "--input-type=module",
            "-e",
            _SCRIPT,
            json.dumps([[str(x) for x in c] for c in cases]),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    out: list[list[str]] = json.loads(res.stdout)
    return out


def test_poseidon_matches_circomlibjs() -> None:
    rng = random.Random(20261124)
    cases: list[list[int]] = []
    for n in range(1, 7):
        cases.append([0] * n)
        cases.append(list(range(1, n + 1)))
        cases.append([R - 1] * n)
        cases += [[rng.randrange(R) for _ in range(n)] for _ in range(4)]
    got = _circomlibjs(cases)
    assert len(got) == len(cases)
    for inputs, (fast, ref) in zip(cases, got, strict=True):
        assert fast == ref  # circomlibjs's optimised and reference versions agree
        assert poseidon(inputs) == int(fast), inputs


@pytest.mark.slow
def test_poseidon_matches_circomlibjs_all_widths() -> None:
    # circomlibjs supports 1..16 inputs; generating every width's parameters takes seconds.
    rng = random.Random(7)
    cases = [[rng.randrange(R) for _ in range(n)] for n in range(7, 17)]
    got = _circomlibjs(cases)
    for inputs, (fast, _ref) in zip(cases, got, strict=True):
        assert poseidon(inputs) == int(fast), len(inputs)
