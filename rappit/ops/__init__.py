"""Operator tools that read across domains: `verify` (do the stored facts still agree?)."""
