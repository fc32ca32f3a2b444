"""Operators over the unit cube and the registry scenarios choose them from by name."""

from __future__ import annotations

from evo_engine.search.operators.base import Operator, OperatorSettings, Proposal, reflect
from evo_engine.search.operators.designs import DESIGNS
from evo_engine.search.operators.es import ES
from evo_engine.search.operators.ga import GA
from evo_engine.search.operators.random_search import RandomSearch
from evo_engine.search.operators.surrogate import Surrogate

OPERATORS: dict[str, type[Operator]] = {op.name: op for op in (RandomSearch, GA, ES, Surrogate)}

__all__ = [
    "DESIGNS",
    "ES",
    "GA",
    "OPERATORS",
    "Operator",
    "OperatorSettings",
    "Proposal",
    "RandomSearch",
    "Surrogate",
    "reflect",
]
