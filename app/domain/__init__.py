"""Pure domain logic: assets, pool math, the book, the router, orders and quotes (no I/O).

The routing hot path runs compiled with mypyc when its build matches the sources
(`app.domain.native`); otherwise the same modules run from their sources.
"""

from app.domain import native as _native

_native.select()
