"""Quoting: validate a request against the manifest, route it on the current book,
sign the terms with the operator key and keep the quote in Redis until it expires.

No chain is called here: the book is the adapters' in-memory view.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from prometheus_client import Histogram

from app.api.errors import ApiError, ErrorCode
from app.domain.book import VirtualBook
from app.domain.eip712 import Domain, address_of_key, sign_digest
from app.domain.quote import BPS, QuoteTerms, apply_bps_floor, format_price
from app.domain.router import (
    ChainUnavailable,
    InventoryExceeded,
    NoRoute,
    Route,
    Router,
    RoutingError,
    Side,
)
from app.domain.sources import LadderSource, Source
from app.domain.types import Asset, ChainId
from app.manifest import ChainInfo, Manifest
from app.settings import get_settings
from settlement.tier import Tier, TierRules, order_eta
from settlement.window import WindowPolicy, policy_for

__all__ = ["IssuedQuote", "QuoteRequest", "QuoteService", "QuoteStore", "parse_amount"]

MAX_AMOUNT = 2**128
# What `OrderService.confirm` and `check_against_quote` read of a stored quote.
STORED_FIELDS = (
    "quoteId", "expiresAt", "taker", "recipient", "sellChainId", "sellToken", "sellAmount",
    "buyChainId", "buyToken", "buyAmount", "minBuyAmount", "bookVersion", "rfq",
)
# The pools an issued exact-in route trades on, as (source id, state) when it was priced.
Basis = tuple[tuple[str, Source], ...]

# Routing runs on the event loop: a slow route (a routing plan rebuilt after the book moved)
# delays every request behind it. Quotes and swaps' re-pricing both count.
ROUTE_SECONDS = Histogram(
    "crossbook_route_seconds",
    "Time to route one request on the API's event loop (plan rebuilds included)",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05),
)

RECENT_QUOTES = 512  # a swap follows its quote within milliseconds; more only feeds the collector


class QuoteStore(Protocol):
    async def put(self, quote_id: str, doc: dict[str, Any], ttl: int) -> None: ...
    async def get(self, quote_id: str) -> dict[str, Any] | None: ...
    async def flush(self) -> None: ...


def parse_amount(value: object, name: str) -> int:
    """A base-unit amount: a decimal string of digits, 0 < amount < 2^128."""
    if not isinstance(value, str):
        raise ApiError(ErrorCode.INVALID_REQUEST, f"{name} must be a base-unit decimal string", [{"field": name}])
    if not value.isascii() or not value.isdigit():
        raise ApiError(
            ErrorCode.INVALID_REQUEST,
            f"{name} must be a non-negative integer in base units, as a decimal string",
            [{"field": name, "value": value[:64]}],
        )
    # 2^128 has 39 digits: anything longer is too large, decided before int() parses it.
    digits = value.lstrip("0")
    if len(digits) > 39 or (digits and int(digits) >= MAX_AMOUNT):
        raise ApiError(ErrorCode.AMOUNT_TOO_LARGE, f"{name} must be below 2^128", [{"field": name}])
    n = int(digits or "0")
    if n == 0:
        raise ApiError(ErrorCode.AMOUNT_TOO_SMALL, f"{name} must be greater than zero", [{"field": name}])
    return n


@dataclass(frozen=True, slots=True)
class QuoteRequest:
    sell_chain_id: int
    sell_token: str
    buy_chain_id: int
    buy_token: str
    sell_amount: str | None
    buy_amount: str | None
    taker: str
    recipient: str | None = None
    slippage_bps: int = 50
    exclude_sources: Sequence[str] = ()
    max_sources: int | None = None


@dataclass(frozen=True, slots=True)
class IssuedQuote:
    terms: QuoteTerms
    side: Side
    route: Route | None  # None for a same-asset cross-chain transfer
    sell: Asset
    buy: Asset
    price: str
    price_impact_bps: int
    protocol_fee: int
    signature: str
    signer: str
    domain: Domain
    blocks: dict[int, int]
    eta: dict[int, WindowPolicy]
    extra: dict[str, Any] = field(default_factory=dict)
    rfq: Any = None  # the winning maker's firm quote (a MakerQuote), when it beat the book
    tiers: TierRules | None = None  # the fast settlement tier's limits (None: standard only)

    def to_json(self) -> dict[str, Any]:
        t = self.terms
        route = []
        if self.route is not None:
            for split in self.route.splits:
                for leg in split.legs:
                    route.append(
                        {
                            "chainId": int(leg.chain),
                            "kind": str(leg.kind),
                            "pool": leg.source_id.split(":", 1)[-1],
                            "sourceId": leg.source_id,
                            "tokenIn": leg.token_in.address,
                            "tokenOut": leg.token_out.address,
                            "symbolIn": leg.token_in.symbol,
                            "symbolOut": leg.token_out.symbol,
                            "amountIn": str(leg.amount_in),
                            "amountOut": str(leg.amount_out),
                            "hop": leg.hop,
                            "via": split.via,
                        }
                    )
        if self.rfq is not None:
            q = self.rfq
            route = [
                {
                    "chainId": q.chain_id,
                    "kind": "rfq",
                    "pool": q.maker,
                    "sourceId": f"{q.chain_id}:rfq:{q.maker.lower()}",
                    "tokenIn": q.taker_token,
                    "tokenOut": q.maker_token,
                    "symbolIn": self.sell.symbol,
                    "symbolOut": self.buy.symbol,
                    "amountIn": str(q.taker_amount),
                    "amountOut": str(q.maker_amount),
                    "hop": 0,
                    "via": None,
                }
            ]
        gas = [] if self.route is None else [{"chainId": int(g.chain), "units": g.units, "cost": str(g.cost)} for g in self.route.gas]
        sell_eta = self.eta[t.sell_chain_id].eta_seconds
        buy_eta = self.eta[t.buy_chain_id].eta_seconds
        # The tier by size; at settlement a full exposure cap may still make it standard.
        tier = Tier.STANDARD if self.tiers is None else self.tiers.eligible(
            t.sell_chain_id, t.buy_chain_id, self.buy.symbol, t.buy_amount, self.buy.decimals, rfq=self.rfq is not None
        ).tier
        cross = t.sell_chain_id != t.buy_chain_id
        etas = {x.value: round(order_eta(x, sell_eta, buy_eta, cross_chain=cross), 3) for x in Tier}
        return {
            "quoteId": t.quote_id,
            "expiresAt": t.expires_at,
            "side": self.side.value,
            "taker": t.taker,
            "recipient": t.recipient,
            "sellChainId": t.sell_chain_id,
            "sellToken": t.sell_token,
            "sellSymbol": self.sell.symbol,
            "sellAmount": str(t.sell_amount),
            "buyChainId": t.buy_chain_id,
            "buyToken": t.buy_token,
            "buySymbol": self.buy.symbol,
            "buyAmount": str(t.buy_amount),
            "minBuyAmount": str(t.min_buy_amount),
            "price": self.price,
            "priceImpactBps": self.price_impact_bps,
            "route": route,
            "fees": {"protocolFee": str(self.protocol_fee), "protocolFeeToken": t.buy_token, "gas": gas},
            "bookVersion": t.book_version,
            "blocks": {str(k): v for k, v in self.blocks.items()},
            "settlementTier": tier.value,
            "settlement": {
                "tier": tier.value,
                "etaSeconds": etas[tier.value],
                "etaSecondsByTier": etas,
                "chains": {str(cid): p.to_json() for cid, p in self.eta.items() if cid in (t.sell_chain_id, t.buy_chain_id)},
            },
            "signature": self.signature,
            "signer": self.signer,
            "eip712": {"domain": self.domain.to_json(), "primaryType": "Quote"},
            **({"rfq": {**_rfq_json(self.rfq)}} if self.rfq is not None else {}),
            **self.extra,
        }


def _rfq_json(q: Any) -> dict[str, Any]:
    return {
        "rfqId": q.rfq_id,
        "chainId": q.chain_id,
        "maker": q.maker,
        "makerToken": q.maker_token,
        "makerAmount": str(q.maker_amount),
        "takerToken": q.taker_token,
        "takerAmount": str(q.taker_amount),
        "expiresAt": q.expires_at,
        "signature": q.signature,
    }


class QuoteService:
    def __init__(
        self,
        manifest: Manifest,
        book: Any,  # anything with a `.book: VirtualBook` and `.heads`
        router: Router,
        store: QuoteStore,
        *,
        operator_key: str,
        ttl_seconds: int = 30,
        protocol_fee_bps: int = 0,
        proof_seconds: float = 3.0,
    ) -> None:
        self.manifest = manifest
        self.books = book
        self.router = router
        self.store = store
        self.operator_key = operator_key
        self.operator = address_of_key(operator_key)
        self.ttl = ttl_seconds
        self.fee_bps = protocol_fee_bps
        self._domains: dict[int, Domain] = {}
        self.makers: Any = None  # the MakerHub, once the API wires it (RFQ for large orders)
        # Quotes this process issued lately, with what it stored of each, for `stored`
        # and `reusable` (a swap follows its quote within milliseconds, usually on the
        # same book version).
        self._recent: OrderedDict[str, tuple[IssuedQuote, dict[str, Any], Basis | None]] = OrderedDict()
        self.policies = {
            c.chain_id: policy_for(c.chain_id, c.block_time, c.finality_depth, proof_seconds=proof_seconds)
            for c in manifest.chains
        }
        self.tiers = TierRules.from_manifest(manifest, enabled=get_settings().fast_tier_enabled)

    # -- resolution ------------------------------------------------------------------------

    def chain(self, chain_id: int) -> ChainInfo:
        try:
            return self.manifest.chain(chain_id)
        except KeyError:
            raise ApiError(
                ErrorCode.UNKNOWN_CHAIN,
                f"unknown chain id {chain_id}",
                [{"chainId": chain_id, "known": list(self.manifest.chain_ids)}],
            ) from None

    def asset(self, chain: ChainInfo, token: str, book: VirtualBook) -> Asset:
        info = None
        if token.startswith("0x"):
            info = chain.token_by_address(token)
        else:
            info = chain.tokens.get(token.upper())
        if info is None:
            raise ApiError(
                ErrorCode.UNKNOWN_ASSET,
                f"unknown asset {token!r} on chain {chain.chain_id}",
                [{"token": token, "chainId": chain.chain_id, "known": sorted(chain.tokens)}],
            )
        return book.asset(info.symbol, ChainId(chain.chain_id))

    def domain(self, chain_id: int) -> Domain:
        # One Domain per chain: its separator (two keccaks) is computed once, not per quote.
        d = self._domains.get(chain_id)
        if d is None:
            c = self.manifest.chain(chain_id)
            d = self._domains[chain_id] = Domain(chain_id=chain_id, verifying_contract=c.contracts.get("settlement", c.inventory))
        return d

    # -- quoting ---------------------------------------------------------------------------

    def price(self, req: QuoteRequest, now: float | None = None, *, sign: bool = True) -> IssuedQuote:
        """Price `req` on the current book. `sign=False` leaves the operator's signature
        empty (a swap's re-pricing only needs the amounts; `signed` adds it when the
        quote is sent after all)."""
        now = time.time() if now is None else now
        book: VirtualBook = self.books.book
        sell_chain, buy_chain = self.chain(req.sell_chain_id), self.chain(req.buy_chain_id)
        sell, buy = self.asset(sell_chain, req.sell_token, book), self.asset(buy_chain, req.buy_token, book)
        if sell.chain == buy.chain and sell.symbol == buy.symbol:
            raise ApiError(ErrorCode.SAME_ASSET, "sell and buy are the same asset on the same chain")
        if (req.sell_amount is None) == (req.buy_amount is None):
            raise ApiError(ErrorCode.INVALID_REQUEST, "give exactly one of sellAmount or buyAmount", [{"field": "sellAmount"}])
        if not 0 <= req.slippage_bps <= 5_000:
            raise ApiError(ErrorCode.INVALID_REQUEST, "slippageBps must be within 0..5000", [{"field": "slippageBps"}])
        side = Side.EXACT_IN if req.sell_amount is not None else Side.EXACT_OUT
        amount = parse_amount(req.sell_amount if side is Side.EXACT_IN else req.buy_amount, "sellAmount" if side is Side.EXACT_IN else "buyAmount")
        for c in {sell.chain, buy.chain}:
            if not book.is_available(c):
                status = book.chain_status.get(c)
                raise ApiError(
                    ErrorCode.CHAIN_UNAVAILABLE,
                    f"chain {c} is unavailable: {status.reason if status else 'unknown'}",
                    [{"chainId": int(c), "reason": status.reason if status else ""}],
                    headers={"Retry-After": "2"},
                )
        excluded = self._matching_sources(book, req.exclude_sources) if req.exclude_sources else ()

        route: Route | None
        if sell.symbol == buy.symbol:  # the same asset across chains: inventory moves 1:1
            route = None
            sell_amount, gross_out = self._transfer_amounts(side, amount, sell, buy)
            impact = 0
        else:
            route = self._route(book, side, sell, buy, amount, req.max_sources, now, excluded)
            sell_amount, gross_out, impact = route.amount_in, route.net_out, route.price_impact_bps
        fee = gross_out * self.fee_bps // BPS
        buy_amount = gross_out - fee
        if side is Side.EXACT_OUT and buy_amount < amount:
            buy_amount = amount  # exact-out routes deliver at least what was asked
        if buy_amount <= 0 or sell_amount <= 0:
            raise ApiError(ErrorCode.AMOUNT_TOO_SMALL, "the amount is too small to trade after fees and gas")
        free = book.available_inventory(buy.chain, buy.symbol)
        if buy_amount > free:
            raise ApiError(
                ErrorCode.INSUFFICIENT_LIQUIDITY,
                f"payout exceeds the operator's free {buy.symbol} inventory on chain {buy.chain}",
                [{"chainId": int(buy.chain), "asset": buy.symbol, "free": str(free)}],
            )
        terms = QuoteTerms(
            quote_id="0x" + secrets.token_bytes(32).hex(),
            taker=req.taker,
            recipient=req.recipient or req.taker,
            sell_chain_id=int(sell.chain),
            sell_token=sell.address,
            sell_amount=sell_amount,
            buy_chain_id=int(buy.chain),
            buy_token=buy.address,
            buy_amount=buy_amount,
            min_buy_amount=apply_bps_floor(buy_amount, req.slippage_bps),
            expires_at=int(now) + self.ttl,
            book_version=book.version,
        )
        domain = self.domain(terms.sell_chain_id)
        return IssuedQuote(
            terms=terms,
            side=side,
            route=route,
            sell=sell,
            buy=buy,
            price=format_price(buy_amount, buy.decimals, sell_amount, sell.decimals),
            price_impact_bps=impact,
            protocol_fee=fee,
            signature=sign_digest(self.operator_key, terms.digest(domain)) if sign else "",
            signer=self.operator,
            domain=domain,
            blocks={cid: h.block_number for cid, h in self.books.heads.items()},
            eta=self.policies,
            tiers=self.tiers,
        )

    def signed(self, issued: IssuedQuote) -> IssuedQuote:
        """`issued` with the operator's signature over its terms."""
        if issued.signature:
            return issued
        return replace(issued, signature=sign_digest(self.operator_key, issued.terms.digest(issued.domain)))

    async def quote(self, req: QuoteRequest) -> dict[str, Any]:
        issued = self.price(req)
        basis = self._basis(issued)  # before any await: the book it was priced on
        if self.makers is not None:
            issued = await self._with_rfq(req, issued)
        doc = issued.to_json()
        stored = await self.keep(doc)
        self._recent[issued.terms.quote_id] = (issued, stored, basis)
        if len(self._recent) > RECENT_QUOTES:
            self._recent.popitem(last=False)
        return doc

    async def keep(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Store what a swap checks of an issued quote, until it expires; returns it. Not
        the whole document (the client has it): every stored byte goes through Redis's
        fsync'd append-only file, and a quote is ~3 kB of route and signature; at a
        thousand quotes a second the file's rewrites (a fork, then disk contention)
        stalled every request behind them."""
        stored = {k: doc[k] for k in STORED_FIELDS if k in doc}
        await self.store.put(doc["quoteId"], stored, self.ttl)
        return stored

    async def stored(self, quote_id: str) -> dict[str, Any] | None:
        """What a swap checks of a quote: the fields this process stored for it (written to
        Redis behind the quote's reply), from memory when it issued the quote lately
        (stored quotes never change, so both copies are the same; a swap saves a Redis
        round trip, which under load waits behind other clients' fsyncs), else from
        Redis (a quote issued before a restart)."""
        hit = self._recent.get(quote_id)
        if hit is not None:
            return hit[1]
        return await self.store.get(quote_id)

    def _basis(self, issued: IssuedQuote) -> Basis | None:
        """The pool states a just-priced exact-in route trades on, from the book it was
        priced on (None when it is not such a route). A same-asset transfer trades on no
        pool: its amounts depend on nothing the book holds."""
        book = self.books.book
        if issued.side is not Side.EXACT_IN or book.version != issued.terms.book_version:
            return None
        if issued.route is None:
            return ()
        basis = []
        for leg in issued.route.legs:
            src = book.sources.get(leg.source_id)
            if src is None or isinstance(src, LadderSource):  # a maker's ladder can expire without a new version
                return None
            basis.append((leg.source_id, src))
        return tuple(basis)

    def reusable(self, quote_id: str) -> IssuedQuote | None:
        """The issued quote itself when its route still pays exactly what it quoted: it was
        priced here, exact-in, from pools only, and either the book version is still
        current (the router is deterministic per version) or every pool the route trades
        on is in the state it was priced on, on a chain still available. Each leg's
        output is that pool's exact math on that state, so the route pays the quoted
        amounts to the unit; other sources moving does not change that (the inventory
        for the payout is checked by the confirmation itself). A swap then skips the
        re-pricing: under load the book moves between most quotes and their swaps
        (measured in `crossbook bench api`: 58 % of swaps were re-priced), mostly on
        sources or inventory the route does not use."""
        hit = self._recent.get(quote_id)
        if hit is None:
            return None
        issued, _, basis = hit
        if basis is None or issued.rfq is not None:
            return None
        book = self.books.book
        if issued.terms.book_version == book.version:
            return issued
        for source_id, src in basis:
            now = book.sources.get(source_id)
            if now is None or now != src or not book.is_available(src.chain):
                return None
        if not (book.is_available(issued.sell.chain) and book.is_available(issued.buy.chain)):
            return None
        return issued

    async def _with_rfq(self, req: QuoteRequest, issued: IssuedQuote) -> IssuedQuote:
        """For a large order, ask the makers; a firm quote that beats the book for the
        whole order replaces the route (firm quotes are all-or-nothing)."""
        exact_in = issued.side is Side.EXACT_IN
        fixed = issued.terms.sell_amount if exact_in else issued.terms.buy_amount
        if not self.makers.should_rfq(issued.sell if exact_in else issued.buy, fixed):
            return issued
        quotes = await self.makers.request_quotes(
            sell=issued.sell, buy=issued.buy, side="exactIn" if exact_in else "exactOut", amount=fixed,
            chain_ids=sorted({issued.terms.sell_chain_id, issued.terms.buy_chain_id} | set(self.manifest.chain_ids)),
        )
        if not quotes:
            return issued
        best = quotes[0]
        book = self.books.book
        maker_out = book.asset(issued.buy.symbol, ChainId(best.chain_id))
        taker_in = book.asset(issued.sell.symbol, ChainId(best.chain_id))
        buy_gross = issued.buy.from_canonical(maker_out.to_canonical(best.maker_amount))
        sell_total = issued.sell.from_canonical(taker_in.to_canonical(best.taker_amount))
        fee = buy_gross * self.fee_bps // BPS
        buy_amount = buy_gross - fee
        better = buy_amount > issued.terms.buy_amount if exact_in else sell_total < issued.terms.sell_amount
        if not better or buy_amount <= 0:
            return issued
        if exact_in and sell_total != issued.terms.sell_amount:
            return issued  # a quote for another amount (decimals rounding across chains) is not firm for this one
        slip = BPS - (issued.terms.min_buy_amount * BPS // max(issued.terms.buy_amount, 1))
        terms = replace(
            issued.terms,
            sell_amount=sell_total if not exact_in else issued.terms.sell_amount,
            buy_amount=buy_amount,
            min_buy_amount=apply_bps_floor(buy_amount, min(max(slip, 0), BPS)),
            expires_at=min(issued.terms.expires_at, best.expires_at),
        )
        return replace(
            issued,
            terms=terms,
            route=None,
            rfq=best,
            price=format_price(buy_amount, issued.buy.decimals, terms.sell_amount, issued.sell.decimals),
            price_impact_bps=0,
            protocol_fee=fee,
            signature=sign_digest(self.operator_key, terms.digest(issued.domain)),
        )

    @staticmethod
    def _matching_sources(book: VirtualBook, patterns: Sequence[str]) -> list[str]:
        """Source ids named as `chainId:address`, or by pool address on any chain."""
        wanted = {p.lower() for p in patterns}
        return [sid for sid in book.sources if sid in wanted or sid.split(":", 1)[-1] in wanted]

    def _transfer_amounts(self, side: Side, amount: int, sell: Asset, buy: Asset) -> tuple[int, int]:
        if side is Side.EXACT_IN:
            return amount, buy.from_canonical(sell.to_canonical(amount))
        # Exact out: the least input that converts to at least `amount`.
        need = sell.from_canonical(buy.to_canonical(amount))
        while buy.from_canonical(sell.to_canonical(need)) < amount:
            need += 1
        return need, amount

    def _route(
        self,
        book: VirtualBook,
        side: Side,
        sell: Asset,
        buy: Asset,
        amount: int,
        max_sources: int | None,
        now: float,
        excluded: Sequence[str] = (),
    ) -> Route:
        if max_sources is not None and max_sources < 1:
            raise ApiError(ErrorCode.INVALID_REQUEST, "maxSources must be ≥ 1", [{"field": "maxSources"}])
        try:
            # Exclusions and the source cap go to the router, which keeps its cached plan
            # (a book without those sources would be a new version: a full rebuild).
            return self._solve(book, side, sell, buy, amount, now, excluded, max_sources)
        except ChainUnavailable as e:
            raise ApiError(ErrorCode.CHAIN_UNAVAILABLE, str(e), headers={"Retry-After": "2"}) from None
        except InventoryExceeded as e:
            raise ApiError(ErrorCode.INSUFFICIENT_LIQUIDITY, str(e)) from None
        except NoRoute as e:
            code = ErrorCode.INSUFFICIENT_LIQUIDITY if "cannot" in str(e) else ErrorCode.NO_ROUTE
            raise ApiError(code, str(e)) from None
        except RoutingError as e:
            raise ApiError(ErrorCode.NO_ROUTE, str(e)) from None

    def _solve(
        self,
        book: VirtualBook,
        side: Side,
        sell: Asset,
        buy: Asset,
        amount: int,
        now: float,
        excluded: Sequence[str] = (),
        max_sources: int | None = None,
    ) -> Route:
        solve = self.router.route_exact_in if side is Side.EXACT_IN else self.router.route_exact_out
        started = time.perf_counter()
        try:
            return solve(book, sell, buy, amount, now=int(now), exclude_sources=excluded, max_sources=max_sources)
        finally:
            ROUTE_SECONDS.observe(time.perf_counter() - started)

