"""The composition root: the `parley` CLI, the services' wiring and the demo.

The only package that may import every layer (docs/architecture.md); nothing imports it.
"""
