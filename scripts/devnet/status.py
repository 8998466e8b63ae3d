"""`crossbook devnet status`: per chain its height, finalized height (height minus the
finality depth), block time, depth, whether block production is halted, and every
pool's reserves, read in one JSON-RPC batch per chain."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eth_abi import decode
from eth_utils import function_signature_to_4byte_selector

from app.manifest import Manifest
from scripts.devnet.deploy import _Rpc
from scripts.devnet.producer import read_control

__all__ = ["devnet_status"]

_GET_RESERVES = "0x" + function_signature_to_4byte_selector("getReserves()").hex()


def devnet_status(manifest: Manifest, control: Path | None = None) -> dict[str, Any]:
    clocks = read_control(control) if control is not None and control.exists() else {}
    chains = []
    for c in manifest.chains:
        entry: dict[str, Any] = {
            "name": c.name,
            "chainId": c.chain_id,
            "rpcUrl": c.rpc_url,
            "blockTime": c.block_time,
            "finalityDepth": c.finality_depth,
            "halted": clocks[c.chain_id].halted if c.chain_id in clocks else None,
        }
        try:
            rpc = _Rpc(c.rpc_url)
            calls: list[tuple[str, list[Any]]] = [("eth_blockNumber", [])]
            calls += [("eth_call", [{"to": p.address, "data": _GET_RESERVES}, "latest"]) for p in c.pools]
            out = rpc.batch(calls)
            height = int(out[0], 16)
            entry.update(
                available=True,
                height=height,
                finalizedHeight=max(0, height - c.finality_depth),
                pools=[
                    {
                        "address": p.address,
                        "kind": p.kind,
                        "pair": f"{p.symbol0}/{p.symbol1}",
                        "feeBps": p.fee_bps,
                        "reserve0": str(r0),
                        "reserve1": str(r1),
                    }
                    for p, raw in zip(c.pools, out[1:], strict=True)
                    for r0, r1 in [decode(["uint256", "uint256"], bytes.fromhex(raw[2:]))]
                ],
            )
        except Exception as e:
            entry.update(available=False, error=str(e))
        chains.append(entry)
    return {"chains": chains}
