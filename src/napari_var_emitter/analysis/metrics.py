"""Localization metrics of the SMLM challenge 2016 (Sage et al. 2019), docs/CONVENTIONS.md, section 4.

Positions come in as :class:`~napari_var_emitter.localizations.Localizations` (pixels, 0-based
frames); distances, RMSE and biases are reported in nm (``pixel_size_nm`` per pixel). JI, recall
and precision are percentages, like the challenge reports them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from ..errors import InputError
from ..io.localizations import Localizations

METHODS = ("hungarian", "greedy")


# --------------------------------------------------------------------------------------------------
# Matching


def _frame_groups(frame: np.ndarray) -> dict[int, np.ndarray]:
    """Frame number -> indices of the rows in that frame."""
    if len(frame) == 0:
        return {}
    order = np.argsort(frame, kind="stable")
    frames, starts = np.unique(frame[order], return_index=True)
    return dict(zip(frames.tolist(), np.split(order, starts[1:]), strict=True))


def _match_frame(distance: np.ndarray, tolerance: float, method: str) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one pairs (rows, cols) of a (n_pred, n_truth) distance matrix within ``tolerance``."""
    if method == "hungarian":
        # Pairs beyond tolerance cost more than any set of allowed pairs, so the assignment first
        # maximises the number of matches, then minimises their total distance.
        too_far = distance > tolerance
        cost = np.where(too_far, tolerance * (min(distance.shape) + 1) * 2.0, distance)
        rows, cols = linear_sum_assignment(cost)
        keep = ~too_far[rows, cols]
        return rows[keep], cols[keep]
    # Greedy, as the challenge's tool: the nearest remaining pair first.
    rows, cols = np.nonzero(distance <= tolerance)
    order = np.argsort(distance[rows, cols], kind="stable")
    used_pred, used_truth = set(), set()
    out_rows, out_cols = [], []
    for r, c in zip(rows[order].tolist(), cols[order].tolist(), strict=True):
        if r not in used_pred and c not in used_truth:
            used_pred.add(r)
            used_truth.add(c)
            out_rows.append(r)
            out_cols.append(c)
    return np.asarray(out_rows, dtype=np.int64), np.asarray(out_cols, dtype=np.int64)


def match(
    pred: Localizations,
    truth: Localizations,
    pixel_size_nm: float,
    tolerance_nm: float = 250.0,
    method: str = "hungarian",
) -> tuple[np.ndarray, np.ndarray]:
    """Match predictions to truths one to one, per frame, within ``tolerance_nm`` lateral distance.

    ``method="hungarian"``: the most pairs, then the least total distance (``linear_sum_assignment``);
    ``method="greedy"``: nearest pair first, as the challenge's own tool. Returns index arrays
    ``(pred_idx, truth_idx)`` of equal length, ordered by frame.
    """
    if method not in METHODS:
        raise InputError(f"matching method must be one of {', '.join(METHODS)}, got {method!r}")
    if not (pixel_size_nm > 0 and tolerance_nm > 0):
        raise InputError(f"pixel_size_nm and tolerance_nm must be > 0, got {pixel_size_nm}, {tolerance_nm}")
    tolerance_px = float(tolerance_nm) / float(pixel_size_nm)
    pred_groups, truth_groups = _frame_groups(pred.frame), _frame_groups(truth.frame)
    pred_out, truth_out = [], []
    for t in sorted(set(pred_groups) & set(truth_groups)):
        p, g = pred_groups[t], truth_groups[t]  # indices in this frame
        p = p[np.isfinite(pred.x[p]) & np.isfinite(pred.y[p])]
        if len(p) == 0:
            continue
        distance = np.hypot(
            pred.x[p, None] - truth.x[None, g], pred.y[p, None] - truth.y[None, g]
        )  # (n_p, n_t)
        rows, cols = _match_frame(distance, tolerance_px, method)
        pred_out.append(p[rows])
        truth_out.append(g[cols])
    if not pred_out:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(pred_out).astype(np.int64), np.concatenate(truth_out).astype(np.int64)


# --------------------------------------------------------------------------------------------------
# Precision: Cramer-Rao bound and isolation


CRLB_BORDER_SIGMAS = 3.0  # RMSE/CRLB: only truths whose PSF lies in the frame (3 sigma from its edges)


def crlb_nm(photons, background, sigma_nm, pixel_size_nm, excess_noise: float = 2.0):
    """Per-axis 1-sigma Cramer-Rao bound (nm) of a Gaussian PSF on pixels (Mortensen et al. 2010).

    ``sa2 = s^2 + a^2/12``; ``var = F * sa2 / N * (16/9 + 8 pi sa2 b / (N a^2))`` with ``N`` photons,
    ``b`` background photons per pixel, ``s`` the PSF sigma and ``a`` the pixel size (nm), ``F`` the
    excess-noise factor (2 for EMCCD, 1 otherwise). Broadcasts over numpy arrays.
    """
    n = np.asarray(photons, dtype=np.float64)
    b = np.asarray(background, dtype=np.float64)
    s = np.asarray(sigma_nm, dtype=np.float64)
    a = float(pixel_size_nm)
    sa2 = s**2 + a**2 / 12.0
    var = excess_noise * sa2 / n * (16.0 / 9.0 + 8.0 * math.pi * sa2 * b / (n * a**2))
    return np.sqrt(var)


