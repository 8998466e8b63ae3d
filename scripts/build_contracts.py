"""Build the hand-written contracts: `contracts/src/*.sol` -> `contracts/build/<Name>.json`.

All sources are compiled together in one `scripts.solc.compile_sources` call (one pinned
compiler, one fixed set of settings), and each contract's artifact is written as sorted,
indented JSON, so the committed artifacts are a pure function of the sources. `--check`
compiles afresh and compares, without writing: it exits 1 naming the stale artifacts.

Generated contracts (the Groth16 verifiers) live outside `contracts/src` and write their
own artifacts into `contracts/build`; this module never touches or reports on those, so
an artifact whose source was deleted from `contracts/src` is not detected as stale.

    python -m scripts.build_contracts          # (re)write the artifacts
    python -m scripts.build_contracts --check  # exit 1 if any committed artifact is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from scripts.solc import compile_sources

__all__ = ["BUILD_DIR", "SRC_DIR", "build", "fresh_artifacts", "load_artifact", "stale_artifacts"]

ROOT = Path(__file__).resolve().parent.parent
SRC_DIR = ROOT / "contracts" / "src"
BUILD_DIR = ROOT / "contracts" / "build"


def _render(artifact: dict[str, object]) -> str:
    return json.dumps(artifact, indent=1, sort_keys=True) + "\n"


def fresh_artifacts(src_dir: Path = SRC_DIR) -> dict[str, str]:
    """`{contract name: artifact file text}` from one fresh compile of every source
    (one compilation context, so imports resolve exactly as they will on deploy)."""
    sources = {p.name: p.read_text() for p in sorted(src_dir.glob("*.sol"))}
    compiled = compile_sources(sources)
    return {name: _render(art.to_json()) for name, art in sorted(compiled.items())}


def stale_artifacts(src_dir: Path = SRC_DIR, build_dir: Path = BUILD_DIR) -> list[str]:
    """Names whose committed artifact is missing or differs from a fresh compile."""
    stale = []
    for name, text in fresh_artifacts(src_dir).items():
        path = build_dir / f"{name}.json"
        if not path.exists() or path.read_text() != text:
            stale.append(name)
    return stale


def build(src_dir: Path = SRC_DIR, build_dir: Path = BUILD_DIR) -> list[str]:
    """Write every artifact that changed; returns the names written."""
    build_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in fresh_artifacts(src_dir).items():
        path = build_dir / f"{name}.json"
        # Leave unchanged files alone so their mtimes (and other tools' caches) stay put.
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            written.append(name)
    return written


def load_artifact(name: str, build_dir: Path = BUILD_DIR) -> dict[str, Any]:
    """The artifact of contract `name`: contractName, abi, bytecode, deployedBytecode."""
    path = build_dir / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(
            f"no artifact {path}: run `python -m scripts.build_contracts` (or the verifier generator)"
        )
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_artifacts()
        if stale:
            print(
                "stale contract artifacts (run python -m scripts.build_contracts): "
                + ", ".join(stale)
            )
            return 1
        print("contract artifacts are fresh")
        return 0
    written = build()
    print(f"wrote {len(written)} artifact(s)" + (": " + ", ".join(written) if written else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
