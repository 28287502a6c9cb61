"""The composition root: the app factory and its init plugin, the `rappit` CLI, the model registry.

The only package (with workers/) that imports every domain; nothing imports it.
"""
