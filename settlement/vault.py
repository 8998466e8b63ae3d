"""The Settlement vault's calldata and events, in Python (contracts/src/Settlement.sol).

The vault executes a proven batch of one chain's order log. Its `settle` takes the batch
header, the legs' two words each (`settlement.zk.batch.calldata_words`), an `extra` byte
string read in leg order (per PULL the trader's order record, per POOL a 32-byte minimum
output), the proof and a list of earlier pulls to confirm. This module builds those
arguments, the EIP-712 `Order` the trader signs (domain "Crossbook" / "1" / chain / vault),
`settleMany` (several consecutive batches, one transaction), reclaim and confirm
calldata, and decodes the vault's events from raw logs.

Pure: no web3. A "log" is the JSON-RPC shape (`address`, `topics`, `data`, with hex
strings or bytes), as web3 receipts and `eth_getLogs` give it. docs/settlement.md has the
flows and the trust model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from itertools import pairwise
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_hash.auto import keccak

from app.domain.eip712 import Domain, sign_digest, typed_digest
from app.domain.order import ORDER_TYPE
from settlement.zk.batch import Batch, calldata_words, public_inputs_for
from settlement.zk.groth16 import Proof
from settlement.zk.legs import Leg, LegKind, order_ref_from_hash

__all__ = [
    "MAX_BATCHES",
    "NO_LINK",
    "NO_REF",
    "ORDER_BYTES",
    "ORDER_TYPE",
    "ORDER_TYPE_STRING",
    "POOL_BYTES",
    "BatchSettled",
    "MakerLeg",
    "Order",
    "Paid",
    "PayoutConfirmed",
    "PayoutSkipped",
    "PoolTrade",
    "PullFailed",
    "PullFailure",
    "Pulled",
    "ReclaimProof",
    "Reclaimed",
    "SettleCall",
    "SettleManyCall",
    "SignedOrder",
    "VaultEvent",
    "decode_logs",
    "encode_confirm",
    "encode_reclaim",
    "encode_settle",
    "encode_settle_many",
    "order_record",
    "payout_leg",
    "pull_leg",
    "pull_ref",
    "reclaim_proof",
    "settle_call",
    "settle_many_call",
    "split_pull_ref",
    "vault_domain",
]

# One definition of the signed struct for the API and the vault (app/domain/order.py).
ORDER_TYPE_STRING = ORDER_TYPE.encode_type
_ORDER_TUPLE = (
    "(address,uint256,address,uint256,uint256,address,uint256,address,uint256,uint256,bytes32)"
)

ORDER_BYTES = 199  # one PULL's record in `extra` (layout in `order_record`)
POOL_BYTES = 32  # one POOL's minimum output in `extra`
NO_LINK = 0xFFFF  # payout link of a pull whose payout is not in the same batch
NO_REF = 2**256 - 1  # pullRef of a pull that needs no confirmation
_U64 = 1 << 64
_U96 = 1 << 96

_SETTLE_SIG = (
    "settle((uint256,uint256,uint256,uint256,uint256),uint256[],bytes,uint256[8],uint256[])"
)
_BATCH_TUPLE = "((uint256,uint256,uint256,uint256,uint256),uint256[],bytes)"
_SETTLE_MANY_SIG = f"settleMany({_BATCH_TUPLE}[],uint256[],uint256[])"
MAX_BATCHES = 8  # Settlement.MAX_BATCHES
_RECLAIM_SIG = f"reclaim({_ORDER_TUPLE},uint256,uint256,bytes32[])"
_CONFIRM_SIG = "confirmPayouts(uint256[])"


def _selector(signature: str) -> bytes:
    return keccak(signature.encode())[:4]


def _addr_bytes(a: str) -> bytes:
    raw = bytes.fromhex(a[2:] if a.startswith("0x") else a)
    if len(raw) != 20:
        raise ValueError(f"bad address {a!r}")
    return raw


def _b32(v: str | bytes) -> bytes:
    raw = bytes.fromhex(v[2:] if v.startswith("0x") else v) if isinstance(v, str) else bytes(v)
    if len(raw) != 32:
        raise ValueError("expected 32 bytes")
    return raw


def vault_domain(chain_id: int, vault: str) -> Domain:
    """The EIP-712 domain of orders selling on `chain_id` through `vault`."""
    return Domain(chain_id=chain_id, verifying_contract=vault)


# -- orders --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Order:
    """A trader's intent; signed under the sell chain's vault domain."""

    trader: str
    sell_chain_id: int
    sell_token: str
    sell_amount: int
    buy_chain_id: int
    buy_token: str
    min_buy_amount: int
    recipient: str
    nonce: int
    deadline: int
    quote_id: bytes  # 32 bytes

    def values(self) -> dict[str, Any]:
        return {
            "trader": self.trader,
            "sellChainId": self.sell_chain_id,
            "sellToken": self.sell_token,
            "sellAmount": self.sell_amount,
            "buyChainId": self.buy_chain_id,
            "buyToken": self.buy_token,
            "minBuyAmount": self.min_buy_amount,
            "recipient": self.recipient,
            "nonce": self.nonce,
            "deadline": self.deadline,
            "quoteId": self.quote_id,
        }

    def digest(self, domain: Domain) -> bytes:
        """The order hash: its EIP-712 digest (what the vault's events call orderHash)."""
        return typed_digest(domain, ORDER_TYPE, self.values())

    def as_abi(self) -> tuple[Any, ...]:
        return (
            self.trader,
            self.sell_chain_id,
            self.sell_token,
            self.sell_amount,
            self.buy_chain_id,
            self.buy_token,
            self.min_buy_amount,
            self.recipient,
            self.nonce,
            self.deadline,
            _b32(self.quote_id),
        )

    def sign(self, domain: Domain, private_key: str) -> SignedOrder:
        return SignedOrder(self, bytes.fromhex(sign_digest(private_key, self.digest(domain))[2:]))


@dataclass(frozen=True, slots=True)
class SignedOrder:
    order: Order
    signature: bytes  # r ‖ s ‖ v (65 bytes, v = 27/28)


def order_record(signed: SignedOrder, payout_leg: int | None = None) -> bytes:
    """One PULL's 199-byte record in `extra`, big-endian, unpadded:

        buyChainId u64 | buyToken 20 | minBuyAmount u96 | recipient 20 | nonce u256 |
        deadline u64 | quoteId 32 | r 32 | s 32 | v u8 | payoutLeg u16

    trader, sellChainId, sellToken and sellAmount are not sent: the vault takes them from
    the leg and the chain, so a signature over other values fails. `payout_leg` is the
    batch-relative index of the same batch's PAYOUT leg that pays this order (same-chain
    orders), or None.
    """
    o, sig = signed.order, signed.signature
    if len(sig) != 65:
        raise ValueError("signature must be 65 bytes")
    if not 0 <= o.buy_chain_id < _U64 or not 0 <= o.deadline < _U64:
        raise ValueError("buyChainId and deadline must fit 64 bits")
    if not 0 <= o.min_buy_amount < _U96:
        raise ValueError("minBuyAmount must be below 2^96")
    link = NO_LINK if payout_leg is None else payout_leg
    if not 0 <= link <= NO_LINK:
        raise ValueError("payout leg out of range")
    out = b"".join(
        (
            o.buy_chain_id.to_bytes(8, "big"),
            _addr_bytes(o.buy_token),
            o.min_buy_amount.to_bytes(12, "big"),
            _addr_bytes(o.recipient),
            o.nonce.to_bytes(32, "big"),
            o.deadline.to_bytes(8, "big"),
            _b32(o.quote_id),
            sig[:64],
            bytes([sig[64] if sig[64] >= 27 else sig[64] + 27]),
            link.to_bytes(2, "big"),
        )
    )
    assert len(out) == ORDER_BYTES
    return out


def pull_leg(order: Order, token_index: int, order_hash: bytes) -> Leg:
    """The sell chain's PULL leg of `order` (trader -> vault, the full sell amount)."""
    return Leg(
        LegKind.PULL,
        int(order.trader, 16),
        token_index,
        order.sell_amount,
        0,
        order_ref_from_hash(order_hash),
    )


def payout_leg(order: Order, token_index: int, amount: int, order_hash: bytes) -> Leg:
    """The buy chain's PAYOUT leg of `order`: `amount` to the recipient, at least its minimum."""
    return Leg(
        LegKind.PAYOUT,
        int(order.recipient, 16),
        token_index,
        amount,
        order.min_buy_amount,
        order_ref_from_hash(order_hash),
    )


# -- settle ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SettleCall:
    """Arguments of `settle`, in ABI order."""

    chain_id: int
    start_index: int
    old_head: int
    new_head: int
    capacity: int
    words: tuple[int, ...]
    extra: bytes
    proof: tuple[int, ...]  # 8 words, Proof.to_evm_words()
    confirms: tuple[int, ...] = ()

    @property
    def count(self) -> int:
        return len(self.words) // 2

    def args(self) -> tuple[Any, ...]:
        """For web3's `contract.functions.settle(*call.args())`."""
        header = (self.chain_id, self.start_index, self.old_head, self.new_head, self.capacity)
        return header, list(self.words), self.extra, list(self.proof), list(self.confirms)


def settle_call(
    batch: Batch,
    capacity: int,
    proof: Proof | Sequence[int],
    pulls: Mapping[int, SignedOrder] | Sequence[SignedOrder],
    *,
    links: Mapping[int, int] | None = None,
    pool_min_out: Mapping[int, int] | None = None,
    confirms: Sequence[int] = (),
) -> SettleCall:
    """The `settle` arguments for `batch`, proven in circuit `capacity`.

    pulls: the signed order of every PULL leg, by batch-relative leg index or in leg
    order. links: pull leg index -> index of its same-batch payout leg. pool_min_out:
    POOL leg index -> minimum output (default 0).
    """
    links = links or {}
    pool_min_out = pool_min_out or {}
    pull_idx = [i for i, leg in enumerate(batch.legs) if leg.kind is LegKind.PULL]
    by_leg = dict(pulls) if isinstance(pulls, Mapping) else dict(zip(pull_idx, pulls, strict=True))
    if sorted(by_leg) != pull_idx:
        raise ValueError("need exactly one signed order per PULL leg")
    parts: list[bytes] = []
    for i, leg in enumerate(batch.legs):
        if leg.kind is LegKind.PULL:
            parts.append(order_record(by_leg[i], links.get(i)))
        elif leg.kind is LegKind.POOL:
            parts.append(pool_min_out.get(i, 0).to_bytes(POOL_BYTES, "big"))
    words = proof.to_evm_words() if isinstance(proof, Proof) else list(proof)
    if len(words) != 8:
        raise ValueError("a proof is 8 words")
    return SettleCall(
        chain_id=batch.chain_id,
        start_index=batch.start_index,
        old_head=batch.old_head,
        new_head=public_inputs_for(batch).new_head,
        capacity=capacity,
        words=tuple(calldata_words(batch.legs)),
        extra=b"".join(parts),
        proof=tuple(int(w) for w in words),
        confirms=tuple(confirms),
    )


def encode_settle(call: SettleCall) -> bytes:
    """Full calldata (selector included) of `settle`."""
    types = [
        "(uint256,uint256,uint256,uint256,uint256)",
        "uint256[]",
        "bytes",
        "uint256[8]",
        "uint256[]",
    ]
    return _selector(_SETTLE_SIG) + abi_encode(types, list(call.args()))


@dataclass(frozen=True, slots=True)
class SettleManyCall:
    """Arguments of `settleMany`: consecutive batches, their proofs, one confirm list."""

    batches: tuple[SettleCall, ...]  # each with its own proof; their `confirms` unused
    confirms: tuple[int, ...] = ()

    @property
    def start_index(self) -> int:
        return self.batches[0].start_index

    @property
    def end_index(self) -> int:
        return self.batches[-1].start_index + self.batches[-1].count

    def args(self) -> tuple[Any, ...]:
        """For web3's `contract.functions.settleMany(*call.args())`."""
        items = [(b.args()[0], list(b.words), b.extra) for b in self.batches]
        proofs = [w for b in self.batches for w in b.proof]
        return items, proofs, list(self.confirms)


def settle_many_call(batches: Sequence[SettleCall], confirms: Sequence[int] = ()) -> SettleManyCall:
    """Combine single-batch `settle_call`s into one `settleMany`.

    The batches must chain: the same chain, each starting where the previous one ends
    (start index and head), at most MAX_BATCHES; the vault checks the first against its
    cursor. Their own `confirms` must be empty: the transaction's list is `confirms`.
    """
    if not 1 <= len(batches) <= MAX_BATCHES:
        raise ValueError(f"settleMany takes 1..{MAX_BATCHES} batches")
    for prev, nxt in pairwise(batches):
        if nxt.chain_id != prev.chain_id:
            raise ValueError("batches of different chains")
        if (nxt.start_index, nxt.old_head) != (prev.start_index + prev.count, prev.new_head):
            raise ValueError(f"batch at {nxt.start_index} does not extend the batch at {prev.start_index}")
    if any(b.confirms for b in batches):
        raise ValueError("pass confirms to settle_many_call, not to the batches")
    return SettleManyCall(tuple(batches), tuple(confirms))


def encode_settle_many(call: SettleManyCall) -> bytes:
    """Full calldata (selector included) of `settleMany`."""
    types = [f"{_BATCH_TUPLE}[]", "uint256[]", "uint256[]"]
    return _selector(_SETTLE_MANY_SIG) + abi_encode(types, list(call.args()))


def pull_ref(batch_start: int, position: int) -> int:
    """Names an open pull: its batch's start index and its position among the batch's open pulls."""
    if not 0 <= position < 64:
        raise ValueError("position out of range")
    return batch_start << 8 | position


def split_pull_ref(ref: int) -> tuple[int, int]:
    return ref >> 8, ref & 0xFF


def encode_confirm(pull_refs: Sequence[int]) -> bytes:
    return _selector(_CONFIRM_SIG) + abi_encode(["uint256[]"], [list(pull_refs)])


# -- reclaim --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReclaimProof:
    """What `reclaim` needs besides the order: the vault stores only a hash per batch."""

    pull_ref: int
    settled_at: int  # timestamp of the block that settled the pull's batch
    open_hashes: tuple[bytes, ...]  # the batch's open pulls' order hashes, by position


def reclaim_proof(
    order_hash: bytes, batch_events: Iterable[VaultEvent], settled_at: int
) -> ReclaimProof:
    """From the events of the settle transaction that pulled `order_hash` (a `settleMany`
    receipt holds several batches: only the order's own batch's open pulls count)."""
    opened = [e for e in batch_events if isinstance(e, Pulled) and e.pull_ref != NO_REF]
    mine = [e for e in opened if e.order_hash == order_hash]
    if not mine:
        raise ValueError("order is not an open pull of this batch")
    start = mine[0].pull_ref >> 8
    same = sorted((e for e in opened if e.pull_ref >> 8 == start), key=lambda e: e.pull_ref)
    return ReclaimProof(mine[0].pull_ref, settled_at, tuple(e.order_hash for e in same))


def encode_reclaim(order: Order, proof: ReclaimProof) -> bytes:
    return _selector(_RECLAIM_SIG) + abi_encode(
        [_ORDER_TUPLE, "uint256", "uint256", "bytes32[]"],
        [order.as_abi(), proof.pull_ref, proof.settled_at, list(proof.open_hashes)],
    )


# -- events ---------------------------------------------------------------------------


class PullFailure(IntEnum):
    """`PullFailed.reason`. Nothing moved; only TRANSFER_FAILED consumed the nonce."""

    BAD_SIGNATURE = 1
    EXPIRED = 2
    NONCE_USED = 3
    TRANSFER_FAILED = 4


@dataclass(frozen=True, slots=True)
class BatchSettled:
    start_index: int
    count: int
    new_head: int
    open_pulls: int


@dataclass(frozen=True, slots=True)
class Pulled:
    order_hash: bytes
    pull_ref: int  # NO_REF: paid in the same batch, nothing to confirm


@dataclass(frozen=True, slots=True)
class PullFailed:
    order_hash: bytes
    leg_index: int
    reason: PullFailure


@dataclass(frozen=True, slots=True)
class Paid:
    leg_index: int


@dataclass(frozen=True, slots=True)
class PayoutSkipped:
    leg_index: int


@dataclass(frozen=True, slots=True)
class MakerLeg:
    leg_index: int
    ok: bool


@dataclass(frozen=True, slots=True)
class PoolTrade:
    leg_index: int
    amount_out: int  # 0: the trade failed and moved nothing

    @property
    def ok(self) -> bool:
        return self.amount_out > 0


@dataclass(frozen=True, slots=True)
class PayoutConfirmed:
    pull_ref: int


@dataclass(frozen=True, slots=True)
class Reclaimed:
    order_hash: bytes
    pull_ref: int
    trader: str
    amount: int


VaultEvent = (
    BatchSettled
    | Pulled
    | PullFailed
    | Paid
    | PayoutSkipped
    | MakerLeg
    | PoolTrade
    | PayoutConfirmed
    | Reclaimed
)

# topic0 -> (event class, indexed types, data types)
_EVENTS: dict[bytes, tuple[type, tuple[str, ...], tuple[str, ...]]] = {
    keccak(sig.encode()): (cls, indexed, data)
    for sig, cls, indexed, data in (
        (
            "BatchSettled(uint256,uint256,uint256,uint256)",
            BatchSettled,
            ("uint256",),
            ("uint256", "uint256", "uint256"),
        ),
        ("Pulled(bytes32,uint256)", Pulled, ("bytes32",), ("uint256",)),
        ("PullFailed(bytes32,uint256,uint8)", PullFailed, ("bytes32",), ("uint256", "uint8")),
        ("Paid(uint256)", Paid, (), ("uint256",)),
        ("PayoutSkipped(uint256)", PayoutSkipped, (), ("uint256",)),
        ("MakerLeg(uint256,bool)", MakerLeg, (), ("uint256", "bool")),
        ("PoolTrade(uint256,uint256)", PoolTrade, (), ("uint256", "uint256")),
        ("PayoutConfirmed(uint256)", PayoutConfirmed, (), ("uint256",)),
        (
            "Reclaimed(bytes32,uint256,address,uint256)",
            Reclaimed,
            ("bytes32",),
            ("uint256", "address", "uint256"),
        ),
    )
}


def _raw(v: Any) -> bytes:
    if isinstance(v, str):
        return bytes.fromhex(v[2:] if v.startswith("0x") else v)
    return bytes(v)


def decode_logs(logs: Iterable[Mapping[str, Any]], vault: str | None = None) -> list[VaultEvent]:
    """The vault's events among `logs`, in order (others, e.g. token Transfers, skipped)."""
    out: list[VaultEvent] = []
    want = vault.lower() if vault else None
    for log in logs:
        if want and str(log["address"]).lower() != want:
            continue
        topics = [_raw(t) for t in log["topics"]]
        if not topics or topics[0] not in _EVENTS:
            continue
        cls, indexed, data_types = _EVENTS[topics[0]]
        values = [abi_decode([t], topic)[0] for t, topic in zip(indexed, topics[1:], strict=True)]
        values += list(abi_decode(list(data_types), _raw(log["data"])))
        if cls is PullFailed:
            values[2] = PullFailure(values[2])
        elif cls is Reclaimed:
            values[2] = _checksum(values[2])
        out.append(cls(*values))
    return out


def _checksum(addr: str) -> str:
    hexaddr = addr.lower().removeprefix("0x")
    h = keccak(hexaddr.encode()).hex()
    return "0x" + "".join(c.upper() if int(h[i], 16) >= 8 else c for i, c in enumerate(hexaddr))
