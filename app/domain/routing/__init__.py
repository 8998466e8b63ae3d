"""Routing internals: source curves, their aggregate, and route results.

`app.domain.router` is the entry point; these modules are its parts.
"""
