"""A small Python client for traders: quote, sign the order, swap, follow its status.

    client = CrossbookClient("http://127.0.0.1:8000")
    quote = client.quote(sell_chain, "WETH", buy_chain, "USDC", sell_amount=10**18, taker=addr)
    receipt = client.swap(quote, private_key)
    client.order(receipt["orderId"])
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import httpx

from app.domain.eip712 import Domain, address_of_key, sign_digest
from app.domain.order import Order

__all__ = ["ApiCallError", "CrossbookClient", "order_from_quote", "sign_order", "swap_body"]


class ApiCallError(RuntimeError):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        err = body.get("error", {})
        super().__init__(f"{status} {err.get('code')}: {err.get('message')}")
        self.status = status
        self.code = err.get("code")
        self.body = body


def order_from_quote(quote: dict[str, Any], *, nonce: int | None = None, deadline: int | None = None) -> Order:
    """The order that takes `quote` as offered (minimum = the quote's slippage floor)."""
    return Order(
        trader=quote["taker"],
        sell_chain_id=quote["sellChainId"],
        sell_token=quote["sellToken"],
        sell_amount=int(quote["sellAmount"]),
        buy_chain_id=quote["buyChainId"],
        buy_token=quote["buyToken"],
        min_buy_amount=int(quote["minBuyAmount"]),
        recipient=quote["recipient"],
        nonce=secrets.randbits(64) if nonce is None else nonce,
        deadline=int(time.time()) + 120 if deadline is None else deadline,
        quote_id=quote["quoteId"],
    )


def sign_order(order: Order, domain: Domain, private_key: str) -> str:
    return sign_digest(private_key, order.digest(domain))


def swap_body(quote: dict[str, Any], order: Order, signature: str) -> dict[str, Any]:
    return {"quoteId": quote["quoteId"], "order": order.to_json(), "signature": signature}


class CrossbookClient:
    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=timeout)

    def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        r = self.http.request(method, path, **kw)
        body = r.json()
        if r.status_code >= 400:
            raise ApiCallError(r.status_code, body)
        return dict(body)

    def quote(
        self, sell_chain: int, sell_token: str, buy_chain: int, buy_token: str, *, taker: str, sell_amount: int | None = None, buy_amount: int | None = None, **extra: Any
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"sellChainId": sell_chain, "sellToken": sell_token, "buyChainId": buy_chain, "buyToken": buy_token, "taker": taker, **extra}
        if sell_amount is not None:
            body["sellAmount"] = str(sell_amount)
        if buy_amount is not None:
            body["buyAmount"] = str(buy_amount)
        return self._call("POST", "/v1/quote", json=body)

    def swap(self, quote: dict[str, Any], private_key: str, *, nonce: int | None = None, deadline: int | None = None) -> dict[str, Any]:
        if address_of_key(private_key).lower() != quote["taker"].lower():
            raise ValueError("the key is not the quote's taker")
        order = order_from_quote(quote, nonce=nonce, deadline=deadline)
        d = quote["eip712"]["domain"]
        sig = sign_order(order, Domain(chain_id=d["chainId"], verifying_contract=d["verifyingContract"]), private_key)
        return self._call("POST", "/v1/swap", json=swap_body(quote, order, sig))

    def order(self, order_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/orders/{order_id}")

    def orders(self, trader: str, *, before: int | None = None, limit: int = 50) -> dict[str, Any]:
        params: dict[str, Any] = {"trader": trader, "limit": limit}
        if before is not None:
            params["before"] = before
        return self._call("GET", "/v1/orders", params=params)
