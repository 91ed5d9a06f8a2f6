"""Ranking features: one code path for training rows and serving requests.

A feature is computed for users and their candidate items from the users' engaged
items and arrays fitted offline. It works on a batch of users at once — training
computes thousands of groups in one call, serving one user per request — so both use
the very same code, and a served score equals the offline score by construction.
Items are release indices; a user's history is the set of items they engaged with
(positive events).
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from cascade_server.artifacts.arrays import load_mapped, load_npz_mapped
from cascade_server.features.engagement import Csr, FloatArray, IntArray

FloatMatrix = npt.NDArray[np.float64]
ItemRows = npt.NDArray[np.float32] | npt.NDArray[np.float64]
"""Per-item vectors as trained: float32 (float64 in releases made before they were
kept so); features read them into float64 exactly, so either gives the same values."""
FloatCube = npt.NDArray[np.float64]
"""[users, candidates, columns]."""
IntMatrix = npt.NDArray[np.int64]
"""[users, candidates] release item indices."""
_NO_ITEMS = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class Users:
    """A batch of users: each one's engaged items (distinct, sorted) as the rows of a
    ``Csr``, and their two-tower query embeddings when a feature needs them."""

    histories: Csr
    """Row ``u``: user ``u``'s items (release indices), each once, in index order."""
    queries: FloatMatrix | None = None
    """[n_users, dim] query-tower embeddings (``features.query_tower``)."""

    @classmethod
    def of(
        cls, histories: Sequence[IntArray], n_items: int, queries: FloatMatrix | None = None
    ) -> Users:
        """The batch for these users' item lists (release indices below ``n_items``)."""
        lengths = np.array([len(h) for h in histories], dtype=np.int64)
        items = np.concatenate(histories).astype(np.int64) if histories else _NO_ITEMS
        if len(items) and (int(items.min()) < 0 or int(items.max()) >= n_items):
            raise ValueError(f"history items must be release indices below {n_items}")
        # (user, item) pairs as one key each: np.unique sorts them and drops repeats.
        owner = np.repeat(np.arange(len(histories), dtype=np.int64), lengths)
        owner, items = np.divmod(np.unique(owner * n_items + items), max(n_items, 1))
        indptr = np.zeros(len(histories) + 1, dtype=np.int64)
        np.cumsum(np.bincount(owner, minlength=len(histories)), out=indptr[1:])
        return cls(Csr(indptr, items, np.ones(len(items))), queries)

    @property
    def count(self) -> int:
        """How many users the batch holds."""
        return self.histories.n_rows

    def lengths(self) -> IntArray:
        """How many distinct items each user has."""
        return np.diff(self.histories.indptr)

    def history(self, row: int) -> IntArray:
        """One user's items."""
        return self.histories.row(row)[0]


class Feature(Protocol):
    """A named group of feature columns."""

    kind: ClassVar[str]

    @property
    def name(self) -> str:
        """The feature's name (the prefix of its columns)."""
        ...

    @property
    def columns(self) -> list[str]:
        """The names of the columns this feature produces."""
        ...

    def compute(self, users: Users, candidates: IntMatrix) -> FloatCube:
        """[n_users, n_candidates, len(columns)] values for each user's candidates."""
        ...

    def arrays(self) -> dict[str, npt.NDArray[np.generic]]:
        """The fitted arrays to store in a release."""
        ...


@dataclass(frozen=True)
class NeighbourFeature:
    """Σ over the user's items of an item-to-item weight (item-kNN, EASE, RP3β...)."""

    kind: ClassVar[str] = "neighbours"
    name: str
    weights: Csr
    """Row ``j``: the items ``i`` with weight ``w[j, i]``."""

    @property
    def columns(self) -> list[str]:
        return [self.name]

    def compute(self, users: Users, candidates: IntMatrix) -> FloatCube:
        # Per user, the history's rows summed and read at the candidates only: a sparse
        # product would make a row the size of the catalog, and scipy's per-call
        # overhead is most of a request's cost.
        scores = np.zeros(candidates.shape)
        for r in range(len(candidates)):
            scores[r] = self.weights.sum_rows_at(users.history(r), candidates[r])
        return scores[..., None]

    def arrays(self) -> dict[str, npt.NDArray[np.generic]]:
        return {
            "indptr": self.weights.indptr,
            "indices": self.weights.indices,
            "data": self.weights.data,
        }


