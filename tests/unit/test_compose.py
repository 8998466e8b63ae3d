"""docker-compose.yml names only commands that exist in this repo (or in its image)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from scripts.devnet.config import load_config

ROOT = Path(__file__).resolve().parents[2]
IMAGE_BINARIES = {"redis": {"redis-server"}}


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _npm_bins() -> set[str]:
    deps = json.loads((ROOT / "package.json").read_text())["dependencies"]
    bins = set()
    for name in deps:
        # Every runtime npm tool declares its executables; `anvil` comes from @foundry-rs/anvil.
        bins.add(name.rsplit("/", 1)[-1])
    return bins


def _cli_commands() -> set[tuple[str, ...]]:
    from typer.main import get_command

    from app.cli import app

    root = get_command(app)
    found: set[tuple[str, ...]] = set()
    for name, cmd in root.commands.items():  # type: ignore[attr-defined]
        found.add((name,))
        for sub in getattr(cmd, "commands", {}):
            found.add((name, sub))
    return found


def test_every_service_command_exists() -> None:
    services = _compose()["services"]
    assert services, "compose file defines no services"
    npm_bins = _npm_bins()
    cli = _cli_commands()
    for name, svc in services.items():
        cmd = svc.get("command")
        assert cmd, f"service {name} has no command"
        exe = cmd[0]
        if exe.startswith("node_modules/.bin/"):
            assert exe.rsplit("/", 1)[-1] in npm_bins, f"{name}: {exe} is not a pinned npm tool"
        elif exe == "crossbook":
            sub = tuple(a for a in cmd[1:3] if not a.startswith("-"))
            assert sub[:1] in cli or sub in cli, f"{name}: `crossbook {' '.join(sub)}` is not a CLI command"
        else:
            image = svc.get("image", "").split(":")[0].split("/")[-1]
            assert exe in IMAGE_BINARIES.get(image, set()), f"{name}: unknown command {exe}"


def test_anvil_services_match_the_default_devnet() -> None:
    services = _compose()["services"]
    chains = {c.chain_id: c for c in load_config().chains}
    anvils = {n: s["command"] for n, s in services.items() if s["command"][0].endswith("/anvil")}
    assert len(anvils) == len(chains)
    for cmd in anvils.values():
        cid = int(cmd[cmd.index("--chain-id") + 1])
        assert cid in chains
        assert int(cmd[cmd.index("--port") + 1]) == chains[cid].port
        assert float(cmd[cmd.index("--block-time") + 1]) == chains[cid].block_time
