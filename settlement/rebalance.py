"""Maker legs and netted pool legs: the chain follows the book.

An order routed through a maker's ladder level or firm RFQ quote, or through pools, is
paid from the vault's inventory (PULL, PAYOUT). This module makes the counterparties
move too, so inventory is restored by the trades the router chose:

- **Makers.** When the order's pull has settled (never for a failed pull), one MAKER_IN
  per fill enters the log of the maker's chain: the maker delivers what it sold, through
  its allowance. Its MAKER_OUT (the vault pays the maker what it bought) enters the log
  only once that MAKER_IN succeeded on chain: the vault does not link the two legs, and a
  MAKER_OUT in the same batch would pay a maker who revoked its allowance for nothing. A
  failed MAKER_IN is the operator's loss (the trader was paid from inventory): booked
  (`stl:{c}:losses`, `stl:losses`, as the fast tier books its losses), logged as ALERT, the maker told in its `settlement` notice; no
  MAKER_OUT follows. Makers get a notice per leg mined and per leg final; the first one
  releases what the hub holds of the maker's funds for the fill. If the order's pull
  fails, no maker leg is appended and the maker gets a `cancelled` notice.
- **Pools.** The order's pool trades (its `route`) become pending flows of the pool's
  chain when the pull settles. At cut time (`PoolNetting`, called by
  `batching.cut_batch`) the chain's pending flows are netted per pool
  (`netting.net_flows`) and one POOL leg per pool with a non-zero net is appended, with
  a minimum output from the pool's twin on the current reserves less
  `CROSSBOOK_POOL_TOLERANCE_BPS` (default 50). A failed pool trade (slippage, pool error)
  moves nothing; it is logged and booked in `stl:{c}:poolfailed` and **not** retried: a
  retry at the now-worse price could lose more than the imbalance it fixes, so the
  operator decides (`requeue_failed_pool` puts the flow back for the next cut).

Every application is a WATCH/MULTI transaction, idempotent per (leg, transaction) like
the lifecycle's; the vault's expected balances (`stl:{c}:expect`, reconcile.py) move by
exactly what the vault's events say.

Keys (besides the ledger's and batching.py's):

    stl:{c}:flows          hash "{orderId}:{k}" -> a pool trade not yet netted (JSON)
    stl:{c}:leg:{index}    maker/pool leg state (JSON: state, batch, tx, block, outcome)
    stl:{c}:losses         hash token index -> base units the vault on c lost (shared with
                           the fast tier's failed pulls, settlement/tier.py)
    stl:losses             list of every booked operator loss (JSON, with its "kind")
    stl:{c}:poolfailed     list of failed pool trades (JSON), not retried
    stl:{c}:netting:last   the last netting report (also in the cut batch's document)
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import WatchError

from app.domain.amm import AmmError
from app.domain.order import maker_in_leg, maker_out_leg, pool_leg
from settlement.batching import Keys
from settlement.netting import PoolState, expected_out, flows_from_routes, min_out, net_flows
from settlement.zk.legs import Leg, leaf
from settlement.zk.poseidon import poseidon

if TYPE_CHECKING:
    from app.manifest import PoolInfo
    from settlement.lifecycle import LegOutcome, MinedInfo

__all__ = [
    "AUX_KINDS",
    "MakerFillLeg",
    "PoolNetting",
    "apply_aux_final",
    "apply_aux_mined",
    "flows_key",
    "leg_key",
    "losses_key",
    "maker_fills",
    "netting_hook",
    "on_pull_failed",
    "on_pull_settled",
    "pool_routes",
    "poolfailed_key",
    "requeue_failed_pool",
    "tolerance_bps",
    "watch_keys",
]

log = logging.getLogger("crossbook.rebalance")

AUX_KINDS = frozenset({"maker_in", "maker_out", "pool"})


def flows_key(chain: int) -> str:
    return f"stl:{chain}:flows"


def leg_key(chain: int, index: int) -> str:
    return f"stl:{chain}:leg:{index}"


def losses_key(chain: int) -> str:
    """The same hash the fast tier books its losses in (settlement/tier.py)."""
    return f"stl:{chain}:losses"


LOSS_LIST = "stl:losses"


def poolfailed_key(chain: int) -> str:
    return f"stl:{chain}:poolfailed"


def tolerance_bps() -> int:
    return int(os.environ.get("CROSSBOOK_POOL_TOLERANCE_BPS", "50"))


# -- pure: what an order owes the chain besides its pull and payout ----------------------


@dataclass(frozen=True, slots=True)
class MakerFillLeg:
    """One maker fill of an order: on `chain_id`, the maker sold `sold_amount` of
    `sold_symbol` (MAKER_IN) and bought `bought_amount` of `bought_symbol` (MAKER_OUT)."""

    chain_id: int
    maker: str
    source_id: str
    sold_symbol: str
    sold_amount: int
    bought_symbol: str
    bought_amount: int


def _is_pool(source_id: str) -> bool:
    parts = source_id.split(":")
    return len(parts) == 2 and parts[1].startswith("0x")


def maker_fills(doc: dict[str, Any]) -> list[MakerFillLeg]:
    """The maker fills of an order document: ladder levels in its route
    ("<chain>:mm:<maker>:<BASE>-<QUOTE>") and its firm RFQ quote. Pure."""
    out = []
    for t in doc.get("route") or []:
        parts = t["sourceId"].split(":")
        if len(parts) < 4 or parts[1] != "mm":
            continue
        base, quote = parts[3].split("-", 1)
        tin = t["tokenIn"]
        tout = quote if tin == base else base
        out.append(MakerFillLeg(int(parts[0]), parts[2], t["sourceId"], tout, int(t["amountOut"]), tin, int(t["amountIn"])))
    rfq = doc.get("rfq")
    if rfq:
        # The maker pays the order's buy asset and takes its sell asset, on its quote's chain.
        out.append(MakerFillLeg(int(rfq["chainId"]), rfq["maker"].lower(), f"{rfq['chainId']}:rfq:{rfq['rfqId']}",
                                doc["buySymbol"], int(rfq["makerAmount"]), doc["sellSymbol"], int(rfq["takerAmount"])))
    return [f for f in out if f.sold_amount > 0 or f.bought_amount > 0]


def pool_routes(doc: dict[str, Any]) -> dict[int, list[dict[str, str]]]:
    """The order's route entries on pools, per pool chain. Pure."""
    out: dict[int, list[dict[str, str]]] = {}
    for t in doc.get("route") or []:
        if _is_pool(t["sourceId"]):
            out.setdefault(int(t["sourceId"].split(":")[0]), []).append(t)
    return out


