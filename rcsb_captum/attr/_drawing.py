r"""How RCSB draws, chooses and redraws counterfactuals: plain functions over one call's shared
state (:class:`Call`), so that :class:`~rcsb_captum.RCSB` stays a thin Captum facade.

- :func:`draw`: ``n_samples`` counterfactuals per input, classified, the best chosen;
- :func:`grow`: the adaptive region (``area_steps``): unstable inputs redrawn with larger
  regions of the same attribution ranking;
- :func:`escalate`: the inputs that did not flip redrawn with each ``escalation`` preset.

Every redraw of an input uses the generator of its global index, and a redraw replaces the
earlier result only when it ranks higher, so an input's result never depends on which other
inputs share its batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .._utils import SAMPLING_STREAM, check_logits, derive_seed, image_generator, per_input
from ..bridge.bridge import Bridge
from ..config import RCSBConfig
from ..guidance import ClassifierGuidance
from ..sampler import sample_rcsb
from ..stability import transform_stability


@dataclass(frozen=True)
class Call:
    r"""What every draw of one ``generate`` call shares."""

    forward_func: Callable[..., Tensor]
    bridge: Bridge
    extra: tuple  # formatted additional_forward_args (per-input tensors have N rows)
    seed: int
    batch: int | None  # internal_batch_size
    show_progress: bool
    target: Tensor  # N
    counterfactual: Tensor | None  # N, or None: any class but target
    offset: int  # global index of input 0

    @property
    def n(self) -> int:
        return int(self.target.shape[0])

    def cf(self, rows: Tensor) -> Tensor | None:
        return None if self.counterfactual is None else self.counterfactual[rows]

    def extra_of(self, rows: Tensor) -> tuple:
        return rows_of(self.extra, rows, self.n)


@dataclass
class Draws:
    r"""Samples (``N x S x C x H x W``), their class probabilities (``N x S x K``), the chosen
    sample's index (``N``) and each sample's success (``N x S``)."""

    samples: Tensor
    probs: Tensor
    best: Tensor
    ok: Tensor

    def chosen(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        r"""The chosen sample's probabilities and success for ``rows``."""
        return self.probs[rows, self.best[rows]], self.ok[rows, self.best[rows]]

    def take(self, rows: Tensor, new: Draws, pick: Tensor) -> Tensor:
        r"""Replace ``rows[pick]`` by ``new``'s entries ``pick``; returns ``rows[pick]``."""
        taken = rows[pick]
        self.samples[taken], self.probs[taken] = new.samples[pick], new.probs[pick]
        self.best[taken], self.ok[taken] = new.best[pick], new.ok[pick]
        return taken


def rows_of(extra: tuple, rows: Tensor, n: int) -> tuple:
    r"""The rows of per-input tensors among the extra forward arguments (others as they are)."""
    return per_input(extra, n, lambda a: a[rows.to(a.device)])


def repeat_rows(extra: tuple, s: int, n: int) -> tuple:
    r"""Per-input extra tensors repeated for the ``s`` samples of each input (sample-minor)."""
    return extra if s == 1 else per_input(extra, n, lambda a: a.repeat_interleave(s, 0))


def logits(
    forward_func: Callable[..., Tensor], x: Tensor, extra: tuple, batch: int | None = None
) -> Tensor:
    r"""The classifier's logits of ``x`` in chunks of ``batch`` (per-input extra tensors cut
    with the chunks), without a graph."""
    n = x.shape[0]
    step = batch or n
    out = []
    with torch.no_grad():
        for i in range(0, n, step):
            rows = torch.arange(i, min(i + step, n), device=x.device)
            out.append(
                check_logits(forward_func(x[i : i + step], *rows_of(extra, rows, n)), len(rows))
            )
    return torch.cat(out)


def score(probs: Tensor, ok: Tensor, target: Tensor, cf: Tensor | None) -> Tensor:
    r"""One number ordering candidates by (success, p(counterfactual) or 1 - p(target))."""
    p = (
        probs.gather(1, cf[:, None])[:, 0]
        if cf is not None
        else 1 - probs.gather(1, target[:, None])[:, 0]
    )
    return ok.float() * 2 + p


