from ._rcsb import RCSB, CounterfactualResult

__all__ = ["RCSB", "CounterfactualResult"]
