"""Submission: sign and send `settle`, follow it to finality, survive reorgs.

- **Nonces.** One operator account per chain, one writer: `NonceManager` hands out nonces
  from a Redis counter seeded from the chain (`pending` count). A transaction is signed,
  and its raw bytes and hash stored in the batch document, *before* it is sent; so a crash
  at any line leaves either nothing (the next attempt signs again with a fresh nonce only
  if none was stored) or a raw transaction that the follower re-broadcasts. Nonces are
  never skipped: a stored raw transaction is always eventually sent.
- **Following.** Each tick looks at every open batch of the chain: no receipt yet → wait,
  re-broadcast after a few blocks; a receipt → the batch is mined (events applied by the
  lifecycle, the chain's batch lock released); `confirmations ≥ finality depth` → final.
- **Reorgs.** A mined batch whose receipt vanished, or whose block hash at its height
  changed, was reorged out: it goes back to `signed` and its raw transaction is sent again
  (same nonce, same proof: the cursor it builds on is restored by the re-sent earlier
  batches, which go first in nonce order). Re-mined, the lifecycle refreshes the legs'
  blocks and finality counts again from the new block.
- **Duplicates.** A second submission of a settled range reverts on the vault's cursor
  check; the on-chain cursor then tells that the range is settled, and nothing is redone.
- **Groups.** Consecutive batches cut together (`batching.group_of`) are sent in one
  `settleMany` once all are proven. Every member stores the same raw transaction (one
  compare-and-set over all of them) and is followed on its own: the receipt's events are
  applied per member (each picks its legs by index and order hash), a reorg re-sends the
  same raw transaction from each member (the node dedupes it), and the lock goes with the
  first member applied.

`ChainPort` is the I/O edge (web3 here, a fake in unit tests).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests
from eth_account import Account
from eth_typing import HexStr
from redis.exceptions import WatchError
from web3 import Web3

from settlement import lifecycle
from settlement.batching import BatchState, Keys, delete_if, group_of, load_batch
from settlement.prover_service import batch_of
from settlement.vault import (
    Order,
    SettleCall,
    SignedOrder,
    decode_logs,
    encode_confirm,
    encode_settle,
    encode_settle_many,
    settle_call,
    settle_many_call,
)

__all__ = [
    "ChainContext",
    "ChainPort",
    "NonceManager",
    "SubmitError",
    "Web3Chain",
    "ahead_reason",
    "backing_off",
    "follow_confirms",
    "follow_open",
    "note_revert",
    "send_confirms",
    "submit_batch",
    "vault_ahead",
]

log = logging.getLogger("crossbook.submitter")

# Blocks without a receipt before a signed transaction is sent again.
REBROADCAST_BLOCKS = 3
MAX_CONFIRMS_PER_BATCH = 32
# Longer than estimate + sign + send of one transaction (RPC timeouts are 10 s).
SUBMIT_FLAG_TTL = 20


class SubmitError(RuntimeError):
    """A chain call failed in a way that a retry may fix (RPC down, timeout)."""


class ChainPort(Protocol):
    def head(self) -> int: ...
    def block_hash(self, number: int) -> str | None: ...
    def receipt(self, tx_hash: str) -> dict[str, Any] | None: ...
    def send_raw(self, raw: str) -> None: ...
    def pending_nonce(self, address: str) -> int: ...
    def cursor(self, vault: str, block: int | str = "latest") -> tuple[int, int]: ...
    def estimate(self, tx: dict[str, Any]) -> int: ...
    def gas_price(self) -> int: ...
    def balance(self, token: str, holder: str, block: int | str = "latest") -> int: ...
    def logs(self, address: str, topic0: bytes, from_block: int, to_block: int) -> list[dict[str, Any]]: ...


class ChainRpcError(RuntimeError):
    """The node answered a JSON-RPC call with an error."""


_CURSOR = Web3.keccak(text="cursor()")[:4].hex()
_BALANCE_OF = Web3.keccak(text="balanceOf(address)")[:4].hex()


def _block_param(block: int | str) -> str:
    return hex(block) if isinstance(block, int) else block


def _log_entry(x: dict[str, Any]) -> dict[str, Any]:
    """A JSON-RPC log as the pipeline reads it (checksummed address, bytes)."""
    return {"address": Web3.to_checksum_address(x["address"]), "topics": [bytes.fromhex(t[2:]) for t in x["topics"]],
            "data": bytes.fromhex(x["data"][2:])}


class Web3Chain:
    """`ChainPort` over JSON-RPC (HTTP). The calls every tick makes (head, cursor, block
    hashes, receipts, logs, balances) are plain JSON-RPC on one keep-alive session:
    through web3's middleware, validators and formatters they cost several times the
    CPU (an `eth_call` even fetched the chain id first), which made an idle settle worker
    take ~19 % of a core. Rare calls (estimate, send, nonce, gas price) go through web3."""

    def __init__(self, rpc_url: str, timeout: float = 10.0) -> None:
        self.url, self.timeout = rpc_url, timeout
        self.w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
        self.session = requests.Session()
        self._id = 0

    def _rpc(self, method: str, params: list[Any]) -> Any:
        self._id += 1
        resp = self.session.post(self.url, json={"jsonrpc": "2.0", "id": self._id, "method": method, "params": params},
                                 timeout=self.timeout)
        resp.raise_for_status()
        doc = resp.json()
        if doc.get("error") is not None:
            raise ChainRpcError(f"{method}: {doc['error'].get('message', doc['error'])}")
        return doc.get("result")

    def head(self) -> int:
        return int(self._rpc("eth_blockNumber", []), 16)

    def block_hash(self, number: int) -> str | None:
        try:
            block = self._rpc("eth_getBlockByNumber", [hex(number), False])
        except Exception:  # a height beyond the head after a reorg: no block there
            return None
        return None if block is None else str(block["hash"])

    def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        rc = self._rpc("eth_getTransactionReceipt", [tx_hash])
        if rc is None:
            return None
        return {
            "status": int(rc["status"], 16),
            "blockNumber": int(rc["blockNumber"], 16),
            "blockHash": str(rc["blockHash"]),
            "gasUsed": int(rc["gasUsed"], 16),
            "logs": [_log_entry(x) for x in rc["logs"]],
        }

    def send_raw(self, raw: str) -> None:
        try:
            self.w3.eth.send_raw_transaction(HexStr(raw))
        except Exception as e:
            msg = str(e).lower()
            # Already in the pool or already mined: the transaction is out there, fine.
            if "already known" in msg or "nonce too low" in msg or "already imported" in msg:
                return
            raise

    def pending_nonce(self, address: str) -> int:
        return int(self.w3.eth.get_transaction_count(Web3.to_checksum_address(address), "pending"))

    def _call(self, to: str, data: str, block: int | str) -> bytes:
        return bytes.fromhex(str(self._rpc("eth_call", [{"to": to, "data": "0x" + data}, _block_param(block)]))[2:])

    def cursor(self, vault: str, block: int | str = "latest") -> tuple[int, int]:
        out = self._call(vault, _CURSOR, block)
        return int.from_bytes(out[:32], "big"), int.from_bytes(out[32:64], "big")

    def estimate(self, tx: dict[str, Any]) -> int:
        return int(self.w3.eth.estimate_gas(tx))  # type: ignore[arg-type]

    def gas_price(self) -> int:
        return int(self.w3.eth.gas_price)

    def logs(self, address: str, topic0: bytes, from_block: int, to_block: int) -> list[dict[str, Any]]:
        raw = self._rpc("eth_getLogs", [{"address": address, "topics": ["0x" + topic0.hex()],
                                         "fromBlock": hex(from_block), "toBlock": hex(to_block)}])
        return [{**_log_entry(x), "blockNumber": int(x["blockNumber"], 16), "transactionHash": str(x["transactionHash"])} for x in raw]

    def balance(self, token: str, holder: str, block: int | str = "latest") -> int:
        out = self._call(token, _BALANCE_OF + "00" * 12 + holder[2:].lower(), block)
        return int.from_bytes(out[:32], "big")


@dataclass
class ChainContext:
    """What the pipeline needs to know about one chain."""

    chain_id: int
    vault: str
    operator: str
    operator_key: str
    finality_depth: int
    block_time: float
    asset_index: dict[str, int]  # symbol -> token index (manifest asset order)
    tokens: list[str]  # token index -> ERC-20 address
    port: ChainPort
    extra: dict[str, Any] = field(default_factory=dict)


class NonceManager:
    """The operator's nonces on one chain, handed out from Redis.

    Seeded from the chain's pending count the first time; afterwards only `allocate`
    moves it, and only while the caller holds the chain's batch lock (single writer).
    `resync` takes the chain's count when it is ahead (someone else used the key).
    """

    def __init__(self, r: Any, chain_id: int, port: ChainPort, address: str) -> None:
        self.r, self.key, self.port, self.address = r, Keys.nonce(chain_id), port, address

    def allocate(self) -> int:
        if self.r.get(self.key) is None:
            self.r.set(self.key, str(self.port.pending_nonce(self.address)), nx=True)
        return int(self.r.incr(self.key)) - 1

    def resync(self) -> None:
        chain = self.port.pending_nonce(self.address)
        cur = self.r.get(self.key)
        if cur is None or int(cur) < chain:
            self.r.set(self.key, str(chain))


def _signed_orders(r: Any, legs: list[dict[str, Any]]) -> dict[int, SignedOrder]:
    out: dict[int, SignedOrder] = {}
    for k, leg in enumerate(legs):
        if leg["kind"] != "pull":
            continue
        doc = json.loads(r.get(Keys.order(leg["orderId"])))
        o = doc["order"]
        order = Order(
            trader=o["trader"], sell_chain_id=int(o["sellChainId"]), sell_token=o["sellToken"],
            sell_amount=int(o["sellAmount"]), buy_chain_id=int(o["buyChainId"]), buy_token=o["buyToken"],
            min_buy_amount=int(o["minBuyAmount"]), recipient=o["recipient"], nonce=int(o["nonce"]),
            deadline=int(o["deadline"]), quote_id=bytes.fromhex(o["quoteId"].removeprefix("0x")),
        )
        out[k] = SignedOrder(order, bytes.fromhex(doc["signature"].removeprefix("0x")))
    return out


def _transition(r: Any, chain: int, number: int, expect: str, update: dict[str, Any]) -> dict[str, Any] | None:
    """Set fields of batch `number` if its state is still `expect` (compare-and-set)."""
    key = Keys.batch(chain, number)
    with r.pipeline() as p:
        while True:
            try:
                p.watch(key)
                doc = json.loads(p.get(key))
                if doc["state"] != expect:
                    p.unwatch()
                    return None
                doc.update(update)
                if "state" in update and update["state"] != expect:
                    doc["history"].append({"state": update["state"], "at": time.time()})
                p.multi()
                p.set(key, json.dumps(doc, separators=(",", ":")))
                p.execute()
                return dict(doc)
            except WatchError:
                continue


def _settle_call(r: Any, doc: dict[str, Any], confirms: list[int] | None = None) -> SettleCall:
    """The `settle` arguments of one proven batch document."""
    # POOL legs: their minimum output (set at cut time, settlement/rebalance.py) goes in `extra`.
    min_out = {k: int(leg["minOut"]) for k, leg in enumerate(doc["legs"]) if leg["kind"] == "pool"}
    return settle_call(batch_of(doc), int(doc["capacity"]), [int(w) for w in doc["proof"]], _signed_orders(r, doc["legs"]),
                       pool_min_out=min_out, confirms=confirms or ())


def _calldata(r: Any, docs: list[dict[str, Any]], confirms: list[int]) -> bytes:
    """`settle` for one batch; `settleMany` for a group (consecutive batches, one tx)."""
    if len(docs) == 1:
        return encode_settle(_settle_call(r, docs[0], confirms))
    return encode_settle_many(settle_many_call([_settle_call(r, d) for d in docs], confirms))


def submit_batch(r: Any, ctx: ChainContext, number: int) -> dict[str, Any] | None:
    """Sign and send batch `number` if it is proven and not yet signed. Idempotent.

    A batch of a group (`group_of`) waits until every member is proven; then all go in
    one `settleMany` transaction, whose raw bytes and hash every member stores (one
    compare-and-set over all of them) before it is sent."""
    doc = load_batch(r, ctx.chain_id, number)
    if doc is None or doc["state"] != BatchState.PROVED:
        return doc
    members = group_of(doc)
    docs = [d for d in (load_batch(r, ctx.chain_id, m) for m in members) if d is not None]
    if len(docs) != len(members) or any(d["state"] != BatchState.PROVED for d in docs):
        return doc  # the last member to be proven submits the group
    docs.sort(key=lambda d: int(d["start"]))
    if len(docs) == 1:
        return _sign_and_send(r, ctx, number, docs)
    # One signer per group at a time: two provers finishing its members together queue
    # two submissions, and the loser's allocated nonce would leave a gap. The loser just
    # returns; the tick queues a fully proven group again within seconds.
    flag = f"stl:{ctx.chain_id}:submitting"
    if not r.set(flag, str(number), nx=True, ex=SUBMIT_FLAG_TTL):
        return doc
    try:
        return _sign_and_send(r, ctx, number, docs)
    finally:
        delete_if(r, flag, str(number))


def _sign_and_send(r: Any, ctx: ChainContext, number: int, docs: list[dict[str, Any]]) -> dict[str, Any] | None:
    # Re-read under the flag: another submission may have signed these meanwhile.
    docs = [d for d in (load_batch(r, ctx.chain_id, int(x["number"])) for x in docs) if d is not None]
    if any(d["state"] != BatchState.PROVED for d in docs):
        return load_batch(r, ctx.chain_id, number)
    confirms = sorted(int(x) for x in r.srandmember(Keys.confirms(ctx.chain_id), MAX_CONFIRMS_PER_BATCH) or [])
    data = _calldata(r, docs, confirms)
    tx: dict[str, Any] = {"from": ctx.operator, "to": ctx.vault, "data": "0x" + data.hex(), "chainId": ctx.chain_id}
    try:
        gas = ctx.port.estimate(tx)
    except (ConnectionError, TimeoutError, requests.RequestException) as e:
        raise SubmitError(f"chain {ctx.chain_id}: estimate failed: {e}") from e
    except Exception as e:  # the call reverts: the on-chain cursor tells why
        return _on_estimate_revert(r, ctx, docs, e)
    nonce = NonceManager(r, ctx.chain_id, ctx.port, ctx.operator).allocate()
    tx.update(gas=gas * 13 // 10 + 50_000, gasPrice=max(2 * ctx.port.gas_price(), 10**9), nonce=nonce)
    tx.pop("from")
    signed = Account.sign_transaction(tx, ctx.operator_key)
    raw = "0x" + bytes(signed.raw_transaction).hex()
    tx_hash = "0x" + bytes(signed.hash).hex()
    now = time.time()
    stored = _transition_all(
        r, ctx.chain_id, [int(d["number"]) for d in docs], BatchState.PROVED,
        {"state": BatchState.SIGNED, "nonce": nonce, "rawTx": raw, "txHash": tx_hash, "confirms": [str(c) for c in confirms],
         "gasLimit": tx["gas"], "signedAt": now, "sentAt": now, "sentHead": _safe_head(ctx)},
    )
    if stored is None:
        # Someone else signed this batch meanwhile; our nonce must not leave a gap.
        log.warning("chain %d batch %d: signed concurrently; re-syncing nonces", ctx.chain_id, number)
        NonceManager(r, ctx.chain_id, ctx.port, ctx.operator).resync()
        return load_batch(r, ctx.chain_id, number)
    if confirms:
        r.srem(Keys.confirms(ctx.chain_id), *[str(c) for c in confirms])
    r.sadd(Keys.open(ctx.chain_id), *[str(d["number"]) for d in docs])
    ctx.port.send_raw(raw)
    start, end = int(docs[0]["start"]), int(docs[-1]["start"]) + int(docs[-1]["count"])
    log.info("chain %d batch %s [%d,+%d) sent: %s nonce %d", ctx.chain_id, "+".join(str(d["number"]) for d in docs), start, end - start, tx_hash, nonce)
    return next(x for x in stored if x["number"] == number)


def _transition_all(r: Any, chain: int, numbers: list[int], expect: str, update: dict[str, Any]) -> list[dict[str, Any]] | None:
    """`_transition` of several batches at once: all of them (each still `expect`) or none."""
    if len(numbers) == 1:
        one = _transition(r, chain, numbers[0], expect, update)
        return None if one is None else [one]
    keys = [Keys.batch(chain, n) for n in numbers]
    with r.pipeline() as p:
        while True:
            try:
                p.watch(*keys)
                docs = [json.loads(p.get(k)) for k in keys]
                if any(d["state"] != expect for d in docs):
                    p.unwatch()
                    return None
                p.multi()
                for k, d in zip(keys, docs, strict=True):
                    d.update(update)
                    if "state" in update and update["state"] != expect:
                        d["history"].append({"state": update["state"], "at": time.time()})
                    p.set(k, json.dumps(d, separators=(",", ":")))
                p.execute()
                return [dict(d) for d in docs]
            except WatchError:
                continue


def ahead_reason(cursor: int, applied: int) -> str:
    """What a vault cursor past the ledger's applied batches means (see `vault_ahead`)."""
    return (f"the vault's cursor {cursor} is past the ledger's applied batches, which end at {applied}: legs "
            f"[{applied}, {cursor}) were settled by transactions this pipeline did not apply (a ledger restored "
            "from an older copy, or a chain reverted under a pending settle); settlement on this chain is paused "
            "until the ledger matches the vault")


