"""Feature retrieval: pull content features toward the voice's training features (RVC's ``.index``).

An RVC voice often comes with a faiss index of the content features of its
training set (``added_IVF*_Flat_*.index``, the file its training writes). At
conversion each 50 Hz feature frame is replaced, by ``index_rate``, with the
inverse-square-distance weighted mean of its 8 nearest training frames: the
features then carry more of the target speaker's articulation (and less of the
source's accent and timbre that HuBERT lets through).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

#: Neighbours averaged per frame (RVC's ``k``).
NEIGHBOURS = 8
#: Squared distances are floored here so a frame that is in the index (distance 0)
#: takes that frame rather than dividing by zero.
MIN_DISTANCE = 1e-12


@dataclass(frozen=True)
class FeatureIndex:
    """A voice's training features: the faiss index to search and the vectors it holds."""

    index: object
    vectors: NDArray[np.float32]
    path: Path | None = None

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @classmethod
    def read(cls, path: str | Path) -> FeatureIndex:
        """Read a faiss index file (as RVC's training writes it) and reconstruct its vectors."""
        import faiss  # imported here: only voices with an index need it

        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"no feature index at {file}")
        try:
            index = faiss.read_index(str(file))
        except RuntimeError as exc:
            raise ValueError(f"{file} is not a faiss index RVC can read: {exc}") from exc
        if index.ntotal == 0:
            raise ValueError(f"{file} holds no features: retrain the index, or delete it to convert without one")
        vectors = np.ascontiguousarray(index.reconstruct_n(0, index.ntotal), dtype=np.float32)
        return cls(index, vectors, file)

    @classmethod
    def from_vectors(cls, vectors: NDArray[np.floating]) -> FeatureIndex:
        """An exact (flat L2) index over ``vectors`` (rows): what a test or a small voice needs."""
        import faiss

        data = np.ascontiguousarray(vectors, dtype=np.float32)
        if data.ndim != 2 or not len(data):
            raise ValueError(f"vectors must be a non-empty (N, D) array, got shape {data.shape}")
        index = faiss.IndexFlatL2(data.shape[1])
        index.add(data)
        return cls(index, data)

    def retrieve(self, features: NDArray[np.floating]) -> NDArray[np.float32]:
        """Each row of ``features`` (F, D) replaced by the weighted mean of its nearest training rows.

        Weights are ``1 / distance^2`` (faiss reports squared L2 distances, so
        this is RVC's ``square(1 / score)``), normalised per frame.
        """
        query = np.ascontiguousarray(features, dtype=np.float32)
        if query.ndim != 2 or query.shape[1] != self.dim:
            raise ValueError(f"the feature index {self.path or ''} holds {self.dim}-d features, but this voice's "
                             f"content features are {query.shape[-1]}-d: the index belongs to another RVC version; "
                             "use the voice's own .index")
        if not len(query):
            return query
        k = min(NEIGHBOURS, len(self.vectors))
        distances, rows = self.index.search(query, k)  # type: ignore[attr-defined]
        weights = np.square(1.0 / np.maximum(distances.astype(np.float64), MIN_DISTANCE))
        weights /= weights.sum(axis=1, keepdims=True)
        return np.einsum("fk,fkd->fd", weights, self.vectors[rows].astype(np.float64)).astype(np.float32)

    def blend(self, features: NDArray[np.floating], rate: float) -> NDArray[np.float32]:
        """``rate`` of the retrieved features plus ``1 - rate`` of the originals (0 leaves them)."""
        original = np.asarray(features, dtype=np.float32)
        if rate <= 0:
            return original
        return (rate * self.retrieve(original) + (1.0 - rate) * original).astype(np.float32)


__all__ = ["FeatureIndex", "NEIGHBOURS"]
