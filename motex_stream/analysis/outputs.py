"""Write one offline analysis to disk: tables, a JSON report, coloured structures and plots.

The outputs are meant for two audiences. Scientists open the structure files (VESTA, extended
XYZ) and PNGs to see which atoms the data favour; scripts read ``contributions.csv``,
``fits.csv``/``fits.npz`` and ``report.json``. Atom numbers everywhere are 1-based indices
into the starting-model file, because that is how users find an atom in their own file and
in VESTA, not the 0-based permutable index used internally.

Numerical files are written before any plot, and a failing plot is logged rather than
raised, so that a missing font or a shap/matplotlib quirk never costs the user the results
of a long fitting run.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from motex_stream.analysis.jsonable import to_jsonable
from motex_stream.analysis.result import AnalysisResult
from motex_stream.catalogue.packed import as_packed
from motex_stream.explain.confidence import sampling_error
from motex_stream.explain.contributions import CONTRIBUTION_WEIGHT
from motex_stream.structure.symmetry import Sites

log = logging.getLogger(__name__)

_CSV_CHUNK = 8192  # rows per formatted block of fits.csv: bounds memory for 10^5-10^6 motifs
_SHAP_PLOT_MAX_ROWS = 5000  # a beeswarm of more points is unreadable and slow to draw
#: VESTA radius factor of atoms labelled uncertain (they are also drawn paler).
_UNCERTAIN_RADIUS = 0.6
_VESTA_PAD = 10.0  # Å of vacuum around the cluster in the P1 box, so no periodic image bonds
_GREY = (0.6, 0.6, 0.6)


# --------------------------------------------------------------------------- helpers


def contribution_ranks(value: np.ndarray) -> np.ndarray:
    """Rank of each atom (1 = most negative contribution); NaN atoms rank last.

    Ties keep file order (stable sort) so that the ranking is reproducible between runs.
    """
    v = np.asarray(value, dtype=float)
    order = np.argsort(np.where(np.isnan(v), np.inf, v), kind="stable")
    ranks = np.empty(len(v), dtype=np.int64)
    ranks[order] = np.arange(1, len(v) + 1)
    return ranks


def _default_top_k(result: AnalysisResult) -> int:
    """k for "the k most negative atoms": the user's setting, else half the permutable atoms.

    Half is what the paper used for the Keggin starting models (12 of 24, 24 of 48 W).
    """
    k = result.settings.get("top_k")
    if isinstance(k, int | np.integer) and k > 0:
        return int(min(k, result.model.n_permutable))
    return max(1, result.model.n_permutable // 2)


def _feature_names(result: AnalysisResult) -> list[str]:
    """Element + file atom number per mask bit (e.g. "W7"), then "size" if present."""
    names = [
        f"{el}{num}"
        for el, num in zip(result.model.permutable_symbols, result.atom_numbers(), strict=True)
    ]
    if result.features.shape[1] == len(names) + 1:
        names.append("size")
    return names


def _contribution_colours(value: np.ndarray) -> list[tuple[float, float, float]]:
    """RGB (0-1) per permutable atom on a blue-white-red scale symmetric about zero.

    Symmetric so that white always means "no effect": blue = the atom helps the fit
    (negative contribution), red = it hurts. NaN (undefined) atoms are grey.
    """
    from matplotlib import colormaps
    from matplotlib.colors import TwoSlopeNorm

    v = np.asarray(value, dtype=float)
    finite = v[np.isfinite(v)]
    vmax = float(np.max(np.abs(finite))) if finite.size else 0.0
    vmax = vmax if vmax > 0 else 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-vmax, vmax=vmax)
    cmap = colormaps["bwr"]
    out: list[tuple[float, float, float]] = []
    for x in v:
        if not np.isfinite(x):
            out.append(_GREY)
        else:
            r, g, b, _ = cmap(float(norm(x)))
            out.append((float(r), float(g), float(b)))
    return out


def interval_columns(result: AnalysisResult) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(ci_low, ci_high, label) per permutable atom; NaN and ``uncertain`` when the run
    computed no intervals."""
    ci = result.intervals
    if ci is None:
        n = len(result.contributions.value)
        return np.full(n, np.nan), np.full(n, np.nan), ["uncertain"] * n
    return np.asarray(ci.low, float), np.asarray(ci.high, float), list(ci.label)


def refinement_columns(result: AnalysisResult) -> tuple[list[str], np.ndarray]:
    """("1"/"0" in the refined motif, toggle Rwp change) per atom; "" and NaN when off."""
    ref = result.refinement
    n = len(result.contributions.value)
    if ref is None:
        return [""] * n, np.full(n, np.nan)
    return [str(int(v)) for v in ref.mask], np.asarray(ref.keep_effect, float)


def result_sites(result: AnalysisResult) -> Sites:
    """The run's sites (``run_analysis`` finds them within the calculator's pair range, as the
    live analyzer does); a result built without them: found from the model, no cutoff."""
    return result.sites if result.sites is not None else Sites.of(result.model)


def site_column(result: AnalysisResult) -> np.ndarray:
    """Per permutable atom, the id of its site: the file number of the site's first atom."""
    return result_sites(result).ids(result.atom_numbers())


