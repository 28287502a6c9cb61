"""Rappit: multi-tenant fulfillment integration platform."""

__version__ = "0.1.0"
