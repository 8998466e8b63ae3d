"""Compile the routing hot path with mypyc (`app.domain.native.MODULES`), in place.

Run by `make install`. The extensions land beside their sources; `var/native.json`
records the digest of the sources compiled, so that `app.domain.native.select()` uses
them only while the sources are unchanged. On failure nothing is stamped, and the
sources run as before (slower): the error is printed and the exit status is 1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from app.domain.native import GROUP, MODULES, ROOT, STAMP, source_path, sources_digest, stamp_for

SETUP = """\
from setuptools import setup
from mypyc.build import mypycify

setup(name="crossbook-native", ext_modules=mypycify({files!r}, opt_level="3", group_name={group!r}))
"""


def compiler() -> str | None:
    """The C compiler mypyc's build will use, if there is one."""
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def main() -> int:
    if compiler() is None:
        STAMP.unlink(missing_ok=True)
        print("no C compiler (cc, gcc or clang): the router and pool math run uncompiled (slower)", file=sys.stderr)
        return 1
    files = [str(source_path(m).relative_to(ROOT)) for m in MODULES]
    STAMP.unlink(missing_ok=True)
    print(f"compiling the router and pool math with mypyc ({len(files)} modules, about a minute)", flush=True)
    t0 = time.monotonic()
    # What the `mypyc` command does (a setup script under ./build, `build_ext --inplace`:
    # the extensions land next to the sources), with the shared library named in the
    # package (`GROUP`) instead of at the top level.
    build = ROOT / "build"
    build.mkdir(exist_ok=True)
    (build / "setup_native.py").write_text(SETUP.format(files=files, group=GROUP))
    for stale in ROOT.glob("*__mypyc.*"):  # an earlier build's top-level library
        stale.unlink()
    proc = subprocess.run(
        [sys.executable, str(build / "setup_native.py"), "build_ext", "--inplace"], cwd=ROOT, capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        print("error: mypyc failed (see above); the router runs from its sources", file=sys.stderr)
        return 1
    STAMP.parent.mkdir(parents=True, exist_ok=True)
    STAMP.write_text(json.dumps(stamp_for(sources_digest())))
    print(f"  compiled in {time.monotonic() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