def _entry(index: int, kind: str, leg: Leg, account: str, now_ms: int, **more: Any) -> dict[str, Any]:
    return {
        "index": index, "kind": kind, "account": account, "token": leg.token, "amount": str(leg.amount),
        "minAmount": "0", "orderRef": str(leg.order_ref), "leafHash": str(poseidon(list(leaf(leg)))), "at": now_ms, **more,
    }


# -- Redis: on a pull settled (inside the lifecycle's transaction) ------------------------


def watch_keys(doc: dict[str, Any]) -> list[str]:
    """Keys `on_pull_settled` reads for this order: watch them in its transaction."""
    keys = {Keys.log_next(f.chain_id) for f in maker_fills(doc)}
    keys |= {flows_key(c) for c in pool_routes(doc)}
    return sorted(keys)


def on_pull_settled(doc: dict[str, Any], reader: Any, pipe: Any, asset_index: dict[str, int], now_ms: int) -> None:
    """Queue, on `pipe`, the order's MAKER_IN legs and pool flows. Call in the transaction
    that marks the pull settled (after a payout appended in it, if any): indices continue
    after that payout on its chain."""
    oid = doc["id"]
    digest = bytes.fromhex(oid.removeprefix("0x"))
    nxt: dict[int, int] = {}
    payout: dict[str, Any] = next((x for x in doc["legs"] if x["kind"] == "payout"), {})
    refs = []
    for f in maker_fills(doc):
        c = f.chain_id
        if c not in nxt:
            nxt[c] = int(reader.get(Keys.log_next(c)) or 0)
            if int(payout.get("chainId", -1)) == c and payout.get("logIndex") is not None:
                nxt[c] = max(nxt[c], int(payout["logIndex"]) + 1)  # appended in this transaction
        index = nxt[c]
        nxt[c] += 1
        leg = maker_in_leg(f.maker, asset_index[f.sold_symbol], f.sold_amount, digest)
        entry = _entry(index, "maker_in", leg, f.maker, now_ms, orderId=oid, maker=f.maker, sourceId=f.source_id,
                       symbol=f.sold_symbol, outSymbol=f.bought_symbol, outToken=asset_index[f.bought_symbol],
                       outAmount=str(f.bought_amount))
        pipe.hset(Keys.log_legs(c), str(index), json.dumps(entry, separators=(",", ":")))
        refs.append({"kind": "maker_in", "chainId": c, "logIndex": index, "maker": f.maker})
    for c, n in nxt.items():
        pipe.set(Keys.log_next(c), str(n))
    if refs:
        doc["makerLegs"] = refs
    for c, routes in pool_routes(doc).items():
        for k, t in enumerate(routes):
            flow = {**t, "orderId": oid, "at": now_ms}
            pipe.hset(flows_key(c), f"{oid}:{k}", json.dumps(flow, separators=(",", ":")))


