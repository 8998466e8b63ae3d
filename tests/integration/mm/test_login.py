"""Login by signed challenge on `/v1/ws/mm`, against the real API process and devnet."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from app.services.makers import MakerHubConfig
from app.settings import Settings
from scripts.demo_maker import MakerClient, MakerClosed
from scripts.devnet.devnet import Devnet
from tests.conftest import ApiProcess
from tests.integration.mm.conftest import manifest_of, ws_url

pytestmark = pytest.mark.integration

CLOSE_AUTH = 4401


async def _refused(client: MakerClient) -> dict[str, Any]:
    """The error the server sent, after checking it then closed the socket (4401)."""
    err = await client.recv("error")
    with pytest.raises(MakerClosed):
        await client.recv(timeout=3)
    assert client.close_code == CLOSE_AUTH
    # Nothing but the challenge and that error ever reached the unauthenticated socket.
    assert [m["type"] for m in client.received] == ["challenge", "error"]
    return err["payload"]


@pytest.mark.parametrize("scheme", ["eip191", "eip712"])
async def test_allowlisted_maker_logs_in(mm_api: ApiProcess, devnet: Devnet, scheme: str) -> None:
    maker = manifest_of(devnet).makers[0]
    client = await MakerClient.open(ws_url(mm_api), maker.private_key, login=False)
    try:
        ch = client.challenge
        assert (
            ch["domain"] == "crossbook"
            and ch["nonce"] in ch["message"]
            and str(ch["expiresAt"]) in ch["message"]
        )
        welcome = await client.login(scheme)
        assert welcome["maker"] == maker.address
        assert welcome["heartbeatSeconds"] == 1.0
        funds = {c["chainId"]: c["funds"] for c in welcome["chains"]}
        assert set(funds) == set(manifest_of(devnet).chain_ids)
        assert all(
            int(f["USDC"]["balance"]) > 0 and int(f["USDC"]["allowance"]) > 0
            for f in funds.values()
        )
        ref = await client.send("ping", {})
        assert (await client.recv("pong"))["payload"]["ref"] == ref
    finally:
        await client.close()


async def test_wrong_signature_is_refused(mm_api: ApiProcess, devnet: Devnet) -> None:
    m = manifest_of(devnet)
    client = await MakerClient.open(ws_url(mm_api), m.makers[0].private_key, login=False)
    payload = client.login_payload(key=m.makers[1].private_key)  # signed by another maker
    payload["address"] = m.makers[0].address
    await client.send("login", payload)
    assert (await _refused(client))["code"] == "BAD_SIGNATURE"


async def test_garbage_signature_is_refused(mm_api: ApiProcess, devnet: Devnet) -> None:
    client = await MakerClient.open(
        ws_url(mm_api), manifest_of(devnet).makers[0].private_key, login=False
    )
    payload = client.login_payload()
    payload["signature"] = "0x" + "11" * 65
    await client.send("login", payload)
    assert (await _refused(client))["code"] == "BAD_SIGNATURE"


async def test_unknown_address_is_refused(mm_api: ApiProcess, devnet: Devnet) -> None:
    trader = manifest_of(devnet).traders[0]  # a valid key and signature, not on the allowlist
    client = await MakerClient.open(ws_url(mm_api), trader.private_key, login=False)
    await client.send("login", client.login_payload())
    assert (await _refused(client))["code"] == "UNKNOWN_MAKER"


async def test_replayed_login_from_another_connection_is_refused(
    mm_api: ApiProcess, devnet: Devnet
) -> None:
    key = manifest_of(devnet).makers[0].private_key
    first = await MakerClient.open(ws_url(mm_api), key, login=False)
    captured = first.login_payload()
    await first.close()
    second = await MakerClient.open(ws_url(mm_api), key, login=False)
    await second.send("login", captured)  # signs the first connection's nonce
    assert (await _refused(second))["code"] == "CHALLENGE_MISMATCH"
    # Even with the nonce field rewritten, the signature covers the old nonce.
    third = await MakerClient.open(ws_url(mm_api), key, login=False)
    await third.send("login", {**captured, "nonce": third.challenge["nonce"]})
    assert (await _refused(third))["code"] == "BAD_SIGNATURE"


async def test_expired_challenge_is_refused(mm_api: ApiProcess, devnet: Devnet) -> None:
    client = await MakerClient.open(
        ws_url(mm_api), manifest_of(devnet).makers[0].private_key, login=False
    )
    payload = client.login_payload()
    await asyncio.sleep(3.2)  # the test API's challenge lives 3 s: the server gives up first
    assert (await _refused(client))["code"] == "CHALLENGE_EXPIRED"
    with pytest.raises(ConnectionClosed):
        await client.send("login", payload)


@pytest.mark.parametrize(
    ("typ", "payload"),
    [("levels", {"chainId": 1}), ("ping", {}), ("quote", {}), ("bogus", {})],
)
async def test_anything_before_login_is_refused(
    mm_api: ApiProcess, devnet: Devnet, typ: str, payload: dict[str, Any]
) -> None:
    client = await MakerClient.open(
        ws_url(mm_api), manifest_of(devnet).makers[0].private_key, login=False
    )
    await client.send(typ, payload)
    assert (await _refused(client))["code"] == "AUTH_REQUIRED"


async def test_malformed_frame_before_login_is_refused(mm_api: ApiProcess, devnet: Devnet) -> None:
    client = await MakerClient.open(
        ws_url(mm_api), manifest_of(devnet).makers[0].private_key, login=False
    )
    await client.ws.send("{not json")
    assert (await _refused(client))["code"] == "BAD_MESSAGE"


async def test_second_login_of_the_same_maker_supersedes_the_first(
    mm_api: ApiProcess, devnet: Devnet
) -> None:
    key = manifest_of(devnet).makers[2].private_key
    first = await MakerClient.open(ws_url(mm_api), key)
    second = await MakerClient.open(ws_url(mm_api), key)
    try:
        with pytest.raises(MakerClosed):
            await first.recv("nothing", timeout=3)
        assert first.close_code == 4409
        ref = await second.send("ping", {})
        assert (await second.recv("pong"))["payload"]["ref"] == ref
    finally:
        await second.close()


def test_allowlist_setting_overrides_the_manifest(devnet: Devnet) -> None:
    m = manifest_of(devnet)
    default = MakerHubConfig.from_settings(Settings(), m)
    assert default.allowlist == {mk.address.lower() for mk in m.makers}
    custom = Settings(maker_allowlist=f" {m.traders[0].address}, {m.makers[0].address.lower()} ,")
    assert MakerHubConfig.from_settings(custom, m).allowlist == {
        m.traders[0].address.lower(),
        m.makers[0].address.lower(),
    }