def _site_values(
    value: np.ndarray, labels: Sequence[str], cls: list[int]
) -> tuple[float, float, float, float, dict[str, int]]:
    """(mean, sd, min, max) of a site's finite values (NaN when it has none; sd over the
    site, not of the mean) and its label counts."""
    v = np.asarray(value, dtype=float)[cls]
    v = v[np.isfinite(v)]
    counts = {k: 0 for k in ("keep", "remove", "uncertain")}
    for i in cls:
        counts[labels[i]] = counts.get(labels[i], 0) + 1
    if not v.size:
        return math.nan, math.nan, math.nan, math.nan, counts
    return float(v.mean()), float(v.std()), float(v.min()), float(v.max()), counts


def sites_summary(result: AnalysisResult) -> dict[str, Any]:
    """The report's ``sites``: the symmetry-equivalent atoms (``equivalent``, exactly the
    live message's ``structure.equivalent``) and, per site of two or more atoms, its atoms
    and the mean and spread of their contribution values and labels."""
    sites = result_sites(result)
    numbers = result.atom_numbers()
    value = np.asarray(result.contributions.value, dtype=float)
    labels = interval_columns(result)[2]
    symbols = result.model.permutable_symbols
    classes = []
    for cls in sites.classes:
        if len(cls) < 2:
            continue
        mean, sd, lo, hi, counts = _site_values(value, labels, cls)
        classes.append(
            {
                "site": int(numbers[cls[0]]),
                "element": "/".join(sorted({symbols[i] for i in cls})),
                "atoms": numbers[cls].tolist(),
                "n_atoms": len(cls),
                "mean": mean,
                "sd": sd,
                "min": lo,
                "max": hi,
                "labels": counts,
            }
        )
    return {
        "n_sites": len(sites.classes),
        "equivalent": sites.equivalent(numbers),
        "classes": classes,
        "cutoff": sites.cutoff,
        "tol": sites.tol,
        "method": "permutable atoms are one site when their sorted distances to the atoms of "
        "each element (up to cutoff Å: the calculator's pair range) agree within tol Å; a "
        "site's id (contributions.csv site) is the number of its first atom; mean, sd (over "
        "the site's atoms), min and max of their contribution values",
    }


def _number_ranges(numbers: Sequence[int]) -> str:
    """1, 2, 3, 5 -> "1-3, 5"."""
    parts: list[str] = []
    run: list[int] = []
    for n in numbers:
        if run and n != run[-1] + 1:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 2 else ", ".join(map(str, run)))
            run = []
        run.append(int(n))
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 2 else ", ".join(map(str, run)))
    return ", ".join(parts)


def site_lines(result: AnalysisResult, limit: int = 8) -> list[str]:
    """What ``analyze`` prints about the sites: one line per site of two or more atoms (the
    first ``limit``, then how many more report.json lists)."""
    classes = sites_summary(result)["classes"]
    lines = []
    for c in classes[:limit]:
        labels = ", ".join(f"{n} {k}" for k, n in c["labels"].items() if n)
        lines.append(
            f"site {c['site']}: {c['n_atoms']} {c['element']} ({_number_ranges(c['atoms'])}) "
            f"contribution {c['mean']:.4f} ± {c['sd']:.4f}; {labels}"
        )
    if len(classes) > limit:
        lines.append(f"... {len(classes) - limit} more sites in report.json (sites)")
    return lines


# --------------------------------------------------------------------------- tables


def write_contributions_csv(path: Path, result: AnalysisResult) -> Path:
    """One row per permutable atom in file order; NaN contributions are written as ``nan``.

    ``ci_low``/``ci_high`` bound the contribution value at the run's confidence level and
    ``label`` says keep (interval below 0, and confirmed by the confirming pass's fits;
    report.json ``confidence.confirmation``), remove (above 0) or uncertain. For an atom the
    second pass re-examined they bound its second-pass value instead (report.json gives it,
    with the first-pass interval); ``contribution`` and ``rank`` stay the first pass's.
    ``refined`` (1/0) says whether the atom is in the motif refined by direct fits and
    ``toggle_rwp_change`` is Rwp with it − Rwp without it there (negative: it helps); both
    empty/NaN when the refinement was off (``refine_fits = 0``). ``site`` (last, so readers
    of the earlier columns are unaffected) numbers the atom's set of symmetry-equivalent
    atoms by its first atom's number (report.json ``sites``)."""
    c = result.contributions
    ranks = contribution_ranks(c.value)
    low, high, label = interval_columns(result)
    in_motif, effect = refinement_columns(result)
    site = site_column(result)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "atom",
                "element",
                "contribution",
                "spread_kept",
                "spread_removed",
                "rank",
                "ci_low",
                "ci_high",
                "label",
                "refined",
                "toggle_rwp_change",
                "site",
            ]
        )
        rows = zip(
            result.atom_numbers(),
            result.model.permutable_symbols,
            c.value,
            c.spread_kept,
            c.spread_removed,
            ranks,
            low,
            high,
            label,
            in_motif,
            effect,
            site,
            strict=True,
        )
        for atom, el, val, sk, sr, rank, lo, hi, lab, inm, eff, st in rows:
            w.writerow(
                [
                    int(atom),
                    el,
                    f"{val:.8g}",
                    f"{sk:.8g}",
                    f"{sr:.8g}",
                    int(rank),
                    f"{lo:.8g}",
                    f"{hi:.8g}",
                    lab,
                    inm,
                    f"{eff:.8g}",
                    int(st),
                ]
            )
    return path