def vault_ahead(r: Any, chain: int, cursor: int) -> str | None:
    """Why the chain must not be cut, when the vault's cursor is past the end of the
    batches the ledger applied; None otherwise. Called with nothing in flight, when the
    two are equal: a cursor past it means legs [applied, cursor) were settled by
    transactions this pipeline never applied (a ledger restored from an older copy, a
    chain reverted under a pending settle that it then mined). A cut from the cursor would
    skip those legs for good and leave their orders unsettled without a word, so the
    chain waits for an operator instead, with an ALERT once a minute."""
    applied = int(r.get(Keys.applied(chain)) or 0)
    if cursor <= applied:
        return None
    why = ahead_reason(cursor, applied)
    if r.set(f"stl:{chain}:aheadalert", "1", nx=True, ex=60):
        log.error("ALERT chain %d: %s", chain, why)
    return why


def _safe_head(ctx: ChainContext) -> int:
    try:
        return ctx.port.head()
    except Exception:
        return 0


def _on_estimate_revert(r: Any, ctx: ChainContext, docs: list[dict[str, Any]], err: Exception) -> dict[str, Any] | None:
    """The batch (or group: `docs` in range order) would revert; decide by the cursor."""
    index, _head = ctx.port.cursor(ctx.vault)
    first, lead = docs[0], group_of(docs[0])[0]
    start, end = int(first["start"]), int(docs[-1]["start"]) + int(docs[-1]["count"])
    numbers = [int(d["number"]) for d in docs]
    if index < start:
        # An earlier batch is not on chain (yet again, after a reorg): this one stays
        # proven and is submitted once the cursor reaches its start.
        log.info("chain %d batch %d: cursor %d behind its start %d; waiting", ctx.chain_id, first["number"], index, start)
        return first
    if index >= end:
        # The range is settled already (a duplicate submission): nothing to redo here.
        log.warning("chain %d batch %d: cursor %d already past [%d,%d): duplicate", ctx.chain_id, first["number"], index, start, end)
        out = _transition_all(r, ctx.chain_id, numbers, BatchState.PROVED, {"state": BatchState.REVERTED, "reason": f"duplicate: cursor at {index}"})
        _release_lock(r, ctx.chain_id, lead)
        return None if out is None else out[0]
    log.error("chain %d batch %d: settle would revert: %s", ctx.chain_id, first["number"], err)
    out = _transition_all(r, ctx.chain_id, numbers, BatchState.PROVED, {"state": BatchState.REVERTED, "reason": f"estimate reverted: {err}"[:500]})
    note_revert(r, ctx.chain_id, start)
    _release_lock(r, ctx.chain_id, lead)
    return None if out is None else out[0]


