"""Where the RVC synthesizer's random numbers come from: one stream per batch item, or one shared.

Inference draws three kinds of noise: the latent sample (z_p = m + e^logs * N *
scale), the initial phases of the sine source's overtones, and the source's
additive noise. Redelivering a chunk must reproduce it byte for byte, and a
chunk batched with others must sound as it does alone, so every draw goes
through :class:`ItemDraws`:

* ``generator=None``: the global RNG of the module's device (what RVC does);
* one ``torch.Generator``: shared, consumed draw by draw and within each
  draw item after item (latents of items 0..B-1, then their source phases,
  then their source noise): deterministic for a given batch, but an item's
  noise depends on the items before it;
* a sequence of generators, one per item: item b draws only from its own, so
  its audio depends on its own inputs and seed and nothing else in the batch.

Each item draws exactly the numbers its valid length needs (nothing for the
padding), item by item, so an item drawn from generator G in a batch gets the
very numbers it gets alone from a fresh G. Draws are made on the generator's
own device in at least float32 and then moved to the model's device and
dtype: a CPU generator serves a CUDA model, and fp16 and fp32 runs see the
same noise.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

GeneratorArg = torch.Generator | Sequence[torch.Generator] | None
"""What ``infer(generator=...)`` takes: none, one shared, or one per batch item."""


def item_generators(seeds: Sequence[int], device: str | torch.device = "cpu") -> list[torch.Generator]:
    """One freshly seeded generator per item: the per-item form of ``generator``."""
    return [torch.Generator(device=device).manual_seed(int(seed)) for seed in seeds]


class ItemDraws:
    """Per-item random draws for one batch, from the streams ``generator`` names."""

    def __init__(self, generator: GeneratorArg, batch_size: int) -> None:
        if generator is None or isinstance(generator, torch.Generator):
            self._streams: list[torch.Generator | None] = [generator] * batch_size
        else:
            streams = list(generator)
            if len(streams) != batch_size:
                raise ValueError(f"got {len(streams)} generators for a batch of {batch_size}: pass one "
                                 "per item, a single shared one, or None")
            if not all(isinstance(s, torch.Generator) for s in streams):
                raise ValueError("generator must be a torch.Generator, a sequence of them, or None")
            self._streams = streams
        self.batch_size = batch_size

    def _draw(self, kind: str, item: int, shape: tuple[int, ...], like: Tensor) -> Tensor:
        stream = self._streams[item]
        device = stream.device if stream is not None else like.device
        dtype = torch.promote_types(like.dtype, torch.float32)
        sampler = torch.randn if kind == "normal" else torch.rand
        values = sampler(shape, generator=stream, device=device, dtype=dtype)
        return values.to(device=like.device, dtype=like.dtype)

    def normal(self, item: int, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """Standard normal draws for ``item``, on ``like``'s device and dtype."""
        return self._draw("normal", item, shape, like)

    def uniform(self, item: int, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """Uniform [0, 1) draws for ``item``, on ``like``'s device and dtype."""
        return self._draw("uniform", item, shape, like)

    def padded_normal(self, lengths: Sequence[int], like: Tensor, time_dim: int) -> Tensor:
        """Normals shaped like ``like`` (B, ...): item b fills the first ``lengths[b]`` steps of ``time_dim``.

        The rest (the padding) is zero, and item b's draw has the shape of its
        own item alone, so it is the same with and without padding.
        """
        out = torch.zeros_like(like)
        for item, length in enumerate(lengths):
            if length:
                own = out[item].narrow(time_dim - 1, 0, length)
                own.copy_(self.normal(item, tuple(own.shape), like))
        return out


__all__ = ["GeneratorArg", "ItemDraws", "item_generators"]