def write_fits_csv(path: Path, result: AnalysisResult) -> Path:
    """Every motif's fit and mask; formatted block-wise so huge catalogues stay cheap (a
    packed catalogue is unpacked one block at a time, never whole)."""
    masks = as_packed(result.masks)
    fits = result.fits
    m, n = masks.shape
    header = ["id", "n_kept", "rwp", "scale", "zoom1", "zoom2", "zoom3"]
    header += [f"w{i + 1}" for i in range(n)]
    zoom = np.asarray(fits.zoom, dtype=float).reshape(m, 3)
    with path.open("wb") as fh:
        fh.write((",".join(header) + "\n").encode())
        for start, block in masks.chunks(_CSV_CHUNK):
            # The 0/1 columns dominate the file: build them as one byte matrix ("0,1,...\n")
            # instead of formatting N integers per row in Python.
            bits = np.full((len(block), 2 * n), ord(","), dtype=np.uint8)
            bits[:, 0::2] = block + ord("0")
            bits[:, -1] = ord("\n")
            kept = block.sum(axis=1)
            for j in range(len(block)):
                i = start + j
                fh.write(
                    f"{i},{kept[j]},{fits.rwp[i]:.8g},{fits.scale[i]:.8g},"
                    f"{zoom[i, 0]:.8g},{zoom[i, 1]:.8g},{zoom[i, 2]:.8g},".encode()
                )
                fh.write(bits[j].tobytes())
    return path


def write_fits_npz(path: Path, result: AnalysisResult) -> Path:
    """Compact catalogue of fits: masks bit-packed along atoms (MSB first, as np.packbits).

    ``n_permutable`` is stored because packing pads rows to whole bytes. A packed catalogue
    is written as it is held (same bytes as packing its bool form).
    """
    masks = as_packed(result.masks)
    np.savez_compressed(
        path,
        masks_packed=masks.packed,
        n_permutable=np.int64(masks.n_permutable),
        atom_numbers=np.asarray(result.atom_numbers(), dtype=np.int64),
        rwp=np.asarray(result.fits.rwp, dtype=float),
        scale=np.asarray(result.fits.scale, dtype=float),
        zoom=np.asarray(result.fits.zoom, dtype=float),
        mode=np.array(result.fits.mode),
    )
    return path


def _best_motif_summary(result: AnalysisResult) -> dict[str, Any]:
    """What the report says about the lowest-Rwp motif."""
    b = result.best
    mask = np.asarray(result.masks[b]).astype(bool)
    return {
        "id": b,
        "mask": mask.astype(int).tolist(),
        "n_kept": int(mask.sum()),
        "atoms_kept": result.atom_numbers()[mask].tolist(),
        "rwp": float(result.fits.rwp[b]),
        "scale": float(result.fits.scale[b]),
        "zoom": np.asarray(result.fits.zoom[b], dtype=float).tolist(),
    }


def _top_atoms(result: AnalysisResult, k: int) -> list[dict[str, Any]]:
    """The k most negative (most motif-like) atoms, best first; undefined (NaN) atoms skipped."""
    c = result.contributions
    ranks = contribution_ranks(c.value)
    atoms = _atom_rows(result)
    return [atoms[i] for i in np.argsort(ranks)[:k] if np.isfinite(c.value[i])]


def _atom_rows(result: AnalysisResult) -> list[dict[str, Any]]:
    """Every permutable atom in file order: value, rank, interval and label."""
    c = result.contributions
    ranks = contribution_ranks(c.value)
    low, high, label = interval_columns(result)
    se = sampling_error(c)
    ci = result.intervals
    refined = ci.refined if ci is not None and ci.refined is not None else None
    conf = ci.confirmation if ci is not None else None
    checked = {int(a): k for k, a in enumerate(conf.atoms)} if conf is not None else {}
    site = site_column(result)
    rows = []
    for i, (num, sym) in enumerate(
        zip(result.atom_numbers(), result.model.permutable_symbols, strict=True)
    ):
        row: dict[str, Any] = {
            "atom": int(num),
            "element": sym,
            "contribution": float(c.value[i]),
            "contribution_se": float(se[i]),
            "rank": int(ranks[i]),
            "ci_low": float(low[i]),
            "ci_high": float(high[i]),
            "label": label[i],
            "site": int(site[i]),
        }
        if refined is not None and refined[i]:
            # the interval and label come from the second pass: its value is what they bound
            assert ci is not None and ci.refined_value is not None and ci.first_pass is not None
            row["second_pass_value"] = float(ci.refined_value[i])
            row["first_pass"] = {
                "ci_low": float(ci.first_pass.low[i]),
                "ci_high": float(ci.first_pass.high[i]),
                "label": ci.first_pass.label[i],
            }
        ref = result.refinement
        if ref is not None:
            # direct evidence: the atom toggled in the motif refined by direct fits
            row["refinement"] = {
                "in_motif": bool(ref.mask[i]),
                "rwp_change": float(ref.keep_effect[i]),
                "direct_label": ref.direct_label[i] if ref.direct_label else None,
                "interval_label": ref.interval_label[i] if ref.interval_label else None,
            }
        if i in checked:
            # the confirming pass: Rwp change when the atom joins the found motif
            k = checked[i]
            assert conf is not None
            row["confirmation"] = {
                "rwp_change": float(conf.effect[k]),
                "low": float(conf.low[k]),
                "high": float(conf.high[k]),
                "confirmed": bool(conf.confirmed[k]),
            }
        rows.append(row)
    return rows


