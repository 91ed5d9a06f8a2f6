"""Blending policies as data: one versioned file with a policy per surface and the experiments.

The file is YAML or JSON (JSON is YAML). It is validated in full when loaded; every
problem is reported with its place in the file. A release carries its policy file
(``policy.yaml``), so a policy changes with a release and servers swap it in without
a restart. ``cascade policy check FILE`` validates a file, ``cascade policy publish
FILE`` makes a new release from the active one with the new file.

    version: "2026-11-26.1"
    surfaces:
      home_feed:
        max_items_per_creator: 2
        diversity_lambda: 0.9
        fresh_share: 0.1
    experiments:
      - name: diversity
        variants:
          - {name: control, weight: 50}
          - {name: more_diverse, weight: 50, surfaces: {home_feed: {diversity_lambda: 0.7}}}
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cascade_server.errors import CascadeError
from cascade_server.pipeline.types import SourceKind, Surface

POLICY_FILE = "policy.yaml"
"""The policy file's name inside a release."""

_NAME = r"^[a-z][a-z0-9_]{0,63}$"
_BUCKETS = 10_000
M = TypeVar("M", bound="BaseModel")


class PolicyError(CascadeError):
    """A policy file, or a request's policy overrides, break the policy's rules."""

    status = "INVALID_ARGUMENT"
    reason = "INVALID_POLICY"

    def __init__(self, message: str, problems: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)
        """``(place, problem)`` pairs; a place is a dotted path such as ``surfaces.home_feed``."""


DedupKey = Literal["item_id", "title"]


class SurfacePolicy(BaseModel):
    """How blending builds a page for one surface."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dedup_keys: tuple[DedupKey, ...] = Field(
        default=("item_id",),
        description="Item fields that must be unique on a page: item_id, title.",
    )
    max_items_per_creator: int = Field(
        default=2, ge=1, le=100, description="The most items of one creator on a page."
    )
    category_spacing: int = Field(
        default=0,
        ge=0,
        le=50,
        description=(
            "The fewest positions between two items of the same primary (first) category; "
            "0 turns it off. Relaxed only when no other candidate fits."
        ),
    )
    diversity_lambda: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description=(
            "MMR trade-off on item embeddings: each slot takes the candidate with the best "
            "lambda * relevance - (1 - lambda) * similarity to the items already placed. "
            "1 is relevance alone."
        ),
    )
    fresh_share: float = Field(
        default=0.0, ge=0.0, le=0.5, description="Share of the page reserved for fresh items."
    )
    exploration_share: float = Field(
        default=0.0,
        ge=0.0,
        le=0.5,
        description="Share of the page given to random candidates ranked below the page.",
    )
    exploration_depth: int = Field(
        default=200,
        ge=1,
        le=2000,
        description="Exploration draws from candidates ranked below the page, up to this rank.",
    )
    head_weights: Mapping[str, float] = Field(
        default_factory=dict,
        description=(
            "Weights combining the heavy ranker's heads into the score that orders the "
            "heavy-scored candidates; empty keeps the ranking score."
        ),
    )
    category_boosts: Mapping[str, float] = Field(
        default_factory=dict,
        description="Added to the relevance (in [0, 1]) of items in a category, -1 to 1.",
    )
    exclude_categories: frozenset[str] = Field(
        default=frozenset(), description="Categories whose items never appear."
    )
    seed: int = Field(
        default=0, ge=0, description="Seed of the reserved slots' randomness, for reproducibility."
    )

    @field_validator("dedup_keys")
    @classmethod
    def _item_id_first(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(keys)) != len(keys):
            raise ValueError("a dedup key is listed twice")
        return ("item_id", *(k for k in keys if k != "item_id"))

    @field_validator("category_boosts")
    @classmethod
    def _bounded_boosts(cls, boosts: Mapping[str, float]) -> Mapping[str, float]:
        for category, boost in boosts.items():
            if not -1.0 <= boost <= 1.0:
                raise ValueError(f"the boost of {category!r} is {boost}; boosts are -1 to 1")
        return boosts

    @model_validator(mode="after")
    def _slots_leave_room(self) -> SurfacePolicy:
        if self.fresh_share + self.exploration_share > 0.5:
            raise ValueError(
                "fresh_share + exploration_share exceeds 0.5: at least half the page "
                "must stay ranked"
            )
        return self

    def with_overrides(self, overrides: Mapping[str, Any], origin: str) -> SurfacePolicy:
        """This policy with ``overrides`` applied, validated like the file itself."""
        merged = self.model_dump()
        for key, value in overrides.items():
            if key == "exclude_categories":
                merged[key] = frozenset(merged[key]) | frozenset(value)
            else:
                merged[key] = value
        return _validated(SurfacePolicy, merged, origin)


SurfaceName = Literal["home_feed", "related_items", "category_feed"]
SourceName = Literal[
    "ann", "co_engagement", "random_walk", "category_popular", "trending", "popular", "fresh"
]


class VariantConfig(BaseModel):
    """One arm of an experiment: what it changes, and its share of users."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=_NAME)
    weight: float = Field(gt=0, description="Relative share of users; weights need not sum to 1.")
    surfaces: Mapping[SurfaceName, Mapping[str, Any]] = Field(
        default_factory=dict, description="Changes to each surface's policy."
    )
    heavy_top_n: int | None = Field(
        default=None, ge=1, le=2000, description="The heavy ranker's cut-off."
    )
    source_limits: Mapping[SourceName, int] = Field(
        default_factory=dict, description="Per-source candidate quotas for retrieval."
    )

    @field_validator("source_limits")
    @classmethod
    def _bounded_limits(cls, limits: Mapping[str, int]) -> Mapping[str, int]:
        for source, limit in limits.items():
            if not 0 <= limit <= 2000:
                raise ValueError(f"the quota of {source!r} is {limit}; quotas are 0 to 2000")
        return limits