# A range that keeps reverting (e.g. the vault lacks inventory for a payout) is retried
# with growing pauses instead of a proof per tick; an operator has to act.
REVERT_FREE_TRIES = 2
MAX_BACKOFF = 300


def note_revert(r: Any, chain: int, start: int) -> int:
    """Count a revert of the range starting at `start`; past the free tries, pause cutting
    on this chain for 5 s, doubling up to MAX_BACKOFF. Returns the count."""
    n = int(r.incr(f"stl:{chain}:reverts:{start}"))
    r.expire(f"stl:{chain}:reverts:{start}", 3600)
    if n > REVERT_FREE_TRIES:
        pause = min(MAX_BACKOFF, 5 * 2 ** (n - REVERT_FREE_TRIES - 1))
        r.set(f"stl:{chain}:backoff", str(start), ex=pause)
        log.error("ALERT chain %d: the range at %d reverted %d times; pausing %ds", chain, start, n, pause)
    return n


def backing_off(r: Any, chain: int) -> bool:
    return bool(r.exists(f"stl:{chain}:backoff"))


def _release_lock(r: Any, chain: int, number: int | str) -> None:
    # Only the lock this batch holds; a later batch's lock stays.
    delete_if(r, Keys.lock(chain), str(number))


def follow_open(r: Any, ctx: ChainContext) -> list[dict[str, Any]]:
    """One pass over the chain's open batches: receipts, reorgs, finality. Returns the
    batches whose state changed."""
    numbers = sorted(int(x) for x in r.smembers(Keys.open(ctx.chain_id)))
    if not numbers:
        return []
    head = ctx.port.head()
    changed = []
    for n in numbers:
        doc = load_batch(r, ctx.chain_id, n)
        if doc is None:
            r.srem(Keys.open(ctx.chain_id), str(n))
            continue
        new = _follow_one(r, ctx, doc, head)
        if new is not None:
            changed.append(new)
    return changed