def on_pull_failed(doc: dict[str, Any], pipe: Any, info: MinedInfo) -> None:
    """The order's pull failed: no maker leg will follow. Queue, on `pipe`, a `cancelled`
    notice per maker fill, so the hub stops holding the maker's funds for it."""
    for f in maker_fills(doc):
        entry = {"maker": f.maker, "orderId": doc["id"], "kind": "maker_in"}
        _notice(pipe, entry, f.chain_id, "cancelled", info, f"the order's pull failed on chain {info.chain_id}: no maker leg settles")


# -- Redis: at cut time, net the chain's flows into POOL legs -----------------------------


class PoolNetting:
    """The cut hook of one chain (`batching.cut_batch(..., hook=...)`): pending flows count
    as a pending leg for the window; `before_cut` nets them into POOL legs."""

    def __init__(
        self,
        r: Any,
        chain_id: int,
        pools: dict[str, PoolInfo],
        decimals: dict[str, int],
        asset_index: dict[str, int],
        reserves: Callable[[str], tuple[int, int]],
        tolerance: int | None = None,
    ) -> None:
        self.r, self.chain_id, self.pools, self.decimals = r, chain_id, pools, decimals
        self.asset_index, self.reserves = asset_index, reserves
        self.tolerance = tolerance_bps() if tolerance is None else tolerance

    def pending_since(self) -> float | None:
        """When the oldest pending flow arrived (seconds), or None."""
        vals = self.r.hvals(flows_key(self.chain_id))
        ats = [int(json.loads(v)["at"]) for v in vals]
        return min(ats) / 1000 if ats else None

    def before_cut(self) -> dict[str, Any] | None:
        """Net the pending flows and append one POOL leg per pool with a non-zero net, all
        in one transaction against the API's confirm script. Returns the netting report."""
        c = self.chain_id
        pool_tokens = {sid: (p.symbol0, p.symbol1) for sid, p in self.pools.items()}
        with self.r.pipeline() as p:
            while True:
                try:
                    p.watch(flows_key(c), Keys.log_next(c))
                    raw = {_s(k): json.loads(v) for k, v in self.r.hgetall(flows_key(c)).items()}
                    if not raw:
                        p.unwatch()
                        return None
                    unknown = [f for f, x in raw.items() if x["sourceId"].lower() not in pool_tokens]
                    if unknown:
                        log.error("chain %d: flows on pools not in the manifest dropped: %s", c, unknown)
                    flows = flows_from_routes(list(raw.values()), pool_tokens, chain_id=c)
                    report = net_flows(flows)
                    at = min(int(x["at"]) for x in raw.values())
                    index = int(self.r.get(Keys.log_next(c)) or 0)
                    entries, legs_json = [], []
                    for t in report.pool_trades:
                        entry = self._pool_entry(index, t.pool, t.token_in, t.token_out, t.amount_in, at)
                        if entry is None:
                            continue
                        entries.append(entry)
                        legs_json.append({k: entry[k] for k in ("index", "pool", "tokenIn", "tokenOut", "amount", "minOut", "expectedOut")})
                        index += 1
                    out = {**report.to_json(), "flows": len(raw), "orders": sorted({x["orderId"] for x in raw.values()}), "poolLegs": legs_json}
                    p.multi()
                    for e in entries:
                        p.hset(Keys.log_legs(c), str(e["index"]), json.dumps(e, separators=(",", ":")))
                    if entries:
                        p.set(Keys.log_next(c), str(index))
                    p.hdel(flows_key(c), *raw.keys())
                    p.set(f"stl:{c}:netting:last", json.dumps(out, separators=(",", ":")))
                    p.execute()
                    log.info("chain %d netting: %d flows, ratio %.4f, %d pool legs %s", c, len(raw), report.ratio, len(entries),
                             [(e["index"], e["pool"], e["amount"], e["minOut"]) for e in entries])
                    return out
                except WatchError:
                    continue

    def _pool_entry(self, index: int, sid: str, tin: str, tout: str, amount: int, at_ms: int) -> dict[str, Any] | None:
        info = self.pools[sid]
        r0, r1 = self.reserves(info.address)
        state = PoolState(info.kind, info.symbol0, info.symbol1, r0, r1, info.fee_bps, info.amp,
                          self.decimals.get(info.symbol0, 18), self.decimals.get(info.symbol1, 18))
        try:
            exp = expected_out(state, tin, amount)
        except AmmError as e:
            # The pool would revert this trade now: booked like a failed trade, not sent.
            self._book_pool_failure({"pool": sid, "tokenIn": tin, "tokenOut": tout, "amount": str(amount),
                                     "reason": f"not sent: the pool twin says the trade reverts ({e})", "at": int(time.time() * 1000)})
            return None
        leg = pool_leg(info.address, self.asset_index[tin], amount)
        return _entry(index, "pool", leg, info.address, at_ms, orderId="", pool=sid, tokenIn=tin, tokenOut=tout,
                      outToken=self.asset_index[tout], minOut=str(min_out(exp, self.tolerance)), expectedOut=str(exp),
                      reserves=[str(r0), str(r1)], toleranceBps=self.tolerance)

    def _book_pool_failure(self, rec: dict[str, Any]) -> None:
        log.error("chain %d: pool trade failed: %s", self.chain_id, rec)
        self.r.rpush(poolfailed_key(self.chain_id), json.dumps(rec, separators=(",", ":")))


