from ._fido import BBMP, FIDO
from ._rcsb import RCSB, CounterfactualResult

__all__ = ["BBMP", "FIDO", "RCSB", "CounterfactualResult"]