def select(
    probs: Tensor,
    target: Tensor,
    cf: Tensor | None,
    n: int,
    s: int,
    stability: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""The best of each input's ``s`` samples (``probs``: ``N S x K``, sample-minor):
    successful first, then the highest p(counterfactual) (or the lowest p(target)), or, with
    ``stability`` (``N S``), the most stable; returns the chosen index (``N``) and each
    sample's success (``N x S``)."""
    rep = lambda t: t.repeat_interleave(s, 0)  # noqa: E731
    tgt_r, cf_r = rep(target), None if cf is None else rep(cf)
    pred = probs.argmax(1)
    ok = pred == cf_r if cf_r is not None else pred != tgt_r
    key = score(probs, ok, tgt_r, cf_r) if stability is None else ok.float() * 2 + stability
    return key.view(n, s).argmax(1), ok.view(n, s)


def sample(call: Call, cfg: RCSBConfig, x: Tensor, masks: Tensor, rows: Tensor) -> Tensor:
    r"""``cfg.n_samples`` counterfactuals (``N x S x C x H x W``) of the inputs ``rows`` of the
    call (``x`` and ``masks`` are those rows'). Input ``i``'s generator, seeded by its global
    index, draws the noise of its samples one after the other, so a redraw of a subset repeats
    the first draw."""
    n, s = x.shape[0], cfg.n_samples
    gens = [
        image_generator(derive_seed(call.seed, call.offset + int(i), SAMPLING_STREAM), x.device)
        for i in rows
    ]
    per_sample = [g for g in gens for _ in range(s)]
    rep = lambda t: t.repeat_interleave(s, 0)  # noqa: E731
    x_r, m_r, t_r = rep(x), rep(masks), rep(call.target[rows])
    cf = call.cf(rows)
    cf_r = None if cf is None else rep(cf)
    extra_r = repeat_rows(call.extra_of(rows), s, n)  # one row per sample
    chunk = (call.batch or n) * s
    outs = []
    for i in range(0, n * s, chunk):
        sl = slice(i, i + chunk)
        chunk_rows = torch.arange(i, min(i + chunk, n * s), device=x.device)
        guidance = ClassifierGuidance.from_config(
            call.forward_func,
            cfg,
            target=t_r[sl],
            counterfactual_target=None if cf_r is None else cf_r[sl],
            additional_forward_args=rows_of(extra_r, chunk_rows, n * s),
        )
        outs.append(
            sample_rcsb(
                call.bridge,
                x_r[sl],
                m_r[sl],
                guidance,
                generator=per_sample[sl],
                show_progress=call.show_progress,
                **cfg.section("sampling"),
            )
        )
    return torch.cat(outs).view(n, s, *x.shape[1:])


def draw(
    call: Call, cfg: RCSBConfig, x: Tensor, masks: Tensor, rows: Tensor | None = None
) -> Draws:
    r"""Sample, classify and choose for the inputs ``rows`` (all when ``None``)."""
    if rows is None:
        rows = torch.arange(call.n, device=x.device)
    samples = sample(call, cfg, x, masks, rows)
    n, s = samples.shape[:2]
    flat_logits = logits(
        call.forward_func, samples.flatten(0, 1), repeat_rows(call.extra_of(rows), s, n), call.batch
    )
    probs = torch.softmax(flat_logits.float(), 1)
    target, cf = call.target[rows], call.cf(rows)
    stability = None
    if cfg.sample_selection == "stable" and s > 1:
        # the flipped sample whose new class best survives 1-px shifts and blurs: on the shipped
        # models it agrees with an independent robust judge more often than the most confident
        # one (docs: "Speed and realism", benchmarks/sample_selection.py)
        stability = transform_stability(
            call.forward_func,
            samples.flatten(0, 1),
            target.repeat_interleave(s, 0),
            None if cf is None else cf.repeat_interleave(s, 0),
            repeat_rows(call.extra_of(rows), s, n),
            call.batch,
        )
    best, ok = select(probs, target, cf, n, s, stability)
    return Draws(samples, probs.view(n, s, -1), best, ok)


def escalate(call: Call, cfg: RCSBConfig, x: Tensor, masks: Tensor, draws: Draws) -> Tensor:
    r"""Redraw the inputs whose chosen sample did not flip with each preset of
    ``cfg.escalation`` in turn (:meth:`RCSBConfig.stage`), same region; a stage's result
    replaces the earlier one when it ranks higher (:func:`score`). Updates ``draws`` in place;
    returns each input's stage (0: the call's own setting)."""
    everyone = torch.arange(call.n, device=x.device)
    stage = torch.zeros(call.n, dtype=torch.long, device=x.device)
    for k, name in enumerate(cfg.escalation, start=1):
        todo = (~draws.chosen(everyone)[1]).nonzero().flatten()
        if len(todo) == 0:
            break
        new = draw(call, cfg.stage(name), x[todo], masks[todo], todo)
        tgt, cf = call.target[todo], call.cf(todo)
        key_new = score(*new.chosen(torch.arange(len(todo), device=x.device)), tgt, cf)
        key_old = score(*draws.chosen(todo), tgt, cf)
        stage[draws.take(todo, new, (key_new > key_old).nonzero().flatten())] = k
    return stage


def _rank(stable: Tensor, success: Tensor, stability: Tensor) -> Tensor:
    # one number ordering candidates by (stable, success, stability)
    return stable.float() * 4 + success.float() * 2 + stability


def grow(
    call: Call,
    cfg: RCSBConfig,
    grown_masks: Callable[[Tensor, float], Tensor],
    x: Tensor,
    masks: Tensor,
    draws: Draws,
) -> Tensor:
    r"""The adaptive region (``cfg.area_steps``): inputs whose counterfactual is not stable
    (:func:`~rcsb_captum.stability.transform_stability` below ``cfg.stability``) are drawn
    again with the next area of the same ranking (``grown_masks(rows, area)``); a redraw
    replaces the earlier result when it ranks higher by (stable, success, stability), so the
    region kept is the smallest that gave it. Updates ``draws`` and ``masks`` in place; returns
    each input's stability."""

    def stability_of(candidates: Tensor, rows: Tensor) -> Tensor:
        return transform_stability(
            call.forward_func,
            candidates,
            call.target[rows],
            call.cf(rows),
            call.extra_of(rows),
            call.batch,
        )

    everyone = torch.arange(call.n, device=x.device)
    stability = stability_of(draws.samples[everyone, draws.best], everyone)
    for area in cfg.area_steps:
        todo = (stability < cfg.stability).nonzero().flatten()
        if len(todo) == 0:
            break
        grown = grown_masks(todo, area)
        new = draw(call, cfg, x[todo], grown, todo)
        rows = torch.arange(len(todo), device=x.device)
        st_new = stability_of(new.samples[rows, new.best], todo)
        key_new = _rank(st_new >= cfg.stability, new.ok[rows, new.best], st_new)
        old_ok = draws.chosen(todo)[1]
        key_old = _rank(stability[todo] >= cfg.stability, old_ok, stability[todo])
        pick = (key_new > key_old).nonzero().flatten()
        taken = draws.take(todo, new, pick)
        masks[taken], stability[taken] = grown[pick], st_new[pick]
    return stability