_manifests: dict[str, tuple[float, Any]] = {}
_web3s: dict[str, Any] = {}  # per RPC URL: a tick reuses the provider and its HTTP session


def netting_hook(r: Any, chain_id: int, asset_index: dict[str, int]) -> PoolNetting:
    """The cut hook of `chain_id` from the manifest (`CROSSBOOK_MANIFEST`, re-read when it
    changes): its pools, token decimals, and reserves read over the chain's RPC."""
    from pathlib import Path

    from web3 import Web3

    from app.manifest import Manifest
    from app.settings import get_settings

    path = Path(get_settings().manifest)
    mtime = path.stat().st_mtime
    hit = _manifests.get(str(path))
    if hit is None or hit[0] != mtime:
        hit = (mtime, Manifest.load(path))
        _manifests[str(path)] = hit
    chain = hit[1].chain(chain_id)
    w3 = _web3s.get(chain.rpc_url)
    if w3 is None:
        w3 = _web3s[chain.rpc_url] = Web3(Web3.HTTPProvider(chain.rpc_url, request_kwargs={"timeout": 10}))
    selector = Web3.keccak(text="getReserves()")[:4]

    def reserves(pool: str) -> tuple[int, int]:
        out = w3.eth.call({"to": Web3.to_checksum_address(pool), "data": selector})
        return int.from_bytes(out[:32], "big"), int.from_bytes(out[32:64], "big")

    pools = {f"{chain_id}:{p.address.lower()}": p for p in chain.pools}
    decimals = {s: t.decimals for s, t in chain.tokens.items()}
    return PoolNetting(r, chain_id, pools, decimals, asset_index, reserves)


def requeue_failed_pool(r: Any, chain: int, position: int) -> bool:
    """Operator action: put a failed pool trade (entry `position` of `stl:{c}:poolfailed`)
    back as a pending flow, to be netted again at the next cut. True if it was queued."""
    raw = r.lindex(poolfailed_key(chain), position)
    if raw is None:
        return False
    rec = json.loads(raw)
    if rec.get("requeued"):
        return False
    # amountOut: what the trade was to bring in. Netting sells a surplus only for a token the
    # flows take out, so the flow must say it takes the other token out.
    out = max(1, int(rec.get("expectedOut") or 0))
    flow = {"sourceId": rec["pool"], "tokenIn": rec["tokenIn"], "amountIn": rec["amount"], "amountOut": str(out),
            "orderId": f"requeue:{rec.get('index', position)}", "at": int(time.time() * 1000)}
    r.hset(flows_key(chain), f"requeue:{chain}:{rec.get('index', position)}", json.dumps(flow))
    r.lset(poolfailed_key(chain), position, json.dumps({**rec, "requeued": True}))
    return True