class ExperimentConfig(BaseModel):
    """Users split deterministically (by a hash of experiment name and user id) into variants."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=_NAME)
    variants: tuple[VariantConfig, ...] = Field(min_length=1)

    @field_validator("variants")
    @classmethod
    def _unique_names(cls, variants: tuple[VariantConfig, ...]) -> tuple[VariantConfig, ...]:
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names repeat: {names}")
        return variants


class PolicyFile(BaseModel):
    """The whole file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = Field(min_length=1, max_length=64)
    surfaces: Mapping[SurfaceName, SurfacePolicy] = Field(default_factory=dict)
    experiments: tuple[ExperimentConfig, ...] = ()

    @model_validator(mode="after")
    def _valid_variants(self) -> PolicyFile:
        names = [e.name for e in self.experiments]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment names repeat: {names}")
        for experiment in self.experiments:
            for variant in experiment.variants:
                for surface, changes in variant.surfaces.items():
                    base = self.surfaces.get(surface, SurfacePolicy())
                    try:
                        base.with_overrides(changes, surface)
                    except PolicyError as error:
                        problems = "; ".join(f"{p or surface}: {m}" for p, m in error.problems)
                        raise ValueError(
                            f"experiment {experiment.name}, variant {variant.name}, surface "
                            f"{surface}: {problems}"
                        ) from None
        return self


@dataclass(frozen=True)
class Assignment:
    """The variant of one experiment that serves a request."""

    experiment: str
    variant: VariantConfig
    forced: bool = False

    @property
    def label(self) -> str:
        """``experiment/variant``, as logged and as callers force it."""
        return f"{self.experiment}/{self.variant.name}"


@dataclass(frozen=True)
class Treatment:
    """Everything the assigned variants change for one request."""

    assignments: tuple[Assignment, ...] = ()
    heavy_top_n: int = 0
    """0: the ranking server's own setting."""
    source_limits: Mapping[SourceKind, int] | None = None

    def policy(self, policies: BlendingPolicies, surface: Surface) -> SurfacePolicy:
        """The surface's policy with every assigned variant's changes."""
        policy = policies.for_surface(surface)
        for assignment in self.assignments:
            changes = assignment.variant.surfaces.get(_SURFACE_NAMES[surface])
            if changes:
                policy = policy.with_overrides(changes, assignment.label)
        return policy