@dataclass(frozen=True)
class FactorFeature:
    """Dot product of item factors with the user's vector, folded in from the user's items.

    For iALS (Rendle et al., 2022) with unobserved weight ``alpha0`` and regularisation
    ``lam * (|items| + alpha0 * n_items) ** nu``, the user vector given the item
    factors ``V`` solves ``(alpha0 VᵀV + Σ v_j v_jᵀ + reg I) u = Σ v_j`` over the user's
    items ``j`` — one small solve per request, so users who engaged after training
    are scored from their current items, exactly as training's user step would.
    """

    kind: ClassVar[str] = "factors"
    name: str
    item_factors: ItemRows
    gram: FloatMatrix
    """``alpha0 * VᵀV``."""
    lam: float
    nu: float
    offset: float
    """``alpha0 * n_items``."""

    @property
    def columns(self) -> list[str]:
        return [self.name]

    def user_vector(self, history: IntArray) -> FloatArray:
        """The folded-in user vector (zeros for an empty history)."""
        if len(history) == 0:
            return np.zeros(self.item_factors.shape[1])
        v = self.item_factors[history].astype(np.float64)
        reg = self.lam * (len(history) + self.offset) ** self.nu
        system = self.gram + v.T @ v + reg * np.eye(v.shape[1])
        solved: FloatArray = np.linalg.solve(system, v.sum(axis=0))
        return solved

    def compute(self, users: Users, candidates: IntMatrix) -> FloatCube:
        n = users.count
        vectors = np.stack([self.user_vector(users.history(r)) for r in range(n)])
        # Multiply then sum over k: each row's arithmetic is the same whatever the batch
        # size, so a request's scores equal the training batch's bit for bit. (float32
        # factors widen exactly in the product.)
        scores: FloatCube = (self.item_factors[candidates] * vectors[:, None, :]).sum(axis=2)
        return scores[..., None]

    def arrays(self) -> dict[str, npt.NDArray[np.generic]]:
        return {
            "item_factors": self.item_factors,
            "gram": self.gram,
            "params": np.array([self.lam, self.nu, self.offset]),
        }


@dataclass(frozen=True)
class TwoTowerFeature:
    """Dot product of the user's query-tower embedding with the candidate's item embedding.

    The queries come with the users (``Users.queries``): the caller runs the query tower
    on the user's recent items, so the score follows the user's current history.
    """

    kind: ClassVar[str] = "two_tower"
    name: str
    item_embeddings: ItemRows
    """[n_items, dim] candidate-tower embeddings."""

    @property
    def columns(self) -> list[str]:
        return [self.name]

    def compute(self, users: Users, candidates: IntMatrix) -> FloatCube:
        if users.queries is None:
            raise ValueError(f"feature {self.name!r} needs the users' query-tower embeddings")
        queries = users.queries.astype(np.float64)
        # Multiply then sum, as FactorFeature does: the same bits whatever the batch.
        scores: FloatCube = (self.item_embeddings[candidates] * queries[:, None, :]).sum(axis=2)
        return scores[..., None]

    def arrays(self) -> dict[str, npt.NDArray[np.generic]]:
        return {"item_embeddings": self.item_embeddings}


@dataclass(frozen=True)
class ItemValueFeature:
    """Per-item values fitted offline (popularity, age, catalog attributes)."""

    kind: ClassVar[str] = "item_values"
    name: str
    values: FloatMatrix
    """[n_items, n_columns]."""
    names: tuple[str, ...]

    @property
    def columns(self) -> list[str]:
        return [f"{self.name}.{column}" for column in self.names]

    def compute(self, users: Users, candidates: IntMatrix) -> FloatCube:
        values: FloatCube = self.values[candidates]
        return values

    def arrays(self) -> dict[str, npt.NDArray[np.generic]]:
        return {"values": self.values, "names": np.array(self.names)}


@dataclass(frozen=True)
class CategoryAffinityFeature:
    """How much of the user's history falls in each candidate's categories."""

    kind: ClassVar[str] = "category_affinity"
    name: str
    item_categories: npt.NDArray[np.int64]
    """[n_items, max categories] category ids (0 = none)."""

    @property
    def columns(self) -> list[str]:
        return [f"{self.name}.max", f"{self.name}.mean"]

    @functools.cached_property
    def _n_categories(self) -> int:
        return int(self.item_categories.max(initial=0)) + 1

    def compute(self, users: Users, candidates: IntMatrix) -> FloatCube:
        # Per user, how many of their items fall in each category: one bincount over
        # (user, category) pairs (no per-call sparse product).
        n_users, n_categories = users.count, self._n_categories
        lengths = users.lengths()
        owner = np.repeat(np.arange(n_users, dtype=np.int64), lengths)
        categories = self.item_categories[users.histories.indices]
        pairs = (owner[:, None] * n_categories + categories)[categories > 0]
        counts = np.bincount(pairs, minlength=n_users * n_categories)
        shares = counts.reshape(n_users, n_categories) / np.maximum(lengths, 1)[:, None]
        ids = self.item_categories[candidates]
        mask = ids > 0
        values = np.where(mask, np.take_along_axis(shares[:, None, :], ids, axis=2), 0.0)
        mean = values.sum(axis=2) / np.maximum(mask.sum(axis=2), 1)
        return np.stack([values.max(axis=2), mean], axis=2)

    def arrays(self) -> dict[str, npt.NDArray[np.generic]]:
        return {"item_categories": self.item_categories}


