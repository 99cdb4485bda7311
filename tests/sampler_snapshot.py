"""Counterfactuals of every sampler option on the tiny reference bridge, as saved before the
sampler was split into guidance, integrators and loop (tests/fixtures/sampler_snapshot.pt):
the refactor must keep them bit for bit. Regenerate only for an intended change of results:

    PYTHONPATH=. python tests/sampler_snapshot.py [--add]

Bits depend on the number of threads (reductions split differently), so the cases run on one
thread whatever the machine. The file was first written with two threads before the refactor;
the refactored code reproduced it bit for bit there, and was then re-recorded on one thread
(commit "sampler snapshot on one thread").

Bits also depend on the CPU: on another x86 CPU with the same torch the float32 cases differed
by up to 2.7e-6 and the bf16 case by 0.03 (a few elements; its mean difference was 7.6e-5), so
the test compares with a tolerance per dtype (:data:`TOLERANCES`), and a second test shows that
the tolerance still catches an option whose effect is removed (each case is farther from the
plain case than the tolerance).
"""

from pathlib import Path

import torch

CASES = {
    "plain": {},
    "unguided": {"guidance_scale": 0.0},
    "x0": {"guidance_grad": "x0"},
    "xt-x0": {"guidance_grad": "xt-x0", "guidance_switch": 0.75},
    "heun": {"sampler": "heun"},
    "heun-x0": {"sampler": "heun", "guidance_grad": "x0"},
    "interval3": {"guidance_interval": 3},
    "interval2-x0-sigma": {
        "guidance_interval": 2,
        "guidance_grad": "x0",
        "guidance_schedule": "sigma",
    },
    "sigma-rms": {"guidance_schedule": "sigma", "guidance_norm": "rms", "guidance_scale": 12.0},
    "smooth": {"guidance_smoothing": 1.0},
    "shifts-adam-image": {"guidance_shifts": 5, "guidance_adam": "image"},
    "bf16": {"precision": "bf16"},
    "checkpointing": {"gradient_checkpointing": True},
    "minmax": {"classifier_input": "minmax"},
    # added with the few-step integrators (recorded then; the cases above kept their bits)
    "i3sb-eta": {"sampler": "i3sb", "sampler_eta": 0.6},
    "dbim2": {"sampler": "dbim2"},
    "reference-nfe": {"guidance_reference_nfe": 30},
}
PATH = Path(__file__).parent / "fixtures" / "sampler_snapshot.pt"
#: (largest, mean) absolute difference allowed against the file: float32 cases, and the bf16
#: autocast case, whose rounding differs between CPUs with and without native bf16
TOLERANCES = {"fp32": (1e-4, 1e-5), "bf16": (0.1, 1e-3)}
#: cases whose result equals the plain case by design (no change of the computed values)
SAME_AS_PLAIN = ("checkpointing",)


def run_cases():
    from tests.conftest import TinyClassifier, tiny_bridge_from_fixture

    classifier, bridge = TinyClassifier().eval(), tiny_bridge_from_fixture()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(classifier, bridge)
    finally:
        torch.set_num_threads(before)


def _run(classifier, bridge):
    from rcsb_captum import RCSB, MaskRegion

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    m = torch.zeros(2, 1, 32, 32)
    m[..., 6:26, 4:20] = 1
    out = {}
    for name, options in CASES.items():
        rcsb = RCSB(
            classifier, bridge, MaskRegion(m), start_step=200, nfe=9, n_samples=1, **options
        )
        out[name] = rcsb.generate(x, counterfactual_target=torch.tensor([1, 3]), seed=0).samples
    return out


if __name__ == "__main__":
    # ``--add``: record only the cases the file does not hold yet, keeping the others' bits
    import sys

    now = run_cases()
    if "--add" in sys.argv and PATH.exists():
        saved = torch.load(PATH)
        now = {k: saved.get(k, v) for k, v in now.items()}
    torch.save(now, PATH)
    print(f"wrote {PATH}")
