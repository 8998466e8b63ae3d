"""Shared fixtures: real processes on free ports, always cleaned up.

- `anvil` / `w3`: one bare Anvil chain (automine) for the session; each test using `w3`
  runs inside an evm_snapshot/evm_revert pair.
- `devnet` / `clean_devnet`: the default 3-chain devnet (tokens, pools, funded accounts,
  block production at each chain's block time) on free ports, once per session; a test
  using `clean_devnet` gets every chain reverted to the same state afterwards.
- `redis_server` / `redis_url`: an embedded Redis (AOF, fsync always) on a free port;
  `redis_url` flushes it after each test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from web3 import Web3

from scripts.devnet.anvil import AnvilNode
from scripts.devnet.config import load_config
from scripts.devnet.devnet import Devnet
from scripts.devnet.ports import free_port
from scripts.redis_server import EmbeddedRedis


@pytest.fixture(scope="session")
def anvil() -> Iterator[AnvilNode]:
    node = AnvilNode(port=free_port(), chain_id=31337)
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def w3(anvil: AnvilNode) -> Iterator[Web3]:
    client = Web3(Web3.HTTPProvider(anvil.rpc_url, request_kwargs={"timeout": 30}))
    snap = anvil.rpc("evm_snapshot")
    try:
        yield client
    finally:
        anvil.rpc("evm_revert", [snap])


@pytest.fixture(scope="session")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    cfg = load_config(chains=3, base_port=0)
    net = Devnet(cfg, tmp_path_factory.mktemp("devnet"))
    net.start()
    try:
        yield net
    finally:
        net.stop()


@pytest.fixture
def clean_devnet(devnet: Devnet) -> Iterator[Devnet]:
    # A revert consumes its snapshot, so each test takes fresh ones.
    snaps = devnet.snapshot()
    try:
        yield devnet
    finally:
        for cid in devnet.manifest_chain_ids():
            devnet.resume(cid)
            devnet.set_block_time(cid, next(c.block_time for c in devnet.cfg.chains if c.chain_id == cid))
        devnet.revert(snaps)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(Path(tmp_path_factory.mktemp("redis")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> Iterator[str]:
    try:
        yield redis_server.url
    finally:
        if redis_server.proc is None:  # a test killed it: bring it back for the next one
            redis_server.start()
        redis.Redis.from_url(redis_server.url).flushall()
