"""Pooling the fits of an emitter seen in consecutive frames of a movie.

An SMLM emitter stays on for a few frames, at one position. The fit of frame t (:mod:`.refine`)
uses frame t's photons only; so each fitted localization is averaged with the fitted localizations
of the same emitter in frames t-1 and t+1, each weighted by the inverse square of its own fit's
uncertainty (``position_sd``: the Cramer-Rao part, independent from frame to frame). The same
emitter is the mutual nearest neighbour in the next frame, within ``POOL_PX`` and within
``POOL_SIGMAS`` times the two localizations' combined uncertainty. The pooled uncertainty is that
of the weighted mean, plus the part of the localization's uncertainty that does not average out
(the network's share for neighbours' light, which persists from frame to frame).

Every frame still has its own localizations (nothing is merged); only positions and uncertainties
change, with one exception. A dim candidate that only a second frame can confirm (``refine.pending``:
its fit between ``CONFIRM_Z / sqrt(2)`` and ``CONFIRM_Z`` times its photons' bound) is kept only
where it has a partner in frame t - 1 or t + 1: noise does not repeat at one spot, an emitter that
stays on does. Measured on the validation seeds with the 3-frame model: efficiency the same or
higher on every set (training/DESIGN-CHOICES.md).

:class:`TemporalPooler` does this on a stream of frame chunks in order, holding back the last
frame of each chunk until the next arrives, so the result does not depend on the chunking.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..io.localizations import Localizations
from .neighbours import neighbour_pairs

POOL_PX = 1.0
POOL_SIGMAS = 3.0


def _mutual_nearest(i: torch.Tensor, j: torch.Tensor, d: torch.Tensor, n: int) -> torch.Tensor:
    """Of candidate links i -> j with distance d, those where each is the other's nearest."""
    inf = torch.full((n,), float("inf"), dtype=d.dtype)
    best_i = inf.scatter_reduce(0, i, d, reduce="amin")
    best_j = inf.clone().scatter_reduce(0, j, d, reduce="amin")
    return (d == best_i[i]) & (d == best_j[j])


def _tensors(x, y, uncertainty, position_sd):
    """The columns pooling uses, as float64 tensors, and which rows were fitted."""
    xs, ys, u, sd = (torch.as_tensor(np.asarray(a, float)) for a in (x, y, uncertainty, position_sd))
    return xs, ys, u, sd, torch.isfinite(sd) & (sd > 0) & torch.isfinite(u)


def partners(frame, x, y, uncertainty, position_sd) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (i, j) that are one emitter in frames t and t + 1 (tensors of row indices): both fitted
    (``position_sd`` finite), within ``POOL_PX`` and ``POOL_SIGMAS`` combined uncertainties, and
    each the other's nearest."""
    n = len(x)
    f = torch.as_tensor(np.asarray(frame, dtype=np.int64))
    xs, ys, u, _, fitted = _tensors(x, y, uncertainty, position_sd)
    # each row twice: as itself (key t) and as a partner of frame t-1 (key t-1); pairs across copies
    keys = torch.cat([f, f - 1])
    pairs = neighbour_pairs(keys, torch.cat([xs, xs]), torch.cat([ys, ys]), POOL_PX)
    i, j = pairs[:, 0], pairs[:, 1]
    across = (i < n) & (j >= n)
    i, j = i[across], j[across] - n  # i in frame t, j in frame t + 1
    ok = fitted[i] & fitted[j]
    i, j = i[ok], j[ok]
    d = torch.hypot(xs[i] - xs[j], ys[i] - ys[j])
    ok = d <= POOL_SIGMAS * torch.sqrt(u[i] ** 2 + u[j] ** 2)
    i, j, d = i[ok], j[ok], d[ok]
    keep = _mutual_nearest(i, j, d, n)
    return i[keep], j[keep]