@dataclass(frozen=True)
class UserActivityFeature:
    """How many items the user engaged with (log scale)."""

    kind: ClassVar[str] = "user_activity"
    name: str

    @property
    def columns(self) -> list[str]:
        return [self.name]

    def compute(self, users: Users, candidates: IntMatrix) -> FloatCube:
        lengths = users.lengths()
        return np.broadcast_to(np.log1p(lengths)[:, None, None], (*candidates.shape, 1)).copy()

    def arrays(self) -> dict[str, npt.NDArray[np.generic]]:
        return {}


@dataclass(frozen=True)
class FeatureSet:
    """The ordered features a ranker was trained on."""

    features: Sequence[Feature]

    @property
    def needs_queries(self) -> bool:
        """Whether computing needs the users' query-tower embeddings."""
        return any(isinstance(f, TwoTowerFeature) for f in self.features)

    @property
    def columns(self) -> list[str]:
        """Every column name, in matrix order."""
        return [column for feature in self.features for column in feature.columns]

    def compute(self, users: Users, candidates: IntMatrix) -> FloatCube:
        """[n_users, n_candidates, len(columns)] feature values."""
        if not self.features:
            return np.zeros((*candidates.shape, 0))
        return np.concatenate([f.compute(users, candidates) for f in self.features], axis=2)

    def save(self, path: Path) -> None:
        """Store every feature's arrays in the directory ``path``, one ``.npy`` file each
        (so a server maps them into memory instead of reading gigabytes at start). What
        the directory held before is removed."""
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        for key, value in self._arrays().items():
            np.save(path / f"{key}.npy", value)

    def _arrays(self) -> dict[str, npt.NDArray[np.generic]]:
        arrays: dict[str, npt.NDArray[np.generic]] = {}
        for position, feature in enumerate(self.features):
            prefix = f"{position:02d}.{feature.kind}.{feature.name}"
            arrays[f"{prefix}.__marker"] = np.zeros(0)
            for key, value in feature.arrays().items():
                arrays[f"{prefix}.{key}"] = value
        return arrays

    @classmethod
    def load(cls, path: Path) -> FeatureSet:
        """The features stored by ``save`` (mapped into memory, read-only), or in the one
        ``.npz`` file releases before the directory form hold."""
        if path.is_dir():
            arrays = {
                file.name.removesuffix(".npy"): load_mapped(file)
                for file in sorted(path.glob("*.npy"))
            }
            for array in arrays.values():
                _touch(array)
            return cls._of(arrays)
        return cls._of(load_npz_mapped(path))

    @classmethod
    def _of(cls, arrays: Mapping[str, npt.NDArray[np.generic]]) -> FeatureSet:
        grouped: dict[tuple[str, str, str], dict[str, npt.NDArray[np.generic]]] = {}
        for key, value in arrays.items():
            position, kind, name, field = key.split(".", 3)
            group = grouped.setdefault((position, kind, name), {})
            if field != "__marker":
                group[field] = value
        return cls([_restore(kind, name, a) for (_, kind, name), a in sorted(grouped.items())])


def item_rows(array: npt.NDArray[np.generic]) -> ItemRows:
    """``array`` as per-item vectors: float32 and float64 as they are (a mapped file
    stays mapped), anything else as float64."""
    if array.dtype == np.float32:
        return array.view(np.float32)
    return array.astype(np.float64, copy=False)


def _touch(array: npt.NDArray[np.generic]) -> None:
    """Read one byte of every page of a mapped array, so requests do not wait for the
    pages to be mapped (about 40 ms for 1.5 GB already in the page cache, as the
    release check leaves them)."""
    if array.size:
        array.ravel(order="K").view(np.uint8)[::4096].sum()


def _restore(kind: str, name: str, a: Mapping[str, npt.NDArray[np.generic]]) -> Feature:
    # copy=False: a million-item release holds gigabytes; stored dtypes already match.
    if kind == NeighbourFeature.kind:
        return NeighbourFeature(
            name,
            Csr(
                a["indptr"].astype(np.int64, copy=False),
                a["indices"].astype(np.int64, copy=False),
                a["data"].astype(np.float64, copy=False),
            ),
        )
    if kind == FactorFeature.kind:
        lam, nu, offset = (float(v) for v in a["params"])
        return FactorFeature(
            name,
            item_rows(a["item_factors"]),
            a["gram"].astype(np.float64, copy=False),
            lam,
            nu,
            offset,
        )
    if kind == TwoTowerFeature.kind:
        return TwoTowerFeature(name, item_rows(a["item_embeddings"]))
    if kind == ItemValueFeature.kind:
        return ItemValueFeature(
            name, a["values"].astype(np.float64, copy=False), tuple(str(n) for n in a["names"])
        )
    if kind == CategoryAffinityFeature.kind:
        return CategoryAffinityFeature(name, a["item_categories"].astype(np.int64, copy=False))
    if kind == UserActivityFeature.kind:
        return UserActivityFeature(name)
    raise ValueError(f"unknown feature kind {kind!r}")
