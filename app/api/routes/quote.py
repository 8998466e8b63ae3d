"""`/v1/quote` (POST with a JSON body, GET with the same fields as query parameters)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import ServicesDep
from app.api.responses import JsonBytes
from app.api.schemas import QuoteBody, QuoteQuery
from app.services.quotes import QuoteRequest

router = APIRouter(tags=["quotes"])


def quote_request(body: QuoteBody) -> QuoteRequest:
    return QuoteRequest(
        sell_chain_id=body.sellChainId,
        sell_token=body.sellToken,
        buy_chain_id=body.buyChainId,
        buy_token=body.buyToken,
        sell_amount=body.sellAmount,
        buy_amount=body.buyAmount,
        taker=body.taker,
        recipient=body.recipient,
        slippage_bps=body.slippageBps,
        exclude_sources=tuple(body.excludeSources),
        max_sources=body.maxSources,
    )


@router.post("/v1/quote", summary="Quote a swap across every chain's liquidity", response_class=JsonBytes)
async def post_quote(body: QuoteBody, services: ServicesDep) -> JsonBytes:
    return JsonBytes(await services.quotes.quote(quote_request(body)))


@router.get("/v1/quote", summary="Quote a swap (query-parameter form)", response_class=JsonBytes)
async def get_quote(params: Annotated[QuoteQuery, Query()], services: ServicesDep) -> JsonBytes:
    return JsonBytes(await services.quotes.quote(quote_request(params)))
