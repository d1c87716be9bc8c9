"""The PSF measured from an image stack of beads: a pixelated model, as SMAP and DECODE fit one.

Beads (sub-resolution fluorescent spheres on the coverslip) sit still at random sub-pixel
positions, so each samples the same pixel-integrated PSF at a different sub-pixel offset; together
they sample it densely. :func:`measure_psf`

1. finds the beads on the stack's maximum projection (``skimage.feature.peak_local_max``) and keeps
   those with no other bead within a patch's reach and a whole patch inside the frame;
2. takes the planes in focus: all of them, averaged, where all are as sharp to within
   ``SAME_FOCUS`` (a movie taken in focus); else, of a z-scan, the sharpest plane (largest
   peak-to-total ratio of the beads' light) and the planes next to it as sharp to within
   ``FOCUS_TOLERANCE``;
3. fits a smooth surface to every bead's pixels at once, as a function of the offset of the pixel's
   centre from the bead (background subtracted, over the bead's photons): a tensor-product cubic
   B-spline with knots every ``KNOT_SPACING_PX``, by least squares with a small penalty on the
   second differences of its coefficients (a P-spline: well posed where few beads sample an
   offset); alternated ``ITERATIONS`` times with each bead's position, photons and background,
   fitted by Gauss-Newton to the current surface;
4. centres the surface on its centroid and samples it as a pixel table (simulation/psf.py), tapered
   and normalised like the simulator's.

The result's ``residual`` is the RMS misfit of the beads' pixels relative to their peak: for
bright beads it is the shot noise plus what the model misses.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import sparse
from scipy.interpolate import BSpline, bisplev
from scipy.optimize import minimize_scalar
from scipy.sparse.linalg import spsolve
from scipy.special import erf
from skimage.feature import peak_local_max

from ..errors import InputError
from ..measured_psf import MeasuredPsf
from ..simulation.psf import OVERSAMPLE, taper_table

KNOT_SPACING_PX = 0.5
DEGREE = 3
PENALTY = 1e-3  # of the normal matrix's mean diagonal, on squared second differences
ITERATIONS = 3
GAUSS_NEWTON_STEPS = 6
FOCUS_TOLERANCE = 0.005
SAME_FOCUS = 0.05  # planes all this sharp are one focus: all are averaged
DETECT_SNR = 20.0  # bead threshold on the projection: noise deviations above its median
MIN_BEADS = 3
RING_RATIO = 0.3  # a maximum this much fainter than a bead near it is that bead's ring
MAX_BEADS = 500
MIN_RADIUS_PX, MAX_RADIUS_PX = 4, 20
RADIUS_SIGMAS = 8.0  # ~1.7 lambda / NA: beyond the Airy pattern's third ring, and aberrated halos


def measure_psf(stack, pixel_size_nm: float = 100.0, radius_px: int | None = None) -> MeasuredPsf:
    """The PSF of a bead image or stack (Z, Y, X) or (Y, X), any offset and gain (the model is
    normalised per bead). :class:`InputError` where too few isolated beads are seen."""
    stack = _as_stack(stack)
    projection = stack.max(axis=0)
    peaks, heights = _find_beads(projection)
    if len(peaks) < MIN_BEADS:
        raise InputError(
            f"found {len(peaks)} bead(s), at least {MIN_BEADS} are needed: beads must stand out "
            f"{DETECT_SNR:g} noise deviations above the background"
        )
    sharpness = np.array([_sharpness(plane, peaks) for plane in stack])
    focus = _focus_planes(sharpness)
    image = stack[focus].mean(axis=0)
    sigma0 = _moment_sigma(image, peaks)
    radius = radius_px or int(np.clip(np.ceil(RADIUS_SIGMAS * sigma0 + 0.5), MIN_RADIUS_PX, MAX_RADIUS_PX))
    peaks = peaks[~_rings(peaks, heights, radius)]
    beads = _isolated(peaks, image.shape, radius)
    if len(beads) < MIN_BEADS:
        raise InputError(
            f"{len(beads)} of {len(peaks)} beads are isolated (no other bead within {2 * radius} px, "
            f"{radius} px from the frame's edge), at least {MIN_BEADS} are needed"
        )
    beads = beads[:MAX_BEADS]
    boxes = np.stack([image[r - radius : r + radius + 1, c - radius : c + radius + 1] for r, c in beads])
    fit = _SurfaceFit(boxes, radius)
    table = fit.table(OVERSAMPLE)
    sigma = table_sigma_px(table, OVERSAMPLE)
    source = {
        "beads": len(beads),
        "planes": [int(focus.start), int(focus.stop - 1)],
        "of_planes": len(stack),
        "residual": round(fit.residual, 5),
        "radius_px": radius,
    }
    return MeasuredPsf(table, float(pixel_size_nm), OVERSAMPLE, sigma, source)


# --------------------------------------------------------------------------------------------------
# 1-2. beads and focus


def _as_stack(stack) -> np.ndarray:
    a = np.asarray(stack, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or min(a.shape[1:]) < 2 * MIN_RADIUS_PX + 1:
        raise InputError(f"beads must be an image (Y, X) or a stack (Z, Y, X) of >= 9 x 9 px, got {a.shape}")
    if not np.isfinite(a).all():
        raise InputError("the bead stack holds values that are not finite numbers")
    return a


def _noise(image: np.ndarray) -> float:
    """Robust noise deviation: the median absolute difference of neighbouring pixels."""
    d = np.diff(image, axis=1).ravel()
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2.0)) or 1e-12


def _find_beads(projection: np.ndarray) -> np.ndarray:
    threshold = np.median(projection) + DETECT_SNR * _noise(projection)
    peaks = peak_local_max(projection, min_distance=2, threshold_abs=threshold, exclude_border=False)
    height = projection[peaks[:, 0], peaks[:, 1]] - np.median(projection)
    order = np.argsort(-height)  # brightest first
    return peaks[order], height[order]


def _patch(image: np.ndarray, r: int, c: int, radius: int) -> np.ndarray:
    return image[max(r - radius, 0) : r + radius + 1, max(c - radius, 0) : c + radius + 1]


def _border_median(patch: np.ndarray) -> float:
    return float(np.median(np.concatenate([patch[0], patch[-1], patch[1:-1, 0], patch[1:-1, -1]])))


def _signal(patch: np.ndarray) -> np.ndarray:
    return patch - _border_median(patch)


def _sharpness(plane: np.ndarray, peaks: np.ndarray) -> float:
    values = []
    for r, c in peaks[:50]:
        s = _signal(_patch(plane, r, c, MIN_RADIUS_PX))
        total = s.sum()
        if total > 0:
            values.append(s.max() / total)
    return float(np.median(values)) if values else 0.0


def _focus_planes(sharpness: np.ndarray) -> slice:
    best = int(np.argmax(sharpness))
    if sharpness.min() >= (1.0 - SAME_FOCUS) * sharpness[best]:  # a movie in focus, not a z-scan
        return slice(0, len(sharpness))
    sharp = sharpness >= (1.0 - FOCUS_TOLERANCE) * sharpness[best]
    lo, hi = best, best + 1
    while lo > 0 and sharp[lo - 1]:
        lo -= 1
    while hi < len(sharp) and sharp[hi]:
        hi += 1
    return slice(lo, hi)


def _moment_sigma(image: np.ndarray, peaks: np.ndarray) -> float:
    """A first PSF width [px] from the second moment of the brightest beads (for the patch size)."""
    sigmas = []
    for r, c in peaks[:20]:
        s = _signal(_patch(image, r, c, MIN_RADIUS_PX)).clip(min=0)
        if s.shape != (2 * MIN_RADIUS_PX + 1,) * 2 or s.sum() <= 0:
            continue
        yy, xx = np.mgrid[: s.shape[0], : s.shape[1]] - MIN_RADIUS_PX
        cy, cx = (yy * s).sum() / s.sum(), (xx * s).sum() / s.sum()
        sigmas.append(np.sqrt((((yy - cy) ** 2 + (xx - cx) ** 2) * s).sum() / (2 * s.sum())))
    return float(np.median(sigmas)) if sigmas else 1.3


def _rings(peaks: np.ndarray, heights: np.ndarray, radius: int) -> np.ndarray:
    """Which maxima are a brighter bead's ring: under ``RING_RATIO`` of its height, within reach of
    its patch (peaks brightest first)."""
    d = np.abs(peaks[:, None, :] - peaks[None, :, :]).max(axis=2)
    brighter = np.tri(len(peaks), k=-1, dtype=bool)  # [i, j]: j comes before i
    faint = heights[:, None] < RING_RATIO * heights[None, :]
    return (brighter & faint & (d <= 2 * radius)).any(axis=1)


def _isolated(peaks: np.ndarray, shape: tuple[int, int], radius: int) -> np.ndarray:
    H, W = shape
    inside = (peaks[:, 0] >= radius) & (peaks[:, 0] < H - radius)
    inside &= (peaks[:, 1] >= radius) & (peaks[:, 1] < W - radius)
    d = np.abs(peaks[:, None, :] - peaks[None, :, :]).max(axis=2)  # Chebyshev distance
    np.fill_diagonal(d, np.iinfo(d.dtype).max)
    alone = d.min(axis=1) > 2 * radius if len(peaks) > 1 else np.ones(len(peaks), bool)
    return peaks[inside & alone]


# --------------------------------------------------------------------------------------------------
# 3-4. the surface


class _SurfaceFit:
    """The P-spline surface f(v, u) of every bead's pixels: box (r, c) of bead b holds
    ``background[b] + photons[b] * f(r - R - y[b], c - R - x[b])``."""

    def __init__(self, boxes: np.ndarray, radius: int) -> None:
        self.boxes, self.radius = boxes, radius
        half = radius + 1.0
        base = np.arange(-half, half + KNOT_SPACING_PX / 2, KNOT_SPACING_PX)
        self.knots = np.concatenate([[base[0]] * DEGREE, base, [base[-1]] * DEGREE])
        self.n = len(self.knots) - DEGREE - 1  # coefficients per axis
        self.background = np.array([_border_median(b) for b in boxes])
        signal = boxes - self.background[:, None, None]
        self.photons = signal.sum(axis=(1, 2))
        centre = signal[:, radius - 2 : radius + 3, radius - 2 : radius + 3].clip(min=0)
        grid = np.arange(-2, 3)
        weight = centre.sum(axis=(1, 2))
        self.y = (centre.sum(axis=2) * grid).sum(axis=1) / weight
        self.x = (centre.sum(axis=1) * grid).sum(axis=1) / weight
        for _ in range(ITERATIONS):
            self.coef = self._fit_surface()
            self._fit_beads()
        self.coef = self._fit_surface()
        model = np.stack([self._box(b)[0] for b in range(len(boxes))])
        peak = np.max(model - self.background[:, None, None])
        self.residual = float(np.sqrt(np.mean((boxes - model) ** 2)) / peak)

    # the surface, given the beads
    def _design(self, values: np.ndarray) -> sparse.csr_array:
        inside = np.clip(values, self.knots[0], self.knots[-1] - 1e-9)
        return BSpline.design_matrix(inside, self.knots, DEGREE)

    def _fit_surface(self) -> np.ndarray:
        size = self.boxes.shape[1]
        axis = np.arange(size) - self.radius
        v = (axis[None, :, None] - self.y[:, None, None]) * np.ones((1, 1, size))  # (B, S, S)
        u = (axis[None, None, :] - self.x[:, None, None]) * np.ones((1, size, 1))
        target = (self.boxes - self.background[:, None, None]) / self.photons[:, None, None]
        dv, du = self._design(v.ravel()), self._design(u.ravel())
        k = DEGREE + 1
        rows = np.repeat(np.arange(v.size), k * k)
        iv, wv = dv.indices.reshape(-1, k), dv.data.reshape(-1, k)
        iu, wu = du.indices.reshape(-1, k), du.data.reshape(-1, k)
        cols = (iv[:, :, None] * self.n + iu[:, None, :]).ravel()
        data = (wv[:, :, None] * wu[:, None, :]).ravel()
        design = sparse.csr_array((data, (rows, cols)), shape=(v.size, self.n * self.n))
        normal = design.T @ design  # sparse: each coefficient meets its 7 x 7 neighbours only
        second = sparse.csr_array(np.diff(np.eye(self.n), n=2, axis=0))
        d2, eye = second.T @ second, sparse.identity(self.n, format="csr")
        penalty = sparse.kron(d2, eye) + sparse.kron(eye, d2)
        lam = PENALTY * normal.diagonal().mean()
        return spsolve((normal + lam * penalty).tocsc(), design.T @ target.ravel())

    def _tck(self):
        return [self.knots, self.knots, self.coef, DEGREE, DEGREE]

    def evaluate(self, v: np.ndarray, u: np.ndarray, dv: int = 0, du: int = 0) -> np.ndarray:
        """f (or a derivative) on the grid v x u (each ascending)."""
        inside_v = np.clip(v, self.knots[0], self.knots[-1])
        inside_u = np.clip(u, self.knots[0], self.knots[-1])
        out = bisplev(inside_v, inside_u, self._tck(), dx=dv, dy=du)
        out = np.atleast_2d(out)
        outside = (np.abs(v) > self.radius + 0.5)[:, None] | (np.abs(u) > self.radius + 0.5)[None, :]
        return np.where(outside, 0.0, out)

    # the beads, given the surface
    def _box(self, b: int):
        axis = np.arange(self.boxes.shape[1]) - self.radius
        v, u = axis - self.y[b], axis - self.x[b]
        f = self.evaluate(v, u)
        model = self.background[b] + self.photons[b] * f
        return model, f, v, u

    def _fit_beads(self) -> None:
        mean_x, mean_y = self.x.mean(), self.y.mean()
        for b in range(len(self.boxes)):
            data = self.boxes[b].ravel()
            for _ in range(GAUSS_NEWTON_STEPS):
                model, f, v, u = self._box(b)
                fv, fu = self.evaluate(v, u, dv=1), self.evaluate(v, u, du=1)
                n = self.photons[b]
                jac = np.stack([-n * fu.ravel(), -n * fv.ravel(), f.ravel(), np.ones(f.size)], axis=1)
                step = np.linalg.lstsq(jac, data - model.ravel(), rcond=None)[0]
                step[:2] = np.clip(step[:2], -0.5, 0.5)
                self.x[b] += step[0]
                self.y[b] += step[1]
                self.photons[b] = max(self.photons[b] + step[2], 1e-9)
                self.background[b] += step[3]
        # the surface and all positions may shift together without changing the fit: hold the
        # positions' mean where it was, so that the alternation does not drift
        self.x += mean_x - self.x.mean()
        self.y += mean_y - self.y.mean()

    # the table
    def table(self, oversample: int) -> np.ndarray:
        """The surface centred on its centroid, as a pixel table of half-width
        ``oversample * (radius + 1)`` samples."""
        half = oversample * (self.radius + 1)
        offsets = np.arange(-half, half + 1) / oversample
        f = self.evaluate(offsets, offsets).clip(min=0)
        near = np.abs(offsets) <= 2.5 * max(1.0, self.radius / RADIUS_SIGMAS)
        core = f[np.ix_(near, near)]
        cy = (core.sum(axis=1) * offsets[near]).sum() / core.sum()
        cx = (core.sum(axis=0) * offsets[near]).sum() / core.sum()
        f = self.evaluate(offsets + cy, offsets + cx).clip(min=0)
        return taper_table(torch.as_tensor(f)[None], oversample)[0].numpy()


def table_sigma_px(table: np.ndarray, oversample: int) -> float:
    """Sigma [px] of the Gaussian, integrated over a pixel, that fits the table best (least squares,
    amplitude in closed form)."""
    half = table.shape[0] // 2
    offsets = (np.arange(table.shape[0]) - half) / oversample

    def misfit(log_sigma: float) -> float:
        s = np.exp(log_sigma) * np.sqrt(2.0)
        g1 = 0.5 * (erf((offsets + 0.5) / s) - erf((offsets - 0.5) / s))
        g = g1[:, None] * g1[None, :]
        return -((g * table).sum() ** 2) / (g * g).sum()

    best = minimize_scalar(misfit, bounds=(np.log(0.2), np.log(20.0)), method="bounded")
    return float(np.exp(best.x))
