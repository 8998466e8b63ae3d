"""Solidity compilation through the pinned npm `solc` (solcjs, standard JSON).

Every contract in the project, hand-written or generated (verifiers), is compiled here so
that one compiler version and one set of settings produce every artifact.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SETTINGS", "Artifact", "SolcError", "compile_sources", "solc_version"]

ROOT = Path(__file__).resolve().parent.parent
SOLCJS = ROOT / "node_modules" / ".bin" / "solcjs"

# Fixed settings: the build must be reproducible byte for byte (no metadata hash).
SETTINGS: dict[str, object] = {
    "optimizer": {"enabled": True, "runs": 10_000},
    "evmVersion": "cancun",
    "viaIR": False,
    "metadata": {"bytecodeHash": "none", "appendCBOR": False},
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
}


class SolcError(RuntimeError):
    """The compiler is missing or rejected the sources."""


@dataclass(frozen=True, slots=True)
class Artifact:
    name: str
    abi: list[dict[str, object]]
    bytecode: str  # 0x-prefixed creation code
    deployed_bytecode: str

    def to_json(self) -> dict[str, object]:
        return {
            "contractName": self.name,
            "abi": self.abi,
            "bytecode": self.bytecode,
            "deployedBytecode": self.deployed_bytecode,
        }


def _solcjs() -> list[str]:
    if SOLCJS.exists():
        return [str(SOLCJS)]
    found = shutil.which("solcjs")
    if found:
        return [found]
    raise SolcError("solcjs not found: run `make install` (npm install of the pinned solc)")


def solc_version() -> str:
    out = subprocess.run([*_solcjs(), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def compile_sources(sources: dict[str, str], settings: dict[str, object] | None = None) -> dict[str, Artifact]:
    """Compile `{file name: source text}`; returns every contract by name."""
    request = {
        "language": "Solidity",
        "sources": {name: {"content": text} for name, text in sources.items()},
        "settings": settings or SETTINGS,
    }
    # Regular files on both ends: solcjs's stdout through a pipe is cut off at 64 KiB
    # (Node exits before the pipe drains), and its synchronous read of a stdin pipe can
    # fail with EAGAIN when the pipe is momentarily empty (seen on a loaded machine).
    with tempfile.TemporaryFile() as inp, tempfile.TemporaryFile() as out:
        inp.write(json.dumps(request).encode())
        inp.seek(0)
        proc = subprocess.run(
            [*_solcjs(), "--standard-json"],
            stdin=inp,
            stdout=out,
            stderr=subprocess.PIPE,
        )
        out.seek(0)
        raw = out.read().decode()
    if "{" not in raw:
        raise SolcError(f"solcjs failed (exit {proc.returncode}): {proc.stderr.decode().strip()}")
    # solcjs may print a banner line before the JSON document.
    text = raw[raw.index("{") :]
    result = json.loads(text)
    errors = [e for e in result.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise SolcError("\n".join(e.get("formattedMessage", e.get("message", "")) for e in errors))
    artifacts: dict[str, Artifact] = {}
    for file_name, contracts in result.get("contracts", {}).items():
        for name, out in contracts.items():
            if name in artifacts:  # artifacts are keyed by contract name: it must be unique
                raise SolcError(f"two contracts named {name} (second in {file_name})")
            artifacts[name] = Artifact(
                name=name,
                abi=out["abi"],
                bytecode="0x" + out["evm"]["bytecode"]["object"],
                deployed_bytecode="0x" + out["evm"]["deployedBytecode"]["object"],
            )
    return artifacts
