r"""The method classes tested the way Captum tests its own (``BaseTest``,
``assertTensorAlmostEqual``), with the forward_func wrappers Captum supports: ``DataParallel``
and TorchScript models. What an upstream pull request would carry."""

import unittest

import torch
from captum.testing.helpers.basic import BaseTest, assertTensorAlmostEqual
from torch import nn

from rcsb_captum import BBMP, FIDO, RCSB, MaskRegion
from rcsb_captum.infillers import BridgeInfiller, MeanInfiller, RandomColorNoiseInfiller

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

    def test_fido_and_bbmp_batch_equals_one_at_a_time(self) -> None:
        # Captum's generated invariant: a batch with a list or tensor of targets gives each
        # example's attribution alone; here with random in-fillers too (per-row generators)
        x = _images(3)
        targets = [0, 1, 0]
        methods = [
            FIDO(self.model, RandomColorNoiseInfiller(), mask_size=4, steps=4, n_samples=3),
            FIDO(self.model, BridgeInfiller(self.bridge, nfe=2), mask_size=4, steps=2, n_samples=2),
            FIDO(self.model, MeanInfiller(0.5), mask_size=4, steps=4, estimator="reinforce"),
            BBMP(self.model, RandomColorNoiseInfiller(), mask_size=4, steps=4),
        ]
        for method in methods:
            for target in (targets, torch.tensor(targets)):
                batch = method.attribute(x, target=target, seed=7)
                for i in range(3):
                    alone = method.attribute(
                        x[i : i + 1], target=targets[i], seed=7, index_offset=i
                    )
                    assertTensorAlmostEqual(self, batch[i : i + 1], alone, 1e-5, "max")
            # another offset is another draw (the seed is per image, not per call)
            other = method.attribute(x[:1], target=0, seed=7, index_offset=1)
            if not isinstance(method, BBMP):  # BBMP's mask is deterministic
                self.assertFalse(torch.equal(other, batch[:1]))

    def test_a_user_infiller_without_per_row_generators_gets_one_generator(self) -> None:
        seen: list[object] = []

        def fill(images, keep, generator):
            seen.append(generator)
            return torch.rand(images.shape, generator=generator)

        attr = FIDO(self.model, fill, mask_size=4, steps=2).attribute(self.x, target=0, seed=1)
        again = FIDO(self.model, fill, mask_size=4, steps=2).attribute(self.x, target=0, seed=1)
        self.assertTrue(all(isinstance(g, torch.Generator) for g in seen))
        assertTensorAlmostEqual(self, attr, again, delta=0.0, mode="max")

    @unittest.skipUnless(torch.cuda.device_count() > 0, "needs a GPU")
    def test_data_parallel_on_cuda_equals_the_plain_model(self) -> None:
        model = self.model.cuda()
        x, bridge = self.x.cuda(), self.bridge.cuda()
        for wrapped in (model, nn.DataParallel(model)):
            rcsb = RCSB(wrapped, bridge, MaskRegion(_box().cuda()), **FAST)
            got = rcsb.attribute(x, target=0, counterfactual_target=1, seed=0)
            fido = FIDO(wrapped, MeanInfiller(0.5), mask_size=4, steps=3)
            got_fido = fido.attribute(x, target=0, seed=0)
            if wrapped is model:
                ref, ref_fido = got, got_fido
        assertTensorAlmostEqual(self, got, ref, 1e-5, "max")
        assertTensorAlmostEqual(self, got_fido, ref_fido, 1e-5, "max")
