import torch

from tests.sampler_snapshot import CASES, PATH, SAME_AS_PLAIN, TOLERANCES, run_cases


def _kind(name):
    return "bf16" if CASES[name].get("precision") == "bf16" else "fp32"


def test_every_option_gives_the_saved_counterfactuals():
    saved = torch.load(PATH)
    now = run_cases()
    assert set(saved) == set(CASES)
    for name in CASES:
        top, mean = TOLERANCES[_kind(name)]
        d = (now[name] - saved[name]).abs()
        assert float(d.max()) <= top and float(d.mean()) <= mean, (name, float(d.max()))


def test_the_tolerance_catches_an_option_whose_effect_is_removed():
    # an option that stopped acting would give the plain case's counterfactuals: every case
    # is farther from them than its tolerance (by mean, the stricter of the two bounds)
    # (not the bf16 case: its difference from float32, 8.6e-5 mean, is below the rounding
    # difference between CPUs; bf16 autocast itself is tested in tests/attr/test_rcsb.py)
    saved = torch.load(PATH)
    for name in CASES:
        if name == "plain" or name in SAME_AS_PLAIN or _kind(name) == "bf16":
            continue
        top, mean = TOLERANCES[_kind(name)]
        d = (saved[name] - saved["plain"]).abs()
        assert float(d.max()) > top or float(d.mean()) > mean, name
