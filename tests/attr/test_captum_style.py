r"""The method classes tested the way Captum tests its own (``BaseTest``,
``assertTensorAlmostEqual``), with the forward_func wrappers Captum supports: ``DataParallel``
and TorchScript models. What an upstream pull request would carry."""

import torch
from captum.testing.helpers.basic import BaseTest, assertTensorAlmostEqual
from torch import nn

from rcsb_captum import BBMP, FIDO, RCSB, MaskRegion
from rcsb_captum.infillers import MeanInfiller

from ..conftest import TinyClassifier, tiny_bridge_from_fixture

FAST = dict(start_step=60, nfe=3, n_samples=1)


def _images(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def _box(n: int = 2) -> torch.Tensor:
    m = torch.zeros(n, 1, 32, 32)
    m[..., 8:24, 8:24] = 1
    return m


class Test(BaseTest):
    def setUp(self) -> None:
        super().setUp()
        self.model = TinyClassifier().eval()
        self.bridge = tiny_bridge_from_fixture()
        self.x = _images()

    def _rcsb(self, forward_func: nn.Module) -> torch.Tensor:
        rcsb = RCSB(forward_func, self.bridge, MaskRegion(_box()), **FAST)
        return rcsb.attribute(self.x, target=0, counterfactual_target=1, seed=0)

    def test_rcsb_attribution_is_zero_outside_and_repeats(self) -> None:
        attr = self._rcsb(self.model)
        self.assertEqual(attr.shape, self.x.shape)
        assertTensorAlmostEqual(self, attr * (1 - _box()), torch.zeros_like(attr), delta=0.0)
        assertTensorAlmostEqual(self, self._rcsb(self.model), attr, delta=0.0, mode="max")
        self.assertFalse(RCSB(self.model, self.bridge).has_convergence_delta())

    def test_rcsb_data_parallel_model(self) -> None:
        assertTensorAlmostEqual(
            self, self._rcsb(nn.DataParallel(self.model)), self._rcsb(self.model), 1e-6, "max"
        )

    def test_rcsb_torchscript_model(self) -> None:
        scripted = torch.jit.script(self.model)
        assertTensorAlmostEqual(self, self._rcsb(scripted), self._rcsb(self.model), 1e-5, "max")
        traced = torch.jit.trace(self.model, self.x)
        assertTensorAlmostEqual(self, self._rcsb(traced), self._rcsb(self.model), 1e-5, "max")

    def test_fido_and_bbmp_wrapped_models(self) -> None:
        for method in (FIDO, BBMP):
            ref = method(self.model, MeanInfiller(0.5), mask_size=4, steps=3)
            expected = ref.attribute(self.x, target=0, seed=0)
            for wrapped in (nn.DataParallel(self.model), torch.jit.script(self.model)):
                attr = method(wrapped, MeanInfiller(0.5), mask_size=4, steps=3).attribute(
                    self.x, target=0, seed=0
                )
                assertTensorAlmostEqual(self, attr, expected, delta=1e-5, mode="max")
