"""Read-only views: chains, assets, the book's depth, health and metrics."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from prometheus_client import CONTENT_TYPE_LATEST, Gauge, generate_latest

from app.api.deps import ServicesDep
from app.api.errors import ApiError, ErrorCode
from app.domain import native
from app.domain.types import AssetPair, ChainId
from settlement.tier import Switch, switch_key, usd_text

router = APIRouter()

BOOK_VERSION = Gauge("crossbook_book_version", "Current virtual book version")
CHAIN_HEAD = Gauge("crossbook_chain_head", "Latest block seen per chain", ["chain"])
CHAIN_UP = Gauge("crossbook_chain_available", "1 when the chain is available", ["chain"])


async def _fast_tier(services: Any, chain_id: int) -> dict[str, Any]:
    """What a trader needs to tell whether a payout for a pull on this chain settles fast:
    the tier is on, and the payout is worth at most `maxValueUsd` (and the trader's open
    fast payouts there stay within `traderCapUsd`). The exposure cap and the loss budget
    are the operator's business."""
    rules = services.quotes.tiers
    limits = rules.limits.get(chain_id)
    if limits is None:
        return {"on": False, "maxValueUsd": "0", "traderCapUsd": "0"}
    try:
        on = Switch.from_hash(await services.redis.hgetall(switch_key(chain_id))).on
    except Exception:  # Redis away: the quote service's copy, at most a second old
        on = chain_id not in rules.off
    cap = limits.exposure_cap if limits.trader_cap is None else limits.trader_cap
    return {"on": on, "maxValueUsd": usd_text(limits.max_value), "traderCapUsd": usd_text(cap)}


@router.get("/v1/chains", tags=["info"], summary="Chains, their heads, finality, settlement windows and fast tier")
async def chains(services: ServicesDep) -> dict[str, Any]:
    out = []
    for c in services.manifest.chains:
        head = services.books.heads[c.chain_id]
        out.append(
            {
                "chainId": c.chain_id,
                "name": c.name,
                "blockTime": c.block_time,
                "finalityDepth": c.finality_depth,
                "height": head.block_number,
                "finalizedHeight": max(0, head.block_number - c.finality_depth),
                "available": head.available,
                "reason": head.reason,
                "settlementWindow": services.quotes.policies[c.chain_id].to_json(),
                "fastTier": await _fast_tier(services, c.chain_id),
                "inventory": c.inventory,
                "contracts": c.contracts,
            }
        )
    return {"chains": out}


@router.get("/v1/assets", tags=["info"], summary="Canonical assets and their deployment on each chain")
async def assets(services: ServicesDep) -> dict[str, Any]:
    out = []
    for symbol, name in services.manifest.assets.items():
        deployments = [
            {"chainId": c.chain_id, "address": c.tokens[symbol].address, "decimals": c.tokens[symbol].decimals}
            for c in services.manifest.chains
            if symbol in c.tokens
        ]
        out.append({"symbol": symbol, "name": name, "deployments": deployments})
    return {"assets": out}


@router.get("/v1/book", tags=["info"], summary="Depth per chain and aggregated for a pair")
async def book(
    services: ServicesDep,
    base: Annotated[str, Query(max_length=16)],
    quote: Annotated[str, Query(max_length=16)],
    levels: Annotated[int, Query(ge=1, le=100)] = 20,
    stepBps: Annotated[int, Query(ge=1, le=1000)] = 10,
) -> dict[str, Any]:
    bk = services.books.book
    syms = set(bk.symbols())
    for s in (base, quote):
        if s.upper() not in syms:
            raise ApiError(ErrorCode.UNKNOWN_ASSET, f"unknown asset {s!r}", [{"known": sorted(syms)}])
    if base.upper() == quote.upper():
        raise ApiError(ErrorCode.SAME_ASSET, "base and quote are the same asset")
    pair = AssetPair(base.upper(), quote.upper())  # type: ignore[arg-type]

    def render(chain: ChainId | None) -> dict[str, Any]:
        d = bk.depth(pair, chain, levels=levels, step_bps=stepBps)
        return {
            "chainId": None if chain is None else int(chain),
            "bids": [{"price": str(lv.price), "base": str(lv.base), "quote": str(lv.quote)} for lv in d.bids],
            "asks": [{"price": str(lv.price), "base": str(lv.base), "quote": str(lv.quote)} for lv in d.asks],
            "unavailable": [int(c) for c in d.unavailable],
        }

    return {
        "base": pair.base,
        "quote": pair.quote,
        "version": bk.version,
        "units": "price: quote per base × 1e18; sizes: canonical 18-decimal units, cumulative",
        "aggregated": render(None),
        "chains": [render(ChainId(c.chain_id)) for c in services.manifest.chains],
    }


@router.get("/healthz", tags=["ops"], summary="Liveness and per-chain availability")
async def healthz(services: ServicesDep, response: Response) -> dict[str, Any]:
    redis_ok = True
    try:
        await services.redis.ping()
    except Exception:
        redis_ok = False
    chains = {str(cid): {"available": h.available, "height": h.block_number, "blockHash": h.block_hash, "reason": h.reason} for cid, h in services.books.heads.items()}
    if not redis_ok:
        response.status_code = 503
    return {
        "status": "ok" if redis_ok else "degraded",
        "redis": redis_ok,
        "bookVersion": services.books.book.version,
        "openReservations": services.books.open_reservations,
        "routerCompiled": native.ACTIVE,
        "chains": chains,
    }


@router.get("/metrics", tags=["ops"], summary="Prometheus metrics", response_class=Response)
async def metrics(services: ServicesDep) -> Response:
    BOOK_VERSION.set(services.books.book.version)
    for cid, h in services.books.heads.items():
        CHAIN_HEAD.labels(str(cid)).set(h.block_number)
        CHAIN_UP.labels(str(cid)).set(1 if h.available else 0)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