def _confidence_summary(result: AnalysisResult) -> dict[str, Any] | None:
    ci = result.intervals
    if ci is None:
        return None
    out: dict[str, Any] = {
        "level": ci.level,
        "ensemble_models": ci.n_models,
        "counts": ci.counts(),
        "method": "value ± q·sqrt(ensemble sd² + sampling se²), q: Student t quantile with "
        "Welch-Satterthwaite degrees of freedom; ensemble: surrogates with the searched "
        "hyperparameters on bootstrap resamples of the fits",
    }
    if ci.refined is not None:
        out["second_pass"] = {
            "motifs": ci.adaptive_motifs,
            "atoms": int(np.count_nonzero(ci.refined)),
            "resolved": ci.resolved(),
        }
    conf = ci.confirmation
    if conf is not None:
        numbers = result.atom_numbers()
        out["confirmation"] = {
            "contexts": conf.n_contexts,
            "fits": conf.n_fits,
            "centre_atoms": numbers[conf.centre].tolist(),
            "centre_rwp": conf.centre_rwp,
            "demoted": numbers[conf.demoted].tolist(),
            "method": "keep atoms pruned by backward elimination to a centre motif; each keep "
            "atom added to and removed from perturbations of it (Rwp with minus without, "
            "Student t interval over the contexts); keep only if that interval is below 0, "
            "else uncertain",
        }
    return out


def explain_summary(result: AnalysisResult) -> dict[str, Any]:
    """Which motifs SHAP explained and the standard error that leaves on the contribution
    values (per atom: ``atoms[i].contribution_se``).

    Why it is reported: a catalogue larger than ``explain_rows`` is explained on a seeded
    subsample, and its contribution values then differ from the whole catalogue's by about
    this error; it is the same ``sampling_se`` the intervals add to the ensemble spread."""
    c = result.contributions
    se = sampling_error(c)
    finite = se[np.isfinite(se)]
    return {
        "motifs": int(c.n_catalogue if c.n_catalogue is not None else c.n_explained),
        "explained": c.n_explained,
        "subsampled": c.subsampled,
        "standard_error": {
            "median": float(np.median(finite)) if finite.size else math.nan,
            "max": float(finite.max()) if finite.size else math.nan,
        },
        "method": "contribution value = 0.5·mean SHAP kept − 0.5·mean SHAP removed (the paper "
        "code's definition: values compare 1:1 with published ones) over the motifs "
        "explained (all, or a seeded uniform subsample of explain_rows); standard error "
        "0.5·sqrt(sd_kept²/n_kept + sd_removed²/n_removed)",
        "definition": "paper",
        "weight": CONTRIBUTION_WEIGHT,
    }


def withdrawn_atoms(result: AnalysisResult) -> list[int]:
    """Atom numbers whose confident interval label the refinement's toggles withdrew."""
    ref, ci = result.refinement, result.intervals
    if ref is None or ci is None or ref.interval_label is None:
        return []
    before, after = ref.interval_label, ci.label
    numbers = result.atom_numbers()
    return [
        int(numbers[i])
        for i, (b, a) in enumerate(zip(before, after, strict=True))
        if b != "uncertain" and a == "uncertain"
    ]


def refinement_summary(result: AnalysisResult) -> dict[str, Any] | None:
    """The motif refined by direct fits: atoms, Rwp, the descent of every start, the fits."""
    ref = result.refinement
    if ref is None:
        return None
    numbers = result.atom_numbers()
    best_rwp = float(np.nanmin(result.fits.rwp)) if len(result.fits) else math.nan
    return {
        "atoms_kept": numbers[ref.mask].tolist(),
        "n_kept": int(ref.mask.sum()),
        "mask": ref.mask.astype(int).tolist(),
        "rwp": ref.rwp,
        "catalogue_best_rwp": best_rwp,
        "converged": ref.converged,
        "n_fits": ref.n_fits,
        "budget": ref.budget,
        "direct_label_counts": {
            k: ref.direct_label.count(k) for k in ("keep", "remove", "uncertain")
        },
        # atoms whose confident interval label the resolved toggles contradicted (now
        # uncertain): where the surrogate and the direct fits disagree
        "withdrawn": withdrawn_atoms(result),
        "starts": [
            {
                "name": r.name,
                "atoms": numbers[r.start].tolist(),
                "start_rwp": r.start_rwp,
                "end_atoms": numbers[r.end].tolist(),
                "end_rwp": r.end_rwp,
                "steps": r.steps,
                "n_fits": r.n_fits,
                "converged": r.converged,
            }
            for r in ref.runs
        ],
        "method": "steepest descent over add/remove/swap moves with direct fits from each "
        "start (fit budget split over the starts; deterministic); per atom (atoms[i]."
        "refinement) Rwp with − Rwp without the atom in the refined motif; direct_label: "
        "keep/remove where that change is resolved (F test on (rmax−rmin)·Qmax/π "
        "independent points against the refined motif's misfit, at ci_level), else "
        "uncertain; a confident interval label a resolved toggle contradicts is uncertain",
    }