def _follow_one(r: Any, ctx: ChainContext, doc: dict[str, Any], head: int) -> dict[str, Any] | None:
    chain, n = ctx.chain_id, doc["number"]
    rc = ctx.port.receipt(doc["txHash"])
    if rc is None:
        if doc["state"] == BatchState.MINED:
            log.warning("chain %d batch %d: receipt vanished (reorg); re-broadcasting %s", chain, n, doc["txHash"])
            out = _transition(r, chain, n, BatchState.MINED, {"state": BatchState.SIGNED, "reorgs": doc.get("reorgs", 0) + 1, "sentAt": time.time(), "sentHead": head})
            ctx.port.send_raw(doc["rawTx"])
            return out
        if head - int(doc.get("sentHead") or 0) >= REBROADCAST_BLOCKS:
            ctx.port.send_raw(doc["rawTx"])
            _transition(r, chain, n, BatchState.SIGNED, {"sentHead": head, "rebroadcasts": doc.get("rebroadcasts", 0) + 1})
        return None
    if ctx.port.block_hash(rc["blockNumber"]) != rc["blockHash"]:
        return None  # the node is mid-reorg; look again next tick
    if rc["status"] != 1:
        return _reverted(r, ctx, doc, rc)
    if doc["state"] == BatchState.SIGNED or (doc["state"] == BatchState.MINED and doc.get("blockHash") != rc["blockHash"]):
        events = decode_logs(rc["logs"], ctx.vault)
        outs = lifecycle.outcomes(int(doc["start"]), doc["legs"], events)
        info = lifecycle.MinedInfo(chain, n, doc["txHash"], rc["blockNumber"], rc["blockHash"])
        lifecycle.apply_mined(r, info, outs, ctx.asset_index)
        failed = sum(1 for o in outs if not o.ok)
        prev = doc["state"]
        out = _transition(
            r, chain, n, prev,
            {"state": BatchState.MINED, "block": rc["blockNumber"], "blockHash": rc["blockHash"], "gasUsed": rc["gasUsed"],
             "minedAt": doc.get("minedAt") or time.time(), "failedLegs": failed,
             # Mined again in another block without our seeing the receipt vanish: a reorg too.
             "reorgs": doc.get("reorgs", 0) + (1 if prev == BatchState.MINED else 0)},
        )
        end = int(doc["start"]) + int(doc["count"])
        r.eval("if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end", 1, Keys.applied(chain), str(end))
        # A group's members share the transaction; the lock (its first number) goes with
        # the first of them applied. A member not yet applied stays `signed`, and no tick
        # cuts while an open batch is `signed`.
        _release_lock(r, chain, group_of(doc)[0])
        if prev == BatchState.SIGNED:
            log.info("chain %d batch %d mined in block %d, gas %d, %d legs failed", chain, n, rc["blockNumber"], rc["gasUsed"], failed)
        return out
    if doc["state"] == BatchState.MINED and head - int(rc["blockNumber"]) + 1 >= ctx.finality_depth:
        lifecycle.apply_final(r, chain, n, doc["legs"], head)
        out = _transition(r, chain, n, BatchState.MINED, {"state": BatchState.FINAL, "finalAt": time.time(), "finalHead": head})
        r.srem(Keys.open(chain), str(n))
        log.info("chain %d batch %d final at head %d", chain, n, head)
        return out
    return None


