"""A batch's training targets, flat: one tensor per field over every object of the batch, and per-image counts.

The loader produces targets this way and the loss consumes them this way (one scatter into a padded
``(B, G)`` layout), so a training step never splits a batch into per-image tensors and never concatenates them
back. Splitting them in the loader's main process and concatenating them again in the step cost about a
millisecond a batch of 32 on this CPU, and at batch 256 on a GPU it was some 1,800 small host-to-device
copies a step. Indexing still gives torchvision's per-image dict (``targets[i]``, views into the flat
tensors), for the evaluator, tests and anyone used to ``list[dict]``.

The fields are the training-target contract in ``crosswalk.data.schema``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor


class BatchTargets(Sequence):
    """``fields[k]`` holds field ``k`` of all objects, image by image; ``counts[i]`` objects belong to image i.

    >>> t = BatchTargets({"boxes": torch.zeros(3, 4), "labels": torch.tensor([0, 1, 0])}, [2, 0, 1])
    >>> len(t), t[2]["labels"].tolist(), t.owner.tolist()
    (3, [0], [0, 0, 2])
    """

    def __init__(self, fields: dict[str, Tensor], counts: Tensor | Sequence[int]):
        self.fields = fields
        self.counts = torch.as_tensor(counts, dtype=torch.long).cpu()
        total = int(self.counts.sum())
        for k, v in fields.items():
            if len(v) != total:
                raise ValueError(f"targets field {k!r} has {len(v)} rows, the counts add up to {total}")
        self._starts: list[int] | None = None

    @classmethod
    def from_list(cls, targets: Iterable[dict[str, Tensor]]) -> BatchTargets:
        """Per-image dicts (torchvision's convention) as one flat batch. An image without a field that others
        have (hand-made targets without ``ignore``) gets zeros for it."""
        targets = list(targets)
        counts = [len(t["boxes"]) for t in targets]
        like: dict[str, Tensor] = {}  # per field, a non-empty example: its row shape, dtype and device
        for t in targets:
            for k, v in t.items():
                if k not in like or not like[k].numel():
                    like[k] = torch.as_tensor(v)
        fields = {}
        for k, ref in like.items():
            row, kind = ref.shape[1:], {"dtype": ref.dtype, "device": ref.device}
            parts = [
                torch.as_tensor(t[k]).reshape(n, *row) if k in t else torch.zeros((n, *row), **kind)
                for t, n in zip(targets, counts, strict=True)
            ]
            fields[k] = torch.cat(parts)
        return cls(fields, counts)

    def __len__(self) -> int:
        return len(self.counts)

    @property
    def starts(self) -> list[int]:
        """Where each image's objects begin in the flat fields, and the end: ``len(self) + 1`` offsets."""
        if self._starts is None:
            self._starts = [0, *torch.cumsum(self.counts, 0).tolist()]
        return self._starts

    @property
    def owner(self) -> Tensor:
        """The image each object belongs to, ``(M,)`` on the CPU."""
        return torch.repeat_interleave(torch.arange(len(self)), self.counts)

    def __getitem__(self, i):
        if isinstance(i, slice):
            first, stop, step = i.indices(len(self))
            if step != 1:
                return BatchTargets.from_list(self[k] for k in range(first, stop, step))
            stop = max(stop, first)
            lo, hi = self.starts[first], self.starts[stop]
            return BatchTargets({k: v[lo:hi] for k, v in self.fields.items()}, self.counts[first:stop])
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"image {i} of a batch of {n}")
        i %= n
        lo, hi = self.starts[i], self.starts[i + 1]
        return {k: v[lo:hi] for k, v in self.fields.items()}

    def __add__(self, other: BatchTargets) -> BatchTargets:
        if not isinstance(other, BatchTargets):
            return NotImplemented
        if set(self.fields) != set(other.fields):
            raise ValueError(
                f"cannot join targets with fields {sorted(self.fields)} and {sorted(other.fields)}"
            )
        fields = {k: torch.cat([v, other.fields[k].to(v.device)]) for k, v in self.fields.items()}
        return BatchTargets(fields, torch.cat([self.counts, other.counts]))

    def to(self, device: torch.device | str, non_blocking: bool = True) -> BatchTargets:
        """The fields on ``device`` (one copy each); the counts stay on the CPU, where indexing reads them."""
        fields = {k: v.to(device, non_blocking=non_blocking) for k, v in self.fields.items()}
        return BatchTargets(fields, self.counts)

    def __repr__(self) -> str:
        return (
            f"BatchTargets({len(self)} images, {int(self.counts.sum())} objects, fields={list(self.fields)})"
        )


def as_batch_targets(targets: BatchTargets | Iterable[dict[str, Tensor]]) -> BatchTargets:
    return targets if isinstance(targets, BatchTargets) else BatchTargets.from_list(targets)