# -- Redis: a batch mined / final ---------------------------------------------------------


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _big(v: Any) -> int:
    return int(_s(v)) if v is not None else 0


def _notice(pipe: Any, entry: dict[str, Any], chain: int, status: str, info: Any, reason: str = "") -> None:
    from app.services.makers import NOTICE_CHANNEL, settlement_notice

    pipe.publish(NOTICE_CHANNEL, settlement_notice(
        entry["maker"], order_id=entry["orderId"], chain_id=chain, status=status, tx_hash=info.tx_hash,
        block_number=info.block, batch_id=str(info.batch), leg=entry["kind"], reason=reason or None,
    ))


def apply_aux_mined(r: Any, info: MinedInfo, outs: Sequence[LegOutcome]) -> None:
    """Apply the maker and pool legs of a mined batch (idempotent per leg and transaction)."""
    now_ms = int(time.time() * 1000)
    pools = []
    for o in outs:
        if o.leg["kind"] in AUX_KINDS:
            _apply_one(r, info, o, now_ms)
            if o.leg["kind"] == "pool":
                pools.append({"index": o.index, "pool": o.leg["pool"], "tokenIn": o.leg["tokenIn"], "amountIn": o.leg["amount"],
                              "tokenOut": o.leg["tokenOut"], "amountOut": str(o.amount_out), "minOut": o.leg["minOut"], "ok": o.ok})
    if pools:
        _batch_field(r, info.chain_id, info.batch, "poolTrades", pools)


def _batch_field(r: Any, chain: int, n: int, name: str, value: Any) -> None:
    key = Keys.batch(chain, n)
    with r.pipeline() as p:
        while True:
            try:
                p.watch(key)
                raw = p.get(key)
                if raw is None:
                    p.unwatch()
                    return
                doc = json.loads(raw)
                doc[name] = value
                p.multi()
                p.set(key, json.dumps(doc, separators=(",", ":")))
                p.execute()
                return
            except WatchError:
                continue


def _apply_one(r: Any, info: MinedInfo, o: LegOutcome, now_ms: int) -> None:
    c, e = info.chain_id, o.leg
    key = leg_key(c, o.index)
    watch = [key, Keys.expect(c), Keys.log_next(c), losses_key(c)]
    with r.pipeline() as p:
        while True:
            try:
                p.watch(*watch)
                cur = json.loads(r.get(key) or "{}")
                block = {"batch": info.batch, "txHash": info.tx_hash, "block": info.block, "blockHash": info.block_hash}
                if cur.get("txHash") == info.tx_hash:
                    if cur.get("blockHash") == info.block_hash:
                        p.unwatch()
                        return
                    p.multi()  # the same transaction mined again after a reorg: new block
                    p.set(key, json.dumps({**cur, **block}, separators=(",", ":")))
                    p.execute()
                    return
                doc: dict[str, Any] = {"kind": e["kind"], "index": o.index, "orderId": e.get("orderId", ""), **block,
                                       "state": "settled" if o.ok else "failed", "at": now_ms}
                p.multi()
                if e["kind"] == "maker_in":
                    _maker_in(r, p, c, e, o, info, doc)
                elif e["kind"] == "maker_out":
                    _expect(r, p, c, int(e["token"]), -int(e["amount"]))
                    _notice(p, e, c, "settled", info)
                else:
                    _pool(r, p, c, e, o, doc)
                p.set(key, json.dumps(doc, separators=(",", ":")))
                p.execute()
                break
            except WatchError:
                continue
    if e["kind"] == "maker_in" and not o.ok:
        log.error("ALERT chain %d: MAKER_IN leg %d of maker %s failed (order %s): %s %s not delivered; booked as operator loss",
                  c, o.index, e["maker"], e["orderId"], e["amount"], e["symbol"])
    elif e["kind"] == "pool" and not o.ok:
        log.error("chain %d: POOL leg %d on %s failed (min out %s): booked in %s, not retried",
                  c, o.index, e["pool"], e["minOut"], poolfailed_key(c))