def _reverted(r: Any, ctx: ChainContext, doc: dict[str, Any], rc: dict[str, Any]) -> dict[str, Any] | None:
    chain, n = ctx.chain_id, doc["number"]
    index, _head = ctx.port.cursor(ctx.vault, rc["blockNumber"])
    reason = f"reverted in block {rc['blockNumber']}; cursor then at {index}"
    log.error("chain %d batch %d: %s", chain, n, reason)
    out = _transition(r, chain, n, doc["state"], {"state": BatchState.REVERTED, "reason": reason, "gasUsed": rc["gasUsed"]})
    lead = group_of(doc)[0]
    # A group reverts as a whole: count it once, at its first batch's range.
    if index < int(doc["start"]) + int(doc["count"]) and n == lead:
        note_revert(r, chain, int(doc["start"]))
    if doc.get("confirms"):
        r.sadd(Keys.confirms(chain), *doc["confirms"])  # not confirmed after all: next time
    r.srem(Keys.open(chain), str(n))
    _release_lock(r, chain, lead)
    return out




# -- confirmPayouts when the sell chain has no batch to carry them ----------------------

CONFIRM_LOCK = "confirm"


def _confirm_key(chain: int) -> str:
    return f"stl:{chain}:confirmtx"


def send_confirms(r: Any, ctx: ChainContext) -> str | None:
    """Close pulls whose payouts are final elsewhere with a `confirmPayouts` transaction,
    for a chain with nothing to settle (a settle would carry them for free). It takes the
    chain's batch lock, so it is the chain's only writer while it is out."""
    refs = sorted(int(x) for x in r.smembers(Keys.confirms(ctx.chain_id)))[:MAX_CONFIRMS_PER_BATCH]
    if not refs or not r.set(Keys.lock(ctx.chain_id), CONFIRM_LOCK, nx=True):
        return None
    tx: dict[str, Any] = {"from": ctx.operator, "to": ctx.vault, "data": "0x" + encode_confirm(refs).hex(), "chainId": ctx.chain_id}
    try:
        gas = ctx.port.estimate(tx)
    except Exception as e:
        log.error("chain %d: confirmPayouts%s would revert: %s", ctx.chain_id, refs, e)
        _release_lock(r, ctx.chain_id, CONFIRM_LOCK)
        return None
    tx.update(gas=gas * 13 // 10 + 20_000, gasPrice=max(2 * ctx.port.gas_price(), 10**9),
              nonce=NonceManager(r, ctx.chain_id, ctx.port, ctx.operator).allocate())
    tx.pop("from")
    signed = Account.sign_transaction(tx, ctx.operator_key)
    raw, tx_hash = "0x" + bytes(signed.raw_transaction).hex(), "0x" + bytes(signed.hash).hex()
    r.set(_confirm_key(ctx.chain_id), json.dumps({"rawTx": raw, "txHash": tx_hash, "refs": [str(x) for x in refs], "sentHead": _safe_head(ctx)}))
    ctx.port.send_raw(raw)
    log.info("chain %d: confirmPayouts of %d pulls sent: %s", ctx.chain_id, len(refs), tx_hash)
    return tx_hash


