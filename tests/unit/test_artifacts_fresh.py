"""The committed contract artifacts are exactly what the pinned compiler makes of
`contracts/src` today: a source edited without rebuilding fails here, not on a devnet."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import build_contracts


def test_committed_artifacts_match_a_fresh_compile(capsys: pytest.CaptureFixture[str]) -> None:
    # The same path as `python -m scripts.build_contracts --check`.
    code = build_contracts.main(["--check"])
    assert code == 0, capsys.readouterr().out


def test_check_names_stale_artifacts_and_exits_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(build_contracts, "stale_artifacts", lambda: ["StableSwapPool"])
    assert build_contracts.main(["--check"]) == 1
    assert "StableSwapPool" in capsys.readouterr().out


def test_stale_detection(tmp_path: Path) -> None:
    src = tmp_path / "src"
    out = tmp_path / "build"
    src.mkdir()
    (src / "A.sol").write_text(
        "// SPDX-License-Identifier: MIT\npragma solidity ^0.8.24;\ncontract A { uint256 public x = 1; }\n"
    )
    assert build_contracts.stale_artifacts(src, out) == ["A"]
    assert build_contracts.build(src, out) == ["A"]
    assert build_contracts.stale_artifacts(src, out) == []
    assert build_contracts.load_artifact("A", out)["contractName"] == "A"