def build_report(result: AnalysisResult, top_k: int) -> dict[str, Any]:
    """The JSON report: everything needed to reproduce and judge the run, without the arrays."""
    return to_jsonable(
        {
            "starting_model": result.model.source,
            "n_atoms": result.model.n_atoms,
            "n_permutable": result.model.n_permutable,
            "bond_threshold": result.model.threshold,
            "n_motifs": len(result.fits),
            "fit_mode": result.fits.mode,
            "test_mae": result.test_mae,
            "test_mse": result.test_mse,
            "best_motif": _best_motif_summary(result),
            "refinement": refinement_summary(result),
            "top_k": top_k,
            "top_atoms": _top_atoms(result, top_k),
            "confidence": _confidence_summary(result),
            "explain": explain_summary(result),
            "atoms": _atom_rows(result),
            "sites": sites_summary(result),
            "size_shap_by_size": result.contributions.size_shap_by_size,
            "settings": result.settings,
            "versions": result.versions,
            "timings": result.timings,
            "extra": result.extra,
        }
    )


# --------------------------------------------------------------------------- structures


def write_contributions_xyz(path: Path, result: AnalysisResult) -> Path:
    """Extended XYZ of the whole starting model with ``contribution``, ``ci_low``,
    ``ci_high``, ``label`` and ``permutable`` columns.

    Dependent atoms (and undefined permutable ones) get 0 so that viewers colouring by the
    column (OVITO, ase gui) see a neutral value instead of choking on NaN; their label is
    ``dependent``. ``uncertain`` is an integer column (1 = uncertain permutable atom) to
    select or colour them by.
    """
    import ase
    import ase.io

    model = result.model
    contrib = np.zeros(model.n_atoms, dtype=float)
    contrib[model.permutable] = np.nan_to_num(result.contributions.value, nan=0.0)
    flag = np.zeros(model.n_atoms, dtype=np.int64)
    flag[model.permutable] = 1
    atoms = ase.Atoms(symbols=list(model.symbols), positions=model.positions)
    low, high, label = interval_columns(result)
    ci_low = np.zeros(model.n_atoms, dtype=float)
    ci_high = np.zeros(model.n_atoms, dtype=float)
    ci_low[model.permutable] = np.nan_to_num(low, nan=0.0)
    ci_high[model.permutable] = np.nan_to_num(high, nan=0.0)
    labels = np.array(["dependent"] * model.n_atoms, dtype="<U9")
    labels[model.permutable] = label
    atoms.set_array("contribution", contrib)
    atoms.set_array("ci_low", ci_low)
    atoms.set_array("ci_high", ci_high)
    atoms.set_array("label", labels)
    atoms.set_array("uncertain", (labels == "uncertain").astype(np.int64))
    atoms.set_array("permutable", flag)
    ase.io.write(str(path), atoms, format="extxyz")
    return path


