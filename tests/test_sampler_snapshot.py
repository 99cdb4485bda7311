import torch

from tests.sampler_snapshot import CASES, PATH, run_cases


def test_every_option_gives_the_saved_counterfactuals_bit_for_bit():
    saved = torch.load(PATH)
    now = run_cases()
    assert set(saved) == set(CASES)
    for name in CASES:
        assert torch.equal(now[name], saved[name]), name
