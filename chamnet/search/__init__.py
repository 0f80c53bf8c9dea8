"""Search: a GP accuracy predictor in a Bayesian-optimisation loop (see :mod:`.engine`), its
samplers, oracles and resumable runs (the baselines it is benchmarked against live in bench/baselines.py).

    from chamlab.chamnet.search import EngineConfig, Problem, oracle_for, search
    from chamlab.chamnet.spaces.table import TableSpace
    space = TableSpace.read(Path("bench.csv"))
    result = search(table_problem(space, {"latency_ms": 5.0}), budget=50, out=Path("run"))
"""

from .constrained import (
    GAConfig,
    Margin,
    constrained_search,
    safety_margin,
)
from .engine import BayesOptEngine, EngineConfig, EngineState, Query
from .problem import NoOracleError, Oracle, Problem, TableOracle, oracle_for, table_problem
from .run import DEFAULT_BUDGET, HISTORY_KIND, SearchResult, search

__all__ = [
    "DEFAULT_BUDGET",
    "HISTORY_KIND",
    "BayesOptEngine",
    "EngineConfig",
    "EngineState",
    "GAConfig",
    "Margin",
    "NoOracleError",
    "Oracle",
    "Problem",
    "Query",
    "SearchResult",
    "TableOracle",
    "constrained_search",
    "oracle_for",
    "safety_margin",
    "search",
    "table_problem",
]