def _write_motif_xyz(path: Path, result: AnalysisResult, mask: np.ndarray, title: str) -> Path:
    """Plain XYZ of the atoms ``mask`` keeps (permutable + their bonded dependents, by the
    catalogue's bonding rule), the comment line ``title`` and the starting model's name."""
    symbols, positions = result.model.motif_positions(mask)
    lines = [
        str(len(symbols)),
        f"{title} from {Path(result.model.source).name or 'starting model'}",
    ]
    lines += [
        f"{s:<2s} {x:14.6f} {y:14.6f} {z:14.6f}"
        for s, (x, y, z) in zip(symbols, positions, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_refined_motif_xyz(path: Path, result: AnalysisResult) -> Path:
    """The motif refined by direct fits, as plain XYZ."""
    ref = result.refinement
    assert ref is not None
    return _write_motif_xyz(
        path, result, ref.mask, f"refined motif rwp={ref.rwp:.6f} fits={ref.n_fits}"
    )


def write_best_motif_xyz(path: Path, result: AnalysisResult) -> Path:
    """The best catalogue motif, as plain XYZ."""
    b = result.best
    title = f"best motif id={b} rwp={float(result.fits.rwp[b]):.6f}"
    return _write_motif_xyz(path, result, result.masks[b], title)


def _rgb255(rgb: Sequence[float]) -> str:
    return " ".join(f"{round(255 * min(max(c, 0.0), 1.0)):3d}" for c in rgb)


def _vesta_lines(result: AnalysisResult) -> list[str]:
    """The VESTA document as lines: a P1 box around the cluster, one site per atom.

    Every atom is its own site (label element + file number) because VESTA colours by site
    (SITET); sharing sites would force one colour per element. The box is cubic with
    ``_VESTA_PAD`` of vacuum so that bond search across the periodic boundary finds nothing.
    """
    from ase.data import atomic_numbers, covalent_radii
    from ase.data.colors import jmol_colors

    model = result.model
    pos = np.asarray(model.positions, dtype=float)
    lo = pos.min(axis=0)
    box = float(np.max(pos.max(axis=0) - lo)) + 2 * _VESTA_PAD
    frac = (pos - lo + _VESTA_PAD) / box
    colours: list[tuple[float, float, float]] = [_GREY] * model.n_atoms
    for idx, rgb in zip(
        model.permutable, _contribution_colours(result.contributions.value), strict=True
    ):
        colours[int(idx)] = rgb
    labels = [f"{s}{i + 1}" for i, s in enumerate(model.symbols)]
    # uncertain atoms: smaller and paler, so the confident keep/remove ones stand out
    shrink = np.ones(model.n_atoms)
    for idx, lab in zip(model.permutable, interval_columns(result)[2], strict=True):
        if lab == "uncertain":
            shrink[int(idx)] = _UNCERTAIN_RADIUS
            colours[int(idx)] = tuple(0.5 + 0.5 * c for c in colours[int(idx)])

    def radius(sym: str) -> float:
        return float(covalent_radii[atomic_numbers[sym]])

    title = f"ML-MotEx contributions: {Path(model.source).name or 'starting model'}"
    out = ["#VESTA_FORMAT_VERSION 3.5.0", "", "", "CRYSTAL", "", "TITLE", title, ""]
    out += ["GROUP", "1 1 P 1", "SYMOP"]
    out += [" 0.000000  0.000000  0.000000  1  0  0   0  1  0   0  0  1   1"]
    out += [" -1.0 -1.0 -1.0  0 0 0  0 0 0  0 0 0"]
    out += ["TRANM 0", " 0.000000  0.000000  0.000000  1  0  0   0  1  0   0  0  1"]
    out += ["LTRANSL", " -1", " 0.000000  0.000000  0.000000  0.000000  0.000000  0.000000"]
    out += ["LORIENT", " -1   0   0   0   0"]
    out += [" 1.000000  0.000000  0.000000  1.000000  0.000000  0.000000"]
    out += [" 0.000000  0.000000  1.000000  0.000000  0.000000  1.000000"]
    out += ["LMATRIX"]
    out += [" 1.000000  0.000000  0.000000  0.000000", " 0.000000  1.000000  0.000000  0.000000"]
    out += [" 0.000000  0.000000  1.000000  0.000000", " 0.000000  0.000000  0.000000  1.000000"]
    out += [" 0.000000  0.000000  0.000000"]
    out += ["CELLP", f"  {box:.6f}  {box:.6f}  {box:.6f}  90.000000  90.000000  90.000000"]
    out += ["  0.000000   0.000000   0.000000   0.000000   0.000000   0.000000"]
    out += ["STRUC"]
    for i, (sym, lab, (x, y, z)) in enumerate(zip(model.symbols, labels, frac, strict=True)):
        out.append(f"{i + 1:4d} {sym:>2s} {lab:>8s}  1.0000  {x:.6f}  {y:.6f}  {z:.6f}    1a  1")
        out.append("                            0.000000   0.000000   0.000000  0.00")
    out += ["  0 0 0 0 0 0 0", "THERI 0"]
    out += [f"{i + 1:4d} {lab:>8s}  0.400000" for i, lab in enumerate(labels)]
    out += ["  0 0 0", "SHAPE", "  0       0       0       0   0.000000  0   192   192   192   192"]
    out += ["BOUND", "       0        1         0        1         0        1"]
    out += ["  0   0   0   0  0", "SBOND"]
    perm_el = sorted(set(model.permutable_symbols))
    dep_el = sorted({model.symbols[i] for i in model.dependent})
    pairs = [(a, b) for a in perm_el for b in dep_el]
    for n, (a, b) in enumerate(pairs, start=1):
        out.append(
            f"{n:3d} {a:>4s} {b:>4s}    0.00000  {model.threshold:9.5f}  0  1  1  0  1"
            "  0.250  2.000 127 127 127"
        )
    out += ["  0 0 0 0", "SITET"]
    for i, (sym, lab, rgb) in enumerate(zip(model.symbols, labels, colours, strict=True)):
        rr = radius(sym) * shrink[i]
        out.append(f"{i + 1:4d} {lab:>8s} {rr:7.4f} {_rgb255(rgb)} {_rgb255(rgb)} 204  0")
    out += ["  0 0 0 0 0 0", "VECTR", " 0 0 0 0 0", "VECTT", " 0 0 0 0 0"]
    out += ["SPLAN", "  0   0   0   0", "LBLAT", " -1", "LBLSP", " -1"]
    out += ["DLATM", " -1", "DLBND", " -1", "DLPLY", " -1", "PLN2D", "  0   0   0   0"]
    out += ["ATOMT"]
    for n, sym in enumerate(sorted(set(model.symbols)), start=1):
        rgb = tuple(float(c) for c in jmol_colors[atomic_numbers[sym]])
        out.append(f"{n:3d} {sym:>8s} {radius(sym):7.4f} {_rgb255(rgb)} {_rgb255(rgb)} 204")
    out += ["  0 0 0 0 0 0", "SCENE"]
    out += [" 1.000000  0.000000  0.000000  0.000000", " 0.000000  1.000000  0.000000  0.000000"]
    out += [" 0.000000  0.000000  1.000000  0.000000", " 0.000000  0.000000  0.000000  1.000000"]
    out += ["  0.000   0.000", "  0.000", "  1.000", "HBOND 0 2", "", "STYLE"]
    out += ["MODEL   0  1  0", "SURFS   0  1  1", "SECTS  32  1", "FORMS   0  1"]
    out += ["ATOMS   0  0  1", "BONDS   1", "POLYS   1", "VECTS 1.000000"]
    return out


def write_contributions_vesta(path: Path, result: AnalysisResult) -> Path:
    """VESTA file with permutable atoms coloured by contribution and dependent atoms grey."""
    path.write_text("\n".join(_vesta_lines(result)) + "\n")
    return path


# --------------------------------------------------------------------------- plots


def _new_figure(width: float, height: float) -> Any:
    """A pyplot-free Figure: no global state, no backend switch, safe in worker threads."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=120, layout="constrained")


def plot_shap_summary(path: Path, result: AnalysisResult) -> Path:
    """Beeswarm of SHAP values per feature, on at most ``_SHAP_PLOT_MAX_ROWS`` motifs."""
    shap = np.asarray(result.shap, dtype=float)
    X = np.asarray(result.features, dtype=float)
    if len(shap) > _SHAP_PLOT_MAX_ROWS:
        keep = np.sort(
            np.random.default_rng(0).choice(len(shap), _SHAP_PLOT_MAX_ROWS, replace=False)
        )
        shap, X = shap[keep], X[keep]
    names = _feature_names(result)
    from motex_stream.explain import contributions as explain

    plotter = getattr(explain, "shap_summary_plot", None)
    if plotter is not None:
        plotter(shap, X, names, path)
        return path
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":
        matplotlib.use("Agg", force=True)  # headless: the job and the service have no display
    import matplotlib.pyplot as plt
    import shap as shap_lib

    shap_lib.summary_plot(shap, X, feature_names=names, show=False, max_display=30)
    fig = plt.gcf()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_rwp_vs_size(path: Path, result: AnalysisResult) -> Path:
    """Rwp of every motif against its number of kept permutable atoms; best motif starred."""
    sizes = as_packed(result.masks).kept_counts()  # from the packed bytes, nothing unpacked
    rwp = np.asarray(result.fits.rwp, dtype=float)
    rng = np.random.default_rng(0)
    jitter = rng.uniform(-0.25, 0.25, len(sizes))  # sizes are integers: spread the columns
    b = result.best
    fig = _new_figure(6.5, 4.5)
    ax = fig.add_subplot()
    ax.scatter(sizes + jitter, rwp, s=4, alpha=0.35, color="0.3", linewidths=0, label="motifs")
    ax.scatter(
        [sizes[b]],
        [rwp[b]],
        marker="*",
        s=220,
        color="gold",
        edgecolors="k",
        zorder=3,
        label=f"best (id {b}, Rwp {rwp[b]:.4f})",
    )
    ax.set_xlabel("kept permutable atoms")
    ax.set_ylabel("Rwp")
    ax.set_title(f"{len(rwp)} motifs ({result.fits.mode} zoom)")
    ax.legend(loc="best")
    fig.savefig(path)
    return path


def plot_contributions(path: Path, result: AnalysisResult, top_k: int) -> Path:
    """Bar per permutable atom in file order; the k most negative highlighted.

    The error bar is sqrt(spread_kept² + spread_removed²): the contribution is a difference
    of two group means, so both groups' scatter bears on how well separated the atom is.
    """
    c = result.contributions
    numbers = result.atom_numbers()
    value = np.asarray(c.value, dtype=float)
    err = np.sqrt(np.asarray(c.spread_kept) ** 2 + np.asarray(c.spread_removed) ** 2)
    ranks = contribution_ranks(value)
    top = (ranks <= top_k) & np.isfinite(value)
    colours = np.where(top, "tab:orange", "0.35")
    x = np.arange(len(value))
    fig = _new_figure(max(6.0, 0.28 * len(value) + 2.0), 4.5)
    ax = fig.add_subplot()
    ax.bar(
        x,
        np.nan_to_num(value),
        yerr=np.nan_to_num(err),
        color=colours,
        capsize=2,
        error_kw={"elinewidth": 0.8, "ecolor": "0.2"},
    )
    ax.axhline(0.0, color="k", linewidth=0.8)
    step = max(1, len(x) // 40)
    ax.set_xticks(x[::step], [str(n) for n in numbers[::step]], rotation=90, fontsize=7)
    ax.set_xlabel("atom (index in starting-model file)")
    ax.set_ylabel("contribution to Rwp (SHAP)")
    ax.set_title(f"atom contributions; {int(top.sum())} most negative in orange")
    fig.savefig(path)
    return path


def plot_fit_best(path: Path, result: AnalysisResult) -> Path:
    """Observed and best-motif PDF with the difference curve offset below them."""
    r = np.asarray(result.r, dtype=float)
    g_obs = np.asarray(result.g_obs, dtype=float)
    g_best = np.asarray(result.g_best, dtype=float)
    diff = g_obs - g_best
    offset = float(np.min(np.concatenate([g_obs, g_best]))) - float(np.max(diff)) * 1.1
    fig = _new_figure(7.0, 4.5)
    ax = fig.add_subplot()
    ax.plot(r, g_obs, "o", ms=2.5, mfc="none", color="tab:blue", label="G obs")
    ax.plot(r, g_best, color="tab:red", lw=1.3, label="G best motif")
    ax.plot(r, diff + offset, color="tab:green", lw=1.0, label="difference (offset)")
    ax.axhline(offset, color="0.5", lw=0.6, ls="--")
    ax.set_xlabel("r (Å)")
    ax.set_ylabel("G(r) (Å$^{-2}$)")
    b = result.best
    ax.set_title(f"best motif id {b}: Rwp = {float(result.fits.rwp[b]):.4f}")
    ax.legend(loc="upper right")
    fig.savefig(path)
    return path


def draw_plots(
    out_dir: Path, result: AnalysisResult, top_k: int | None = None
) -> tuple[dict[str, Path], dict[str, str]]:
    """Draw every PNG into ``out_dir``: (written by file name, error by file name).

    Separate from the numerical files so that a caller (the ``analyze`` command) can give the
    user the answer first and draw afterwards: matplotlib and shap cost seconds to import and
    draw, and none of it changes a number.
    """
    out_dir = Path(out_dir)
    k = top_k if top_k is not None and top_k > 0 else _default_top_k(result)
    written: dict[str, Path] = {}
    errors: dict[str, str] = {}
    plotters: list[tuple[str, Callable[[Path, AnalysisResult], Path]]] = [
        ("shap_summary.png", plot_shap_summary),
        ("rwp_vs_size.png", plot_rwp_vs_size),
        ("contributions.png", lambda p, res: plot_contributions(p, res, k)),
        ("fit_best.png", plot_fit_best),
    ]
    for name, plotter in plotters:
        try:
            written[name] = plotter(out_dir / name, result)
        except Exception as exc:  # a plot must never cost the user the numerical results
            log.exception("could not draw %s", name)
            errors[name] = f"{type(exc).__name__}: {exc}"
    return written, errors


def refresh_report(
    out_dir: Path,
    result: AnalysisResult,
    added: dict[str, Path] | None = None,
    plot_errors: dict[str, str] | None = None,
) -> Path:
    """Rewrite ``report.json``'s file list, plot errors and timings after later work (plots
    drawn after the answer, the command's wall-clock timings); every other field is kept."""
    path = Path(out_dir) / "report.json"
    report = json.loads(path.read_text())
    report["files"] = sorted({*report.get("files", []), *(added or {})})
    if plot_errors:
        report["plot_errors"] = plot_errors
    report["timings"] = to_jsonable(result.timings)
    path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    return path


# --------------------------------------------------------------------------- entry point


def write_outputs(
    out_dir: Path, result: AnalysisResult, plots: bool = True, *, top_k: int | None = None
) -> dict[str, Path]:
    """Write every output file of one analysis into ``out_dir`` and return them by file name.

    ``top_k`` is the number of most-negative atoms the report lists and the bar chart
    highlights (default: ``settings["top_k"]``, else half the permutable atoms).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    k = top_k if top_k is not None and top_k > 0 else _default_top_k(result)
    written: dict[str, Path] = {}

    writers: list[tuple[str, Callable[[Path, AnalysisResult], Path]]] = [
        ("contributions.csv", write_contributions_csv),
        ("fits.csv", write_fits_csv),
        ("fits.npz", write_fits_npz),
        ("model_contributions.xyz", write_contributions_xyz),
        ("model_contributions.vesta", write_contributions_vesta),
        ("best_motif.xyz", write_best_motif_xyz),
    ]
    if result.refinement is not None:
        writers.append(("refined_motif.xyz", write_refined_motif_xyz))
    for name, writer in writers:
        written[name] = writer(out_dir / name, result)

    plot_errors: dict[str, str] = {}
    if plots:
        drawn, plot_errors = draw_plots(out_dir, result, k)
        written.update(drawn)

    report = build_report(result, k)
    report["files"] = sorted([*written, "report.json"])
    if plot_errors:
        report["plot_errors"] = plot_errors
    report_path = out_dir / "report.json"
    report_path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    written["report.json"] = report_path
    log.info("wrote %d output files to %s", len(written), out_dir)
    return written
