"""The one settings model of an ML-MotEx analysis, offline and live.

Why one model: the same data must give the same answer whichever command asks. Every knob
that shapes a prepared model (starting model, permutable elements, bond threshold, fit
range, Q range, instrument and thermal parameters, catalogue, fit mode, search, seed) is
declared here once, with its default, its unit, its allowed range and its description. The
``analyze``/``fit``/``replay`` flags are generated from these fields (see
:mod:`motex_stream.cli_flags`), the service's ``[[models]]`` table is read into
:class:`LiveModelSettings`, and per-run overrides are re-validated by the same model, so a
value is checked the same way wherever it comes from: finite numbers only, ranges checked,
unknown keys rejected.

Nothing here touches the wall clock: the hyperparameter search is bounded by counts
(``search_calls`` × ``cv_folds``) so that a busy machine gives the same answer as a quiet one.
``search_time_s`` exists only as an explicit opt-in, and the report flags it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from motex_stream.validation_errors import one_line

log = logging.getLogger(__name__)

#: Q range used when neither the settings nor the data header give one (1/Å).
FALLBACK_QMIN = 0.7
FALLBACK_QMAX = 20.0

#: Largest catalogue we agree to build: 10⁷ motifs is ~30 MB bit-packed per 24 atoms and
#: hours of fitting; anything above is a typo (``10**12`` was once accepted).
MAX_CATALOGUE = 10_000_000

#: Motifs explained by SHAP at most (``explain_rows``): above it a seeded subsample. Why
#: 10^5: every catalogue the paper and the golden checks use (10^4-3·10^4 motifs) is still
#: explained whole, so their numbers do not move, while SHAP of 10^6-10^7 motifs (minutes;
#: ~300 bytes a motif of features, SHAP and copies for 24 atoms) is bounded.
EXPLAIN_ROWS = 100_000

#: Motifs the surrogate is trained on at most (``train_rows``): above it a seeded subsample.
#: Why 10^6: the paper's largest catalogue (384,260 motifs, C60) and every golden check are
#: still trained whole, so their numbers do not move, while the hyperparameter search, whose
#: time and memory grow with the rows (~200 s for 10^6 motifs on two cores), stays bounded for
#: 10^7-motif catalogues; a GBDT over tens to hundreds of 0/1 features has long stopped
#: learning from more rows there (the held-out error is reported either way).
TRAIN_ROWS = 1_000_000

Generator = Literal["random", "cookie"]
Zoom = Literal["isotropic", "anisotropic"]
Engine = Literal["numpy", "torch"]
ModelName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]+$", min_length=1, max_length=64)]

NonNegative = Annotated[float, Field(ge=0.0)]


def flag(name: str) -> dict[str, Any]:
    """Field metadata: the command-line flag that sets this field (when not ``--field-name``)."""
    return {"flag": name}


class ModelSettings(BaseModel):
    """Everything that shapes one ML-MotEx model (defaults: the paper's DanMAX α-Keggin run)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, validate_default=True
    )

    starting_model: Path = Field(
        description="starting model file (XYZ, CIF, ...)", json_schema_extra=flag("--model")
    )
    permute: tuple[str, ...] = Field(
        ("W",), min_length=1, description="permutable element(s), e.g. W"
    )
    threshold: float = Field(
        2.5,
        gt=0.0,
        le=10.0,
        description="bond threshold in Å: dependent atoms closer than "
        "this to a kept permutable atom are kept (strict <)",
    )
    rmin: float = Field(1.6, ge=0.0, lt=1000.0, description="fit range start, Å")
    rmax: float = Field(10.0, gt=0.0, le=1000.0, description="fit range end, Å")
    qmin: float | None = Field(
        None, ge=0.0, le=100.0, description=f"Qmin, 1/Å; unset: data header, else {FALLBACK_QMIN}"
    )
    qmax: float | None = Field(
        None, gt=0.0, le=100.0, description=f"Qmax, 1/Å; unset: data header, else {FALLBACK_QMAX}"
    )
    qdamp: float = Field(0.05, ge=0.0, le=1.0, description="instrument Qdamp, 1/Å")
    qbroad: float = Field(0.01, ge=0.0, le=1.0, description="instrument Qbroad, 1/Å")
    biso: float | dict[str, NonNegative] = Field(
        0.4,
        description="isotropic displacement Biso in Å²: one value for every atom, or one per "
        "element (TOML table; flag: W=0.3 O=0.6)",
    )
    delta2: float = Field(0.0, ge=0.0, le=100.0, description="correlated-motion term δ2, Å²")
    generator: Generator = Field(
        "random", description="catalogue generator: random (the paper's) or cookie (spherical cuts)"
    )
    catalogue_size: int = Field(
        10_000,
        ge=1,
        le=MAX_CATALOGUE,
        description="number of candidate motifs to fit",
        json_schema_extra=flag("--catalogue"),
    )
    lower: int = Field(1, ge=1, description="fewest kept permutable atoms in a random motif")
    upper: int | None = Field(
        None, ge=1, description="most kept permutable atoms in a random motif; unset: all"
    )
    zoom: Zoom = Field(
        "isotropic",
        description="isotropic: one zoom (fast); anisotropic: three zooms like the reference fit",
    )
    engine: Engine = Field(
        "numpy",
        description="fitting engine: numpy (compiled, CPU) or torch (the gpu extra: the same "
        "fits, Rwp within 1e-5, on a CUDA device or CPU torch)",
    )
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$",
        description="device of the torch engine: auto (CUDA when torch sees one, else CPU), "
        "cpu, cuda or cuda:N",
    )
    search_calls: int = Field(
        12, ge=1, le=200, description="Bayesian hyperparameter search: points evaluated"
    )
    cv_folds: int = Field(5, ge=2, le=20, description="cross-validation folds per search point")
    search_time_s: float | None = Field(
        None,
        gt=0.0,
        description="opt-in wall-clock cap on the search (results then depend on machine load; "
        "the report says so); unset: always search_calls points",
    )
    seed: int = Field(0, ge=0, lt=2**32, description="seed of catalogue, search and training")
    ci_models: int = Field(
        4,
        ge=0,
        le=50,
        description="confidence intervals: extra surrogates on bootstrap resamples of the fits "
        "(searched hyperparameters, no new search); live, the same ensemble, built on the frame "
        "each surrogate is (re)built on; 0 or 1: sampling error of the SHAP means only",
    )
    ci_rows: int = Field(
        2500,
        ge=100,
        le=MAX_CATALOGUE,
        description="confidence intervals: motifs per bootstrap resample (m-out-of-n; the "
        "spread is not scaled down to the catalogue); bounds the cost on large catalogues",
    )
    explain_rows: int = Field(
        EXPLAIN_ROWS,
        ge=100,
        le=MAX_CATALOGUE,
        description="SHAP on at most this many motifs (analyze, and each live frame): a larger "
        "catalogue is explained on a seeded random subsample, whose standard error of each "
        "contribution value is reported and widens its interval (bounds the memory and time "
        "of SHAP on 10^6-10^7 motifs); at least catalogue_size: every motif",
    )
    train_rows: int = Field(
        TRAIN_ROWS,
        ge=100,
        le=MAX_CATALOGUE,
        description="surrogate trained (search, fit and held-out test) on at most this many "
        "motifs: a larger catalogue trains it on a seeded random subsample (bounds the memory "
        "and time of training on 10^7 motifs; every motif is still fitted); at least "
        "catalogue_size: every motif",
    )
    ci_level: float = Field(
        0.9,
        gt=0.5,
        lt=1.0,
        description="confidence level of the two-sided interval per atom contribution value; "
        "keep: interval below 0, remove: above 0, else uncertain",
    )
    adaptive_motifs: int = Field(
        0,
        ge=0,
        le=MAX_CATALOGUE,
        description="second pass when atoms are uncertain: motifs fitted with the confident "
        "keep atoms mostly kept and the uncertain ones varied, then explained for those atoms "
        "alone (e.g. 2000); 0: no second pass. Off by default: its intervals are too narrow "
        "and it labelled atoms outside the Keggin units keep on the 48/72-W models",
    )
    confirm_contexts: int = Field(
        64,
        ge=0,
        le=10_000,
        description="confirming pass: every keep atom is added to and removed from this many "
        "perturbations of the pruned keep set and fitted; a keep the fits do not confirm "
        "(Rwp change interval not below 0) becomes uncertain; 0: no confirming pass",
    )
    refine_fits: int = Field(
        1_000_000,
        ge=0,
        le=100_000_000,
        description="motif refinement by direct fits (offline): fit budget of a steepest "
        "descent over add/remove/swap moves from the surrogate's and the catalogue's best "
        "motifs; reports the refined motif, its Rwp and each atom's Rwp change when toggled, "
        "and labels uncertain a confident keep/remove its resolved toggle contradicts; 0: off",
    )
    refine_starts: int = Field(
        8,
        ge=0,
        le=100,
        description="motif refinement: lowest-Rwp compact cuts of the model (nearest atoms "
        "around one atom, every size) and lowest-Rwp catalogue motifs to start from, this "
        "many of each, besides the surrogate's top atoms, its negative atoms and the keep atoms",
    )

    @field_validator("permute", mode="before")
    @classmethod
    def _one_or_many_elements(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple):
            return tuple(str(v).strip().capitalize() for v in value)
        return value

    @field_validator("permute")
    @classmethod
    def _known_elements(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from motex_stream.pdf.formfactors import is_known_element

        unknown = [v for v in value if not is_known_element(v)]
        if unknown:
            raise ValueError(f"unknown element(s) {', '.join(unknown)}")
        return value

    @field_validator("biso", mode="before")
    @classmethod
    def _biso_table(cls, value: Any) -> Any:
        if isinstance(value, dict):
            if not value:
                raise ValueError("the per-element Biso table is empty")
            return {str(k).strip().capitalize(): v for k, v in value.items()}
        return value

    @field_validator("biso")
    @classmethod
    def _biso_range(cls, value: float | dict[str, float]) -> float | dict[str, float]:
        values = value.values() if isinstance(value, dict) else [value]
        if any(not 0.0 <= v <= 50.0 for v in values):
            raise ValueError(f"Biso must be within 0..50 Å², got {value}")
        return value

    @model_validator(mode="after")
    def _ranges(self) -> ModelSettings:
        if not self.rmin < self.rmax:
            raise ValueError(f"rmin ({self.rmin}) must be below rmax ({self.rmax})")
        if self.qmin is not None and self.qmax is not None and not self.qmin < self.qmax:
            raise ValueError(f"qmin ({self.qmin}) must be below qmax ({self.qmax})")
        if self.upper is not None and self.upper < self.lower:
            raise ValueError(f"upper ({self.upper}) must be >= lower ({self.lower})")
        return self

    # --------------------------------------------------------------- derived values
    def with_q_range(self, header_qmin: float | None, header_qmax: float | None) -> ModelSettings:
        """The settings with the Q range resolved: given value, else data header, else fallback.

        The resolved copy is what every step uses and what reports and state record, so two
        commands reading the same data header can never disagree on Qmax.
        """
        qmin = self.qmin if self.qmin is not None else header_qmin
        qmax = self.qmax if self.qmax is not None else header_qmax
        return self.updated(
            qmin=FALLBACK_QMIN if qmin is None else float(qmin),
            qmax=FALLBACK_QMAX if qmax is None else float(qmax),
        )

    def updated(self, **changes: Any) -> ModelSettings:
        """A validated copy with ``changes`` applied (``model_copy`` would skip validation)."""
        return type(self).model_validate({**self.model_dump(), **changes})

    def fingerprint(self, exclude: frozenset[str] = frozenset()) -> str:
        """Hash of the settings that shape a prepared model plus the starting model's bytes."""
        ignored = set(exclude) | self.runtime_fields()
        if self.train_rows >= self.catalogue_size:
            # every motif trains the surrogate whatever the bound: the same prepared model
            # (so states prepared before the setting existed stay valid)
            ignored.add("train_rows")
        fields = self.model_dump(mode="json", exclude=ignored)
        blob = json.dumps(fields, sort_keys=True).encode()
        model_bytes = Path(self.starting_model).read_bytes()
        return hashlib.sha256(blob + model_bytes).hexdigest()[:16]

    @classmethod
    def runtime_fields(cls) -> set[str]:
        """Fields that steer only the per-frame work, or only where it runs (engine, device:
        the same fits to 1e-5 in Rwp), or only which motifs SHAP explains (explain_rows):
        changing them keeps a prepared state."""
        return {
            "ci_models",
            "ci_rows",
            "ci_level",
            "engine",
            "device",
            "adaptive_motifs",
            "explain_rows",
            "confirm_contexts",
            "refine_fits",
            "refine_starts",
        }


class LiveModelSettings(ModelSettings):
    """One live model (a ``[[models]]`` entry, or a replay): the analysis plus per-frame work."""

    name: ModelName = Field(description="model name: ZMQ topic, state folder, metric label")
    reference: Path | None = Field(
        None, description=".gr to prepare on; unset: saved state, else the first frame"
    )
    refit: int | None = Field(
        None,
        ge=1,
        le=MAX_CATALOGUE,
        description="motifs refitted per frame (a seeded subsample); unset: every motif of the "
        "catalogue",
    )
    rounds: int = Field(
        10, ge=1, le=300, description="boosting rounds added to the warm-started GBDT per frame"
    )
    max_trees: int = Field(
        400,
        ge=4,
        le=2000,
        description="tree cap of the live GBDT: reached, the searched model is re-trained on the "
        "current frame (never squeezed), in line (~2.5 s on 10^4 motifs); a cap below its "
        "rounds + 2 frames' rounds is raised. 400: one rebuild per ~25-35 frames at rounds 10",
    )
    rebuild_every: int = Field(
        0,
        ge=0,
        le=10_000,
        description="rebuild the live GBDT at least every this many frames, tree cap or not: a "
        "rebuilt frame's answer is analyze's of that frame given the live search (1: every "
        "frame, at a training, a full SHAP pass and the interval ensemble per frame); 0: at "
        "the tree cap and on drift only",
    )
    rebuild_search: Literal["rescore", "search"] = Field(
        "rescore",
        description="what a rebuild does about hyperparameters: rescore (default) scores the "
        "serving search's best points again on the frame by CV (~1/3 of a search); search "
        "runs analyze's own search on the frame, which then serves, so a rebuilt frame is "
        "bit for bit analyze of that frame (with rebuild_every 1: every frame, at a search "
        "per frame, ~4 s on 10^4 motifs)",
    )

    change_frames: int = Field(
        3,
        ge=1,
        le=100,
        description="change detection: consecutive frames a new set of keep atoms must hold "
        "before it is reported as a change",
    )
    frame_refine_fits: int = Field(
        0,
        ge=0,
        le=100_000_000,
        description="live motif refinement by direct fits on each frame: analyze's refinement "
        "(refine_starts) with this fit budget; its refined motif in the message's "
        "extra.refined, and confident labels its toggles contradict become uncertain. 0 "
        "(default): off, a descent costs ~0.1 s to seconds per frame",
    )

    @model_validator(mode="after")
    def _refit_within_catalogue(self) -> LiveModelSettings:
        # only a refit the user set can exceed the catalogue: unset follows catalogue_size
        if self.refit is not None and self.refit > self.catalogue_size:
            raise ValueError(
                f"refit ({self.refit}) cannot exceed catalogue_size ({self.catalogue_size})"
            )
        return self

    @property
    def refit_count(self) -> int:
        """Motifs refitted per frame: ``refit``, or the whole catalogue when it is unset.

        Unset is stored as ``None`` (not as a number) so that it keeps following
        ``catalogue_size`` through :meth:`updated` and per-run overrides.
        """
        return self.catalogue_size if self.refit is None else self.refit

    @classmethod
    def runtime_fields(cls) -> set[str]:
        """The analysis' runtime fields plus the live model's per-frame and naming ones."""
        return super().runtime_fields() | {
            "name",
            "reference",
            "refit",
            "rounds",
            "max_trees",
            "rebuild_every",
            "rebuild_search",
            "change_frames",
            "frame_refine_fits",
        }


#: Settings a Bluesky start document may change for one run (``motex_overrides``). All others
#: define the prepared engine and catalogue fit; changing them needs another configured model.
RUN_OVERRIDABLE = frozenset({"zoom", "refit"})


def settings_for_run(
    settings: LiveModelSettings, overrides: Any
) -> tuple[LiveModelSettings, tuple[str, ...]]:
    """Per-run settings from a start document's ``motex_overrides``, leniently.

    A start document is typed by users at the beamline, so a bad entry must not stop the
    service: each key that is not per-run or whose value is out of range is logged as an error
    and ignored, while the valid ones still apply. Returns (settings, rejected keys).
    """
    if not isinstance(overrides, dict):
        log.error(
            "motex_overrides must be a table of settings, got %s; ignored",
            type(overrides).__name__,
        )
        return settings, ("motex_overrides",)
    rejected: list[str] = []
    for key, value in overrides.items():
        try:
            settings = apply_run_overrides(settings, {str(key): value})
        except ValueError as exc:
            log.error("motex_overrides.%s=%r rejected: %s", key, value, one_line(exc))
            rejected.append(str(key))
    return settings, tuple(rejected)


def apply_run_overrides(
    settings: LiveModelSettings, overrides: dict[str, Any]
) -> LiveModelSettings:
    """``settings`` with per-run ``overrides`` applied and re-validated (ranges included).

    Raises ``ValueError`` naming the key for a key that is not per-run or a value out of range.
    """
    not_allowed = sorted(set(overrides) - RUN_OVERRIDABLE)
    if not_allowed:
        allowed = ", ".join(sorted(RUN_OVERRIDABLE))
        raise ValueError(f"{not_allowed[0]} is not a per-run setting (allowed: {allowed})")
    result = settings.updated(**overrides)
    assert isinstance(result, LiveModelSettings)
    return result
