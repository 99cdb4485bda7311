from ._fido import BBMP, FIDO
from ._gcd import BBLIG, GCD, PAPER_SETTINGS, CounterfactualDirections
from ._rcsb import RCSB, CounterfactualResult

__all__ = [
    "BBLIG",
    "BBMP",
    "FIDO",
    "GCD",
    "PAPER_SETTINGS",
    "RCSB",
    "CounterfactualDirections",
    "CounterfactualResult",
]
