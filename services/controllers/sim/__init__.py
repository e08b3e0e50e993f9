"""The `sim` controller (name "Internal", alias "sim"): simulates instances of
any component type with a persistent instance table; run it with
`python -m controllers.sim`."""

from controllers.sim.controller import SimController

NAME = "Internal"
VERSION = "V1.0.0"
ALIASES = ("sim",)

__all__ = ["ALIASES", "NAME", "VERSION", "SimController"]