def _expect(r: Any, p: Any, chain: int, token: int, delta: int) -> None:
    cur = _big(r.hget(Keys.expect(chain), str(token)))
    p.hset(Keys.expect(chain), str(token), str(cur + delta))


def _maker_in(r: Any, p: Any, c: int, e: dict[str, Any], o: LegOutcome, info: MinedInfo, doc: dict[str, Any]) -> None:
    if o.ok:
        _expect(r, p, c, int(e["token"]), int(e["amount"]))
        # Delivered: now the vault pays the maker what it bought (next batch of this chain).
        index = int(r.get(Keys.log_next(c)) or 0)
        digest = bytes.fromhex(e["orderId"].removeprefix("0x"))
        leg = maker_out_leg(e["maker"], int(e["outToken"]), int(e["outAmount"]), digest)
        out = _entry(index, "maker_out", leg, e["maker"], int(time.time() * 1000), orderId=e["orderId"], maker=e["maker"],
                     sourceId=e.get("sourceId", ""), symbol=e["outSymbol"], makerIn=o.index)
        p.hset(Keys.log_legs(c), str(index), json.dumps(out, separators=(",", ":")))
        p.set(Keys.log_next(c), str(index + 1))
        doc["makerOut"] = index
        _notice(p, e, c, "settled", info)
        return
    reason = (f"MAKER_IN failed on chain {c}: {e['amount']} {e['symbol']} could not be taken from the maker "
              f"(allowance or balance too low at settlement); the operator covered the order, the maker is not paid")
    doc.update(reason=reason, makerOut=None)
    rec = {"kind": "maker_in", "chainId": c, "index": o.index, "orderId": e["orderId"], "maker": e["maker"], "token": int(e["token"]),
           "symbol": e["symbol"], "amount": e["amount"], "notPaid": {"token": int(e["outToken"]), "amount": e["outAmount"]},
           "txHash": info.tx_hash, "at": doc["at"]}
    p.rpush(LOSS_LIST, json.dumps(rec, separators=(",", ":")))
    cur = _big(r.hget(losses_key(c), str(e["token"])))
    p.hset(losses_key(c), str(e["token"]), str(cur + int(e["amount"])))
    _notice(p, e, c, "failed", info, reason)


def _pool(r: Any, p: Any, c: int, e: dict[str, Any], o: LegOutcome, doc: dict[str, Any]) -> None:
    doc.update(pool=e["pool"], amountIn=e["amount"], amountOut=str(o.amount_out), minOut=e["minOut"])
    if o.ok:
        _expect(r, p, c, int(e["token"]), -int(e["amount"]))
        _expect(r, p, c, int(e["outToken"]), o.amount_out)
        return
    rec = {"index": o.index, "pool": e["pool"], "tokenIn": e["tokenIn"], "tokenOut": e["tokenOut"], "amount": e["amount"],
           "minOut": e["minOut"], "expectedOut": e.get("expectedOut"), "reason": "PoolTrade amountOut 0 (slippage or pool error)",
           "txHash": doc["txHash"], "at": doc["at"]}
    p.rpush(poolfailed_key(c), json.dumps(rec, separators=(",", ":")))


def apply_aux_final(r: Any, chain: int, batch: int, legs: Sequence[dict[str, Any]], final_block: int) -> None:
    """The batch is final: its maker and pool legs too; makers are told."""
    now_ms = int(time.time() * 1000)
    for e in legs:
        if e["kind"] not in AUX_KINDS:
            continue
        key = leg_key(chain, int(e["index"]))
        with r.pipeline() as p:
            while True:
                try:
                    p.watch(key)
                    cur = json.loads(r.get(key) or "{}")
                    if cur.get("batch") != batch or cur.get("state") not in ("settled", "failed"):
                        p.unwatch()
                        break
                    cur.update(state="final" if cur["state"] == "settled" else "failed_final", finalAt=now_ms, finalBlock=final_block)
                    p.multi()
                    p.set(key, json.dumps(cur, separators=(",", ":")))
                    if e["kind"] != "pool":
                        info = _Final(cur["txHash"], cur["block"], batch)
                        _notice(p, e, chain, "final" if cur["state"] == "final" else "failed_final", info)
                    p.execute()
                    break
                except WatchError:
                    continue


@dataclass(frozen=True, slots=True)
class _Final:
    tx_hash: str
    block: int
    batch: int