def isolated(
    locs: Localizations, pixel_size_nm: float, isolation_nm: float, others: Localizations | None = None
) -> np.ndarray:
    """(N,) bool: no other row of the same frame, and no row of ``others`` (emitters that are not
    in ``locs``, such as those centred just outside the frame), lies within ``isolation_nm``."""
    n = len(locs)
    extra = 0 if others is None else len(others)
    if n + extra < 2:
        return np.ones(n, dtype=bool)
    px = float(pixel_size_nm)
    # Frames become a third axis, far enough apart that rows of different frames never meet.
    frame_gap = 4.0 * isolation_nm + 1.0

    def points(t: Localizations) -> np.ndarray:  # (N, 3) nm
        return np.column_stack([t.x * px, t.y * px, t.frame * frame_gap])

    everyone = points(locs) if not extra else np.concatenate([points(locs), points(others)])
    distance, _ = cKDTree(everyone).query(points(locs), k=2)  # (N, 2): itself, then its nearest neighbour
    return distance[:, 1] > isolation_nm


def uncertainty_calibration(
    pred: Localizations, truth: Localizations, pred_idx: np.ndarray, truth_idx: np.ndarray
) -> float:
    """``sqrt(mean((error / predicted uncertainty)^2))`` over matched pairs and both axes.

    1.0 means the predicted (per-axis, 1-sigma) uncertainties are calibrated, > 1 over-confident.
    Pairs whose predicted uncertainty is NaN or not positive are left out; NaN when none is left.
    """
    u = pred.uncertainty[pred_idx]
    ok = np.isfinite(u) & (u > 0)
    if not np.any(ok):
        return math.nan
    dx = (pred.x[pred_idx] - truth.x[truth_idx])[ok] / u[ok]
    dy = (pred.y[pred_idx] - truth.y[truth_idx])[ok] / u[ok]
    return float(np.sqrt(np.mean(np.concatenate([dx, dy]) ** 2)))


# --------------------------------------------------------------------------------------------------
# Report


@dataclass
class MetricReport:
    """Challenge metrics of one evaluation. Percentages: jaccard, recall, precision, efficiency.

    RMSE and biases in nm (bias = mean of prediction - truth over matched pairs); undefined values
    (no pairs, nothing to find...) are NaN.
    """

    n_pred: int
    n_truth: int
    tp: int
    fp: int
    fn: int
    jaccard: float
    recall: float
    precision: float
    rmse_nm: float  # lateral: sqrt(mean(dx^2 + dy^2))
    rmse_x_nm: float
    rmse_y_nm: float
    efficiency: float  # 100 - sqrt((100 - JI)^2 + (RMSE / 1 nm)^2)
    bias_x_nm: float
    bias_y_nm: float
    rmse_over_crlb: float  # on isolated emitters: lateral RMSE / sqrt(mean(2 var_CRLB))
    calibration: float  # sqrt(mean((error / predicted uncertainty)^2)); 1.0 = calibrated
    n_crlb: int = 0  # matched pairs behind rmse_over_crlb
    method: str = "hungarian"
    tolerance_nm: float = 250.0

    def as_dict(self) -> dict:
        return asdict(self)

    _COLUMNS = (
        ("n_pred", "{:>7d}"),
        ("n_truth", "{:>7d}"),
        ("tp", "{:>6d}"),
        ("fp", "{:>6d}"),
        ("fn", "{:>6d}"),
        ("jaccard", "{:>7.2f}"),
        ("recall", "{:>7.2f}"),
        ("precision", "{:>9.2f}"),
        ("rmse_nm", "{:>8.2f}"),
        ("efficiency", "{:>10.2f}"),
        ("bias_x_nm", "{:>9.2f}"),
        ("bias_y_nm", "{:>9.2f}"),
        ("rmse_over_crlb", "{:>14.3f}"),
        ("n_crlb", "{:>6d}"),
        ("calibration", "{:>11.3f}"),
    )

    @classmethod
    def header(cls) -> str:
        """Column names aligned with :meth:`row`."""
        widths = [len(fmt.format(0)) for _, fmt in cls._COLUMNS]
        return " ".join(name.rjust(w) for (name, _), w in zip(cls._COLUMNS, widths, strict=True))

    def row(self) -> str:
        """One line of a results table (see :meth:`header`)."""
        return " ".join(fmt.format(getattr(self, name)) for name, fmt in self._COLUMNS)


def _percent(numerator: int, denominator: int) -> float:
    return 100.0 * numerator / denominator if denominator > 0 else math.nan


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(values**2))) if len(values) else math.nan