def follow_confirms(r: Any, ctx: ChainContext, head: int) -> None:
    """Receipt of the outstanding confirmPayouts: mined → refs done, lock released; kept
    until final so a reorg can re-broadcast it; reverted → refs stay for the next try."""
    raw = r.get(_confirm_key(ctx.chain_id))
    if raw is None:
        return
    doc = json.loads(raw)
    rc = ctx.port.receipt(doc["txHash"])
    if rc is None:
        if doc.get("block") is not None or head - int(doc.get("sentHead") or 0) >= REBROADCAST_BLOCKS:
            ctx.port.send_raw(doc["rawTx"])
            doc.update(block=None, sentHead=head)
            r.set(_confirm_key(ctx.chain_id), json.dumps(doc))
        return
    if rc["status"] != 1:
        log.error("chain %d: confirmPayouts %s reverted", ctx.chain_id, doc["txHash"])
        r.delete(_confirm_key(ctx.chain_id))
    elif doc.get("block") is None:
        r.srem(Keys.confirms(ctx.chain_id), *doc["refs"])
        doc.update(block=rc["blockNumber"], gasUsed=rc["gasUsed"])
        r.set(_confirm_key(ctx.chain_id), json.dumps(doc))
    elif head - int(rc["blockNumber"]) + 1 >= ctx.finality_depth:
        r.delete(_confirm_key(ctx.chain_id))
    _release_lock(r, ctx.chain_id, CONFIRM_LOCK)
