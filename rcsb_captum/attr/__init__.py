from ._fido import BBMP, FIDO
from ._gcd import BBLIG, GCD, CounterfactualDirections
from ._rcsb import RCSB, CounterfactualResult

__all__ = [
    "BBLIG",
    "BBMP",
    "FIDO",
    "GCD",
    "RCSB",
    "CounterfactualDirections",
    "CounterfactualResult",
]