def evaluate(
    pred: Localizations,
    truth: Localizations,
    pixel_size_nm: float,
    tolerance_nm: float = 250.0,
    method: str = "hungarian",
    excess_noise: float = 2.0,
    crlb_min_photons: float = 0.0,
    isolation_nm: float = 1000.0,
    unseen: Localizations | None = None,
    frame_shape: tuple[int, int] | None = None,
) -> MetricReport:
    """Match ``pred`` to ``truth`` (see :func:`match`) and compute the challenge metrics.

    ``rmse_over_crlb`` uses the matched pairs whose truth is isolated (no other truth of its frame
    within ``isolation_nm``) and has at least ``crlb_min_photons`` photons, with the CRLB of the
    truth's photons, background and sigma (:func:`crlb_nm`, pixel size as ``a``). ``unseen``:
    emitters that light the frame but are not in ``truth`` (a simulation's emitters centred just
    outside the frame); they count as neighbours, so a truth near the border beside one of them
    is not called isolated. ``frame_shape`` (H, W): the bound assumes the whole PSF is recorded,
    so truths closer than ``CRLB_BORDER_SIGMAS`` PSF widths to the frame's border are left out.
    """
    px = float(pixel_size_nm)
    pred_idx, truth_idx = match(pred, truth, px, tolerance_nm, method)
    tp = len(pred_idx)
    fp, fn = len(pred) - tp, len(truth) - tp
    jaccard = _percent(tp, tp + fp + fn)

    dx = (pred.x[pred_idx] - truth.x[truth_idx]) * px  # (TP,) nm
    dy = (pred.y[pred_idx] - truth.y[truth_idx]) * px
    rmse = _rms(np.hypot(dx, dy))
    efficiency = 100.0 - math.sqrt((100.0 - jaccard) ** 2 + rmse**2)

    # Precision against the Cramer-Rao bound, on isolated, bright-enough, fully described truths.
    n_ph = truth.photons[truth_idx]
    bg = truth.background[truth_idx]
    sigma_nm = truth.sigma[truth_idx] * px
    usable = (
        isolated(truth, px, isolation_nm, unseen)[truth_idx]
        & np.isfinite(n_ph)
        & (n_ph > 0)
        & (n_ph >= crlb_min_photons)
        & np.isfinite(bg)
        & (bg >= 0)
        & np.isfinite(sigma_nm)
        & (sigma_nm > 0)
    )
    if frame_shape is not None:
        H, W = frame_shape
        x, y, s = truth.x[truth_idx], truth.y[truth_idx], CRLB_BORDER_SIGMAS * truth.sigma[truth_idx]
        usable &= (x + 0.5 >= s) & (W - 0.5 - x >= s) & (y + 0.5 >= s) & (H - 0.5 - y >= s)
    if np.any(usable):
        crlb = crlb_nm(n_ph[usable], bg[usable], sigma_nm[usable], px, excess_noise)  # per axis
        rmse_over_crlb = _rms(np.hypot(dx[usable], dy[usable])) / float(np.sqrt(np.mean(2.0 * crlb**2)))
    else:
        rmse_over_crlb = math.nan

    return MetricReport(
        n_pred=len(pred),
        n_truth=len(truth),
        tp=tp,
        fp=fp,
        fn=fn,
        jaccard=jaccard,
        recall=_percent(tp, len(truth)),
        precision=_percent(tp, len(pred)),
        rmse_nm=rmse,
        rmse_x_nm=_rms(dx),
        rmse_y_nm=_rms(dy),
        efficiency=efficiency,
        bias_x_nm=float(np.mean(dx)) if tp else math.nan,
        bias_y_nm=float(np.mean(dy)) if tp else math.nan,
        rmse_over_crlb=rmse_over_crlb,
        calibration=uncertainty_calibration(pred, truth, pred_idx, truth_idx),
        n_crlb=int(np.count_nonzero(usable)),
        method=method,
        tolerance_nm=float(tolerance_nm),
    )


# --------------------------------------------------------------------------------------------------
# Pixel-grid bias


def subpixel_flatness(locs: Localizations, bins: int = 10) -> float:
    """max / min count over ``bins`` bins of the sub-pixel positions (x and y pooled).

    The sub-pixel position is the fractional part of ``x + 0.5`` (0 at the pixel's left edge, 0.5 at its
    centre). 1.0 is perfectly flat; gridding (positions pulled to pixel centres) makes it large; inf
    when a bin is empty.
    """
    if bins < 1:
        raise InputError(f"bins must be >= 1, got {bins}")
    values = np.concatenate([locs.x, locs.y])
    values = values[np.isfinite(values)]
    fraction = np.mod(values + 0.5, 1.0)  # in [0, 1)
    counts, _ = np.histogram(fraction, bins=bins, range=(0.0, 1.0))
    if counts.min() == 0:
        return math.inf
    return float(counts.max() / counts.min())


__all__ = [
    "MetricReport",
    "crlb_nm",
    "evaluate",
    "isolated",
    "match",
    "subpixel_flatness",
    "uncertainty_calibration",
]