_SURFACE_NAMES: dict[Surface, SurfaceName] = {
    Surface.HOME_FEED: "home_feed",
    Surface.RELATED_ITEMS: "related_items",
    Surface.CATEGORY_FEED: "category_feed",
}


class BlendingPolicies:
    """A loaded policy file: a policy per surface and the experiments."""

    def __init__(self, config: PolicyFile, text: str = "") -> None:
        self.config = config
        self.version = config.version
        self.text = text or yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
        """The file as written (what a release stores)."""

    @classmethod
    def parse(cls, text: str, origin: str) -> BlendingPolicies:
        """Parse YAML or JSON text; PolicyError naming every problem."""
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise PolicyError(f"{origin} is not valid YAML or JSON: {error}") from error
        if not isinstance(raw, dict):
            raise PolicyError(f"{origin} must hold a mapping with `version` and `surfaces`")
        return cls(_validated(PolicyFile, raw, origin), text)

    @classmethod
    def load(cls, path: Path) -> BlendingPolicies:
        """Read and validate a policy file."""
        try:
            text = path.read_text()
        except OSError as error:
            raise PolicyError(f"cannot read the policy file {path}: {error.strerror}") from error
        return cls.parse(text, str(path))

    @classmethod
    def default(cls) -> BlendingPolicies:
        """The policy file shipped with Cascade (``blending/default_policy.yaml``)."""
        text = resources.files("cascade_server.blending").joinpath("default_policy.yaml")
        return cls.parse(text.read_text(), "the default policy")

    def for_surface(self, surface: Surface) -> SurfacePolicy:
        """The surface's policy (defaults for a surface the file leaves out)."""
        return self.config.surfaces.get(_SURFACE_NAMES[surface], SurfacePolicy())

    def treatment(self, user_id: str, forced: Sequence[str] = ()) -> Treatment:
        """The variants serving ``user_id``: bucketed by a hash of experiment name and user
        id, unless ``forced`` names one as ``experiment/variant``. Without a user id every
        experiment serves its first variant."""
        assignments = []
        wanted = dict(label.split("/", 1) for label in forced if "/" in label)
        for experiment in self.config.experiments:
            chosen = next(
                (v for v in experiment.variants if v.name == wanted.get(experiment.name)), None
            )
            if chosen is not None:
                assignments.append(Assignment(experiment.name, chosen, forced=True))
            else:
                assignments.append(Assignment(experiment.name, _bucket(experiment, user_id)))
        heavy_top_n = 0
        limits: dict[SourceKind, int] = {}
        for assignment in assignments:
            heavy_top_n = assignment.variant.heavy_top_n or heavy_top_n
            limits.update({SourceKind(k): v for k, v in assignment.variant.source_limits.items()})
        return Treatment(tuple(assignments), heavy_top_n, limits or None)


def _bucket(experiment: ExperimentConfig, user_id: str) -> VariantConfig:
    if not user_id:
        return experiment.variants[0]
    digest = hashlib.blake2b(f"{experiment.name}\x1f{user_id}".encode(), digest_size=8).digest()
    point = int.from_bytes(digest, "big") % _BUCKETS / _BUCKETS
    total = sum(v.weight for v in experiment.variants)
    cumulative = 0.0
    for variant in experiment.variants:
        cumulative += variant.weight / total
        if point < cumulative:
            return variant
    return experiment.variants[-1]


def _validated(model: type[M], raw: Any, origin: str) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        problems = [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in error.errors()]
        listed = "; ".join(f"{place or '(top level)'}: {problem}" for place, problem in problems)
        raise PolicyError(f"{origin} is not a valid blending policy: {listed}", problems) from error
