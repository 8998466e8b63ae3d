"""The services a request handler needs, as `Annotated` dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from app.manifest import Manifest
from app.services.book_service import BookService
from app.services.makers import MakerHub
from app.services.orders import OrderService
from app.services.quotes import QuoteService

__all__ = ["Services", "ServicesDep"]


@dataclass
class Services:
    manifest: Manifest
    books: BookService
    quotes: QuoteService
    orders: OrderService
    redis: Any
    makers: MakerHub | None = None  # the market makers' WebSocket hub


async def _services(request: Request) -> Services:
    # async: a plain def dependency would run in the thread pool on every request.
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(_services)]
