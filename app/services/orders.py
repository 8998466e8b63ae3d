"""Swap confirmation and order status.

`confirm()` runs the checks in the order the API documents (signature, deadline, quote,
match, chains, funds), re-prices the order on the current book, reserves the route in the
in-memory book, then makes the one atomic, durable step in Redis (`Ledger.confirm`) and
answers with a receipt signed by the operator. Nothing here waits for a chain: balances
and allowances come from the adapters' view (one RPC only on a cache miss).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client import Counter, Histogram

from app.api.errors import ApiError, ErrorCode
from app.domain.book import Hold, InsufficientInventory
from app.domain.eip712 import SignatureError, recover, sign_digest
from app.domain.order import Order, OrderMismatch, OrderState, check_against_quote, pull_leg
from app.domain.receipt import Receipt
from app.domain.sources import Trade
from app.domain.types import AssetSymbol, ChainId
from app.manifest import Manifest
from app.services.book_service import BookService, LevelTaken
from app.services.ledger import Ledger
from app.services.quotes import IssuedQuote, QuoteRequest, QuoteService
from settlement.zk.legs import leaf
from settlement.zk.poseidon import poseidon

__all__ = ["OrderService"]

REPRICED = Counter("crossbook_swap_pricing_total", "How swaps were priced: their quote reused (its route's pools unchanged) or re-priced", ["how"])
# Where a confirmation's time goes, each step from the previous one (operators read the
# tail: a slow `ledger` step is Redis's fsync, a slow `price` step a plan rebuild).
PHASE = Histogram(
    "crossbook_swap_phase_seconds",
    "Time of each step of a successful confirmation",
    ["phase"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
_PHASES = {p: PHASE.labels(p) for p in ("checks", "quote", "price", "funds", "reserve", "ledger", "receipt")}
log = logging.getLogger("crossbook.orders")

_LEDGER_CODES = {
    "NONCE_REUSED": (ErrorCode.NONCE_REUSED, "nonce already used by another order of this trader"),
    "DUPLICATE": (ErrorCode.NONCE_REUSED, "this order was already confirmed"),
    "INSUFFICIENT_BALANCE": (ErrorCode.INSUFFICIENT_BALANCE, "balance does not cover this order and the trader's open orders"),
    "INSUFFICIENT_ALLOWANCE": (ErrorCode.INSUFFICIENT_ALLOWANCE, "allowance to the vault does not cover this order and the trader's open orders"),
    "INSUFFICIENT_LIQUIDITY": (ErrorCode.INSUFFICIENT_LIQUIDITY, "the operator's inventory on the buy chain is fully reserved"),
    "QUOTE_USED": (ErrorCode.QUOTE_USED, "a quote backed by a maker's firm quote takes one order; quote again"),
}


class OrderService:
    def __init__(self, manifest: Manifest, books: BookService, quotes: QuoteService, ledger: Ledger, *, operator_key: str) -> None:
        self.manifest = manifest
        self.books = books
        self.quotes = quotes
        self.ledger = ledger
        self.operator_key = operator_key
        self.makers: Any = None  # the MakerHub (fill notices), once the API wires it
        # Token index in the settlement contract's registry: the manifest's asset order.
        self.asset_index = {sym: i for i, sym in enumerate(manifest.assets)}

    # -- confirmation --------------------------------------------------------------------

    async def confirm(self, quote_id: str, order: Order, signature: str) -> dict[str, Any]:
        now = time.time()
        mark = _Marks()
        sell_chain = self.quotes.chain(order.sell_chain_id)
        self.quotes.chain(order.buy_chain_id)
        domain = self.quotes.domain(order.sell_chain_id)
        digest = order.digest(domain)
        try:
            signer = recover(digest, signature)
        except SignatureError as e:
            raise ApiError(ErrorCode.INVALID_SIGNATURE, f"bad signature: {e}") from None
        if signer.lower() != order.trader.lower():
            raise ApiError(
                ErrorCode.INVALID_SIGNATURE,
                "the signature is not the trader's over this order and domain",
                [{"recovered": signer, "domain": domain.to_json()}],
            )
        if order.deadline <= now:
            raise ApiError(ErrorCode.ORDER_EXPIRED, "the order's deadline has passed", [{"deadline": order.deadline}])
        if order.quote_id.lower() != quote_id.lower():
            raise ApiError(ErrorCode.ORDER_MISMATCH, "order.quoteId differs from quoteId", [{"field": "quoteId"}])
        mark("checks")
        quote = await self.quotes.stored(quote_id.lower())
        mark("quote")
        if quote is None:
            raise ApiError(ErrorCode.QUOTE_NOT_FOUND, "no such quote (unknown, or expired long ago)")
        if quote["expiresAt"] <= now:
            raise ApiError(ErrorCode.QUOTE_EXPIRED, "the quote has expired", [{"expiresAt": quote["expiresAt"]}])
        try:
            check_against_quote(order, quote)
        except OrderMismatch as e:
            raise ApiError(ErrorCode.ORDER_MISMATCH, str(e), [{"field": e.field}]) from None

        rfq = quote.get("rfq")
        if rfq is not None and rfq["expiresAt"] <= now:
            raise ApiError(ErrorCode.QUOTE_STALE, "the maker's firm quote behind this quote has expired; quote again")
        # Re-price on the current book: the book may have moved since the quote. A quote
        # priced here on the still-current book version would re-price to itself.
        fresh = self.quotes.reusable(quote_id.lower()) if rfq is None else None
        REPRICED.labels("reused" if fresh is not None else "repriced").inc()
        if fresh is None or fresh.terms.buy_amount < order.min_buy_amount:
            fresh = self._reprice(order, now)
        # A maker's firm RFQ quote holds whatever the book did; a book route is re-priced.
        buy_amount = int(quote["buyAmount"]) if rfq is not None else min(int(quote["buyAmount"]), fresh.terms.buy_amount)
        if buy_amount < order.min_buy_amount:
            doc = self.quotes.signed(fresh).to_json()
            await self.quotes.keep(doc)
            raise ApiError(
                ErrorCode.QUOTE_STALE,
                "the book moved: the route no longer pays the order's minBuyAmount",
                [{"freshQuote": doc}],
            )

        mark("price")
        try:
            balance, allowance = await self.books.funds(order.sell_chain_id, order.sell_token, order.trader)
        except Exception as e:  # a cache miss that cannot reach the chain
            raise ApiError(
                ErrorCode.CHAIN_UNAVAILABLE,
                f"chain {order.sell_chain_id} did not answer the balance read: {type(e).__name__}",
                headers={"Retry-After": "2"},
            ) from None
        mark("funds")
        order_hash = "0x" + digest.hex()
        sell_sym = fresh.sell.symbol
        buy_sym = fresh.buy.symbol
        pull = pull_leg(order, self.asset_index[sell_sym], digest)
        words = leaf(pull)
        leaf_hash = poseidon(list(words))
        confirmed_ms = int(now * 1000)

        # Reserve in the in-memory book first (synchronously: no other coroutine runs in
        # between), then make it durable; undo the in-memory part if Redis refuses.
        trades = []
        if fresh.route is not None and rfq is None:
            trades = [Trade(leg.source_id, leg.token_in.symbol, leg.amount_in, leg.amount_out) for leg in fresh.route.legs]
        holds = [Hold(ChainId(order.buy_chain_id), AssetSymbol(buy_sym), buy_amount)]
        try:
            self.books.reserve(order_hash, trades, holds)
        except InsufficientInventory as e:
            raise ApiError(ErrorCode.INSUFFICIENT_LIQUIDITY, str(e)) from None
        except LevelTaken as e:
            # Another order took the maker levels this route was priced on: quote again on
            # the book that now shows it.
            again = self._reprice(order, now)
            doc = self.quotes.signed(again).to_json()
            await self.quotes.keep(doc)
            raise ApiError(ErrorCode.QUOTE_STALE, str(e), [{"freshQuote": doc}]) from None

        inventory = self.books.book.inventory.get((ChainId(order.buy_chain_id), AssetSymbol(buy_sym)), 0)
        leg_doc = {
            "index": "__INDEX__",
            "kind": "pull",
            "orderId": order_hash,
            "account": order.trader,
            "token": pull.token,
            "amount": str(pull.amount),
            "minAmount": "0",
            "orderRef": str(pull.order_ref),
            "leafHash": str(leaf_hash),
        }
        order_doc = {
            "id": order_hash,
            "orderHash": order_hash,
            "state": OrderState.CONFIRMED.value,
            "reason": "",
            "order": order.to_json(),
            "signature": signature,
            "quoteId": quote_id.lower(),
            "sellSymbol": sell_sym,
            "buySymbol": buy_sym,
            "buyAmount": str(buy_amount),
            "confirmedAt": confirmed_ms,
            "route": [
                {"sourceId": t.source_id, "tokenIn": t.token_in, "amountIn": str(t.amount_in), "amountOut": str(t.amount_out)}
                for t in trades
            ],
            "legs": [
                {"kind": "pull", "chainId": order.sell_chain_id, "logIndex": "__INDEX__", "leafHash": str(leaf_hash), "state": "pending"},
                {"kind": "payout", "chainId": order.buy_chain_id, "logIndex": None, "amount": str(buy_amount), "state": "waiting_for_pull"},
            ],
            "history": [{"state": OrderState.CONFIRMED.value, "at": confirmed_ms}],
            # A maker's firm quote filled by this order: settled as MAKER_IN/MAKER_OUT legs.
            "rfq": rfq,
        }
        mark("reserve")
        try:
            outcome = await self.ledger.confirm(
                order_id=order_hash,
                trader=order.trader,
                nonce=order.nonce,
                sell_chain=order.sell_chain_id,
                sell_token=order.sell_token,
                sell_amount=order.sell_amount,
                balance=balance,
                allowance=allowance,
                buy_chain=order.buy_chain_id,
                buy_token=order.buy_token,
                payout=buy_amount,
                inventory=inventory,
                order_doc=order_doc,
                leg_doc=leg_doc,
                score_ms=confirmed_ms,
                # A maker's firm quote is filled once: its quote takes one order.
                single_use=(quote_id, int(quote["expiresAt"] - now) + 60) if rfq is not None else None,
            )
        except BaseException:
            self.books.release(order_hash)
            raise
        if outcome.status != "OK":
            self.books.release(order_hash)
            code, message = _LEDGER_CODES.get(outcome.status, (ErrorCode.INTERNAL, outcome.status))
            raise ApiError(code, message, [{"alreadyHeld": outcome.value}] if outcome.value else [])
        index = int(outcome.value)
        mark("ledger")
        await self._notify_makers(order_hash, trades, rfq)
        receipt = Receipt(order_hash, buy_amount, order.sell_chain_id, index, leaf_hash, confirmed_ms)
        doc = self._receipt_json(receipt, quote_id.lower(), sell_chain.chain_id, words)
        mark("receipt")
        mark.record()
        return doc

    async def _notify_makers(self, order_id: str, trades: list[Trade], rfq: dict[str, Any] | None) -> None:
        """Tell each maker whose level or firm quote this order used (their funds stay held
        for the fill until it settles)."""
        if self.makers is None:
            return
        from app.services.makers import MakerFill

        fills: list[tuple[str, MakerFill]] = []
        if rfq is not None:
            fills.append(
                (
                    rfq["maker"],
                    MakerFill(order_id, rfq["chainId"], rfq["makerToken"], int(rfq["makerAmount"]), rfq["takerToken"], int(rfq["takerAmount"]), rfq_id=rfq["rfqId"]),
                )
            )
        for t in trades:
            parts = t.source_id.split(":")
            if len(parts) >= 4 and parts[1] == "mm":
                src = self.books.book.sources.get(t.source_id)
                if src is None:
                    continue
                tin, tout = (src.tokens[0], src.tokens[1]) if src.tokens[0].symbol == t.token_in else (src.tokens[1], src.tokens[0])
                fills.append((parts[2], MakerFill(order_id, int(parts[0]), tout.address, t.amount_out, tin.address, t.amount_in, source_id=t.source_id)))
        for maker, fill in fills:
            try:
                await self.makers.notify_fill(maker, fill)
            except Exception:  # a notice must never fail a confirmed order
                log.warning("fill notice failed", extra={"orderId": order_id, "maker": maker})

    def _receipt_json(self, r: Receipt, quote_id: str, chain_id: int, words: tuple[int, int, int]) -> dict[str, Any]:
        domain = self.quotes.domain(chain_id)
        return {
            "orderId": r.order_hash,
            "orderHash": r.order_hash,
            "quoteId": quote_id,
            "state": OrderState.CONFIRMED.value,
            "buyAmount": str(r.buy_amount),
            "log": {"chainId": r.log_chain_id, "index": r.log_index},
            "leaf": {"packed": str(words[0]), "amountWord": str(words[1]), "orderRef": str(words[2]), "hash": str(r.leaf_hash)},
            "confirmedAt": r.confirmed_at,
            "signature": sign_digest(self.operator_key, r.digest(domain)),
            "signer": self.quotes.operator,
            "eip712": {"domain": domain.to_json(), "primaryType": "Receipt"},
        }

    def _reprice(self, order: Order, now: float) -> IssuedQuote:
        """The order's terms priced on the current book (exact in, no slippage)."""
        return self.quotes.price(
            QuoteRequest(
                sell_chain_id=order.sell_chain_id,
                sell_token=order.sell_token,
                buy_chain_id=order.buy_chain_id,
                buy_token=order.buy_token,
                sell_amount=str(order.sell_amount),
                buy_amount=None,
                taker=order.trader,
                recipient=order.recipient,
                slippage_bps=0,
            ),
            now=now,
            sign=False,
        )

    async def restore(self) -> int:
        """Re-reserve, in the in-memory book, what open orders hold (after a restart):
        their pool trades and their payout inventory. Returns how many were restored."""
        n = 0
        for doc in sorted(await self.ledger.open_orders(), key=lambda d: d["confirmedAt"]):
            trades = [Trade(t["sourceId"], t["tokenIn"], int(t["amountIn"]), int(t["amountOut"])) for t in doc.get("route", [])]
            trades = [t for t in trades if t.source_id in self.books.book.sources]
            buy_chain = doc["legs"][1]["chainId"]
            holds = [Hold(ChainId(buy_chain), AssetSymbol(doc["buySymbol"]), int(doc["buyAmount"]))]
            try:
                self.books.reserve(doc["id"], trades, holds)
            except (InsufficientInventory, KeyError) as e:
                # The chain moved under a reservation while we were down: keep the order
                # (it is confirmed and settles from the vault), only the view is partial.
                log.warning("could not restore a reservation", extra={"orderId": doc["id"], "error": str(e)})
                self.books.reserve(doc["id"], [], [])
            n += 1
        self.books.flush()  # one book version for all of them
        return n

    # -- status --------------------------------------------------------------------------

    async def status(self, order_id: str) -> dict[str, Any]:
        doc = await self.ledger.order(order_id.lower())
        if doc is None:
            raise ApiError(ErrorCode.NOT_FOUND, f"no order {order_id}")
        return self.render(doc)

    def render(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Stored order + live chain heads: confirmations and ETA per leg, and the receipt."""
        legs = []
        for leg in doc["legs"]:
            chain = self.manifest.chain(leg["chainId"])
            head = self.books.heads[chain.chain_id].block_number
            block = leg.get("block")
            confs = max(0, head - block + 1) if block is not None else 0
            policy = self.quotes.policies[chain.chain_id]
            remaining = max(0, chain.finality_depth - confs) * chain.block_time
            eta = remaining if block is not None else policy.eta_seconds
            legs.append(
                {
                    **leg,
                    "batch": leg.get("batch"),
                    "txHash": leg.get("txHash"),
                    "block": block,
                    "confirmations": confs,
                    "finalityDepth": chain.finality_depth,
                    "etaSeconds": round(eta, 3),
                }
            )
        pull = doc["legs"][0]
        receipt = Receipt(doc["orderHash"], int(doc["buyAmount"]), pull["chainId"], int(pull["logIndex"]), int(pull["leafHash"]), doc["confirmedAt"])
        domain = self.quotes.domain(pull["chainId"])
        return {
            "id": doc["id"],
            "state": doc["state"],
            "reason": doc.get("reason", ""),
            "order": doc["order"],
            "sellSymbol": doc["sellSymbol"],
            "buySymbol": doc["buySymbol"],
            "buyAmount": doc["buyAmount"],
            # fast | standard (settlement/tier.py); null until the settle worker decides (≤ 1 tick)
            "settlementTier": doc.get("tier"),
            "legs": legs,
            "history": doc["history"],
            "receipt": {**receipt.values(), "signature": sign_digest(self.operator_key, receipt.digest(domain))},
        }

    async def list_for(self, trader: str, before_ms: int | None, limit: int) -> dict[str, Any]:
        docs = await self.ledger.orders_of(trader, before_ms=before_ms, limit=limit)
        items = [self.render(d) for d in docs]
        nxt = docs[-1]["_score"] if len(docs) == limit else None
        return {"orders": items, "next": nxt}


class _Marks:
    """Step durations of one confirmation, recorded only if it succeeds (a refused order
    stops early and would skew the steps it did not reach)."""

    __slots__ = ("_last", "_steps")

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self._steps: list[tuple[str, float]] = []

    def __call__(self, phase: str) -> None:
        t = time.perf_counter()
        self._steps.append((phase, t - self._last))
        self._last = t

    def record(self) -> None:
        for phase, seconds in self._steps:
            _PHASES[phase].observe(seconds)