def pool_positions(frame, x, y, uncertainty, position_sd, pairs=None):
    """Pooled (x, y, uncertainty) of a table (numpy arrays, pixels). ``position_sd`` NaN: the row
    was not fitted and is left as it is. ``pairs``: :func:`partners` of the table, if known."""
    if len(x) == 0:
        return np.asarray(x, float), np.asarray(y, float), np.asarray(uncertainty, float)
    i, j = partners(frame, x, y, uncertainty, position_sd) if pairs is None else pairs
    xs, ys, u, sd, fitted = _tensors(x, y, uncertainty, position_sd)
    w = torch.where(fitted, 1.0 / sd.clamp_min(1e-12) ** 2, 0.0)
    wx, wy = w * xs, w * ys
    W, X, Y = w.clone(), wx.clone(), wy.clone()
    for a, b in ((i, j), (j, i)):  # forward and backward partners
        W.index_add_(0, a, w[b])
        X.index_add_(0, a, wx[b])
        Y.index_add_(0, a, wy[b])
    shared = (u**2 - sd**2).clamp_min(0.0)
    px = torch.where(fitted, X / W, xs)
    py = torch.where(fitted, Y / W, ys)
    pu = torch.where(fitted, torch.sqrt(1.0 / W + shared), u)
    return px.numpy(), py.numpy(), pu.numpy()


def confirmed_across_frames(pending, pairs) -> np.ndarray:
    """Which rows to keep: every row that is not ``pending``, and the pending ones with a partner in
    frame t - 1 or t + 1 (``pairs``: :func:`partners`)."""
    keep = ~np.asarray(pending, bool)
    for rows in pairs:
        keep[rows.numpy()] = True
    return keep


def pooling_on(frame_window: int, pool: bool | None, refine: bool) -> bool:
    """Whether a run pools: ``pool`` None means for models that see several frames (movies); it
    needs the fit (``refine``)."""
    return bool(refine) and (frame_window > 1 if pool is None else bool(pool))


def pool(locs: Localizations, position_sd: np.ndarray, pending=None) -> Localizations:
    """``locs`` with pooled positions and uncertainties (all rows, any order), less the ``pending``
    rows without a partner in an adjacent frame (:func:`confirmed_across_frames`)."""
    pooled, keep = _pool_and_confirm(locs, position_sd, pending)
    return pooled.subset(keep)


def _pool_and_confirm(locs: Localizations, position_sd, pending) -> tuple[Localizations, np.ndarray]:
    columns = (locs.frame, locs.x, locs.y, locs.uncertainty, position_sd)
    pairs = partners(*columns)
    x, y, u = pool_positions(*columns, pairs=pairs)
    keep = np.ones(len(locs), bool) if pending is None else confirmed_across_frames(pending, pairs)
    return dataclasses.replace(locs, x=x, y=y, uncertainty=u), keep


class TemporalPooler:
    """Pools a stream of chunks of consecutive frames, given in order.

    ``feed(locs, position_sd, stop, pending)``: the chunk's rows, their fits' position bounds, the end
    (exclusive) of the frames it covers and which rows only an adjacent frame can confirm (None:
    none); returns the rows whose partners are all known (every frame but the chunk's last).
    ``flush()`` returns the rest. Rows come out in the order they went in.
    """

    def __init__(self) -> None:
        self._rows = Localizations()
        self._sd = np.zeros(0)
        self._pending = np.zeros(0, bool)
        self._held_from = None  # first frame not yet returned

    def feed(self, locs: Localizations, position_sd, stop: int, pending=None) -> Localizations:
        rows = Localizations.concatenate([self._rows, locs])
        sd = np.concatenate([self._sd, np.asarray(position_sd, float)])
        new_pending = np.zeros(len(locs), bool) if pending is None else np.asarray(pending, bool)
        pending = np.concatenate([self._pending, new_pending])
        pooled, keep = _pool_and_confirm(rows, sd, pending)
        first = self._held_from if self._held_from is not None else -np.inf
        ready = (rows.frame >= first) & (rows.frame < stop - 1)
        held = rows.frame >= stop - 2  # frame stop-2: the held frame's backward partners
        self._rows, self._sd, self._pending = rows.subset(held), sd[held], pending[held]
        self._held_from = stop - 1
        return pooled.subset(ready & keep)

    def flush(self) -> Localizations:
        if self._held_from is None or len(self._rows) == 0:
            return Localizations()
        pooled, keep = _pool_and_confirm(self._rows, self._sd, self._pending)
        out = pooled.subset((pooled.frame >= self._held_from) & keep)
        self._rows, self._sd, self._pending = Localizations(), np.zeros(0), np.zeros(0, bool)
        return out
