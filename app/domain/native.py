"""The router and pool math, compiled with mypyc, and the guard that keeps them current.

`scripts/build_native.py` (run by `make install`) compiles `MODULES` into C extensions
beside their sources and records a digest of those sources in `STAMP`. Python prefers an
extension module to a source file of the same name, so after an edit the old extension
would run instead of the new code. `select()`, called when `app.domain` is imported,
prevents that: unless the stamp's digest equals the digest of the sources as they are now,
every module in `MODULES` is loaded from its `.py` file, as if nothing were compiled.
`CROSSBOOK_NATIVE=0` asks for the sources too (profiling with py-spy, comparing both).

The compiled and the source modules compute the same integers: mypyc keeps Python's
arbitrary-precision `int` and IEEE `float`, and a test routes generated books both ways
and compares every amount (`tests/unit/domain/test_native.py`).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

# The routing hot path: pool math, curves, the split and its integer execution. Not
# `sources` (its frozen dataclasses' class-level `kind` does not survive mypyc) nor `book`.
MODULES = (
    "app.domain.amm.constant_product",
    "app.domain.amm.stableswap",
    "app.domain.routing.curves",
    "app.domain.routing.execute",
    "app.domain.routing.aggregate",
    "app.domain.routing.plan",
    "app.domain.routing.polish",
    "app.domain.routing.result",
    "app.domain.router",
)
STAMP = ROOT / "var" / "native.json"
# The compiled modules share one runtime library. mypyc names it after a hash of the module
# names and puts it at the top level, where a process started from the `crossbook` script
# (the repo root not on sys.path; the editable install maps packages only) cannot import
# it; named inside `app.domain` it is found wherever `app` is.
GROUP = "app.domain._native"
SHARED_LIB = GROUP + "__mypyc"


def source_path(module: str) -> Path:
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


def sources_digest() -> str:
    """SHA-256 over the compiled modules' names and sources, in order."""
    h = hashlib.sha256()
    for m in MODULES:
        h.update(m.encode() + b"\0" + source_path(m).read_bytes() + b"\0")
    return h.hexdigest()


def stamp_for(digest: str) -> dict[str, Any]:
    """The stamp of a build of the sources of `digest` (`MODULES`) for this interpreter."""
    return {"digest": digest, "python": sys.implementation.cache_tag, "modules": list(MODULES), "sharedLib": SHARED_LIB}


def fresh(stamp: dict[str, Any] | None, digest: str) -> bool:
    """Whether the build recorded in `stamp` compiled exactly the sources of `digest`,
    for this interpreter."""
    return stamp == stamp_for(digest)


def read_stamp() -> dict[str, Any] | None:
    try:
        doc = json.loads(STAMP.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


class _FromSource(importlib.abc.MetaPathFinder):
    """Finds `modules` as their `.py` files, ahead of any compiled extension."""

    def __init__(self, modules: Sequence[str]) -> None:
        self.modules = frozenset(modules)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.modules:
            return None
        return importlib.util.spec_from_file_location(fullname, source_path(fullname))


ACTIVE = False  # whether the compiled modules run in this process
REASON = "not selected yet"


def select() -> None:
    """Use the compiled modules when they match the sources; otherwise the sources."""
    global ACTIVE, REASON
    if any(isinstance(f, _FromSource) for f in sys.meta_path):
        return
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    compiled = all(any(source_path(m).with_suffix(s).exists() for s in suffixes) for m in (*MODULES, SHARED_LIB))
    if os.environ.get("CROSSBOOK_NATIVE", "1") == "0":
        REASON = "CROSSBOOK_NATIVE=0"
    elif not compiled:
        REASON = "not compiled (make install compiles it)"
    elif not fresh(read_stamp(), sources_digest()):
        REASON = "compiled from other sources (make install recompiles it)"
    else:
        ACTIVE, REASON = True, "compiled with mypyc"
        return
    sys.meta_path.insert(0, _FromSource(MODULES))
