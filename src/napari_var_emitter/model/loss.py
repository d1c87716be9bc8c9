"""Training targets and the multi-scale loss.

``VAREmitterLoss`` = sum over levels of ``scale_weights[k]`` x BCE(emitter occupancy of the
level's cells) + at the localization levels a DECODE-style term: a count likelihood plus a
Gaussian-mixture likelihood of the true emitters' (x, y, photons) under the predicted
probabilities, offsets and uncertainties (Speiser et al., Nature Methods 2021), plus a
background regression.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import PHOTON_NORM

LOG_2PI = math.log(2 * math.pi)


def cell_index(xy: torch.Tensor, stride: float, size: int) -> torch.Tensor:
    """Cell of a pixel coordinate (pixel centre = integer) on a grid of ``stride`` px cells."""
    return torch.floor((xy + 0.5) / stride).long().clamp(0, size - 1)


def occupancy_targets(emitters: torch.Tensor, batch: int, grids, strides) -> list[torch.Tensor]:
    """(N, 6) [b, t, x, y, photons, sigma] of the predicted frame -> per level (B, h, w) in {0, 1}."""
    targets = []
    b = emitters[:, 0].long()
    for (h, w), s in zip(grids, strides, strict=False):
        occ = torch.zeros(batch, h, w, device=emitters.device)
        if len(emitters):
            occ[b, cell_index(emitters[:, 3], s, h), cell_index(emitters[:, 2], s, w)] = 1.0
        targets.append(occ)
    return targets


def _normal_logpdf(x, mu, sigma):
    return -0.5 * ((x - mu) / sigma) ** 2 - torch.log(sigma) - 0.5 * LOG_2PI


class VAREmitterLoss(nn.Module):
    def __init__(
        self,
        scale_weights=(0.5, 0.7, 0.9, 1.0),
        loc_weight: float = 1.0,
        background_weight: float = 1.0,
        neighbourhood: int = 2,
    ):
        super().__init__()
        self.scale_weights = tuple(float(w) for w in scale_weights)
        self.loc_weight = loc_weight
        self.background_weight = background_weight
        self.neighbourhood = neighbourhood  # mixture over (2n+1)^2 cells around each true emitter

    def weight(self, level: int) -> float:
        return self.scale_weights[min(level, len(self.scale_weights) - 1)]

    def forward(self, outputs, emitters, background_BHW, loc_levels) -> tuple[torch.Tensor, dict]:
        """outputs: list of level dicts (blocks.decode_outputs + "stride"); emitters: (N, 6) of the
        predicted frame; background_BHW: expected background photons per pixel."""
        B = outputs[0]["logits"].shape[0]
        grids = [tuple(o["logits"].shape[-2:]) for o in outputs]
        strides = [o["stride"] for o in outputs]
        occupancy = occupancy_targets(emitters, B, grids, strides)
        parts = {}
        total = outputs[0]["logits"].new_zeros(())
        per_emitter = 1.0 / (len(emitters) + B)  # every level's BCE is summed and counted per emitter
        for k, (out, occ) in enumerate(zip(outputs, occupancy, strict=False)):
            if self.weight(k) > 0:
                bce = F.binary_cross_entropy_with_logits(out["logits"], occ, reduction="sum") * per_emitter
                parts[f"bce_{k}"] = bce.detach()
                total = total + self.weight(k) * bce
        for k in loc_levels:
            count, gmm = self.localization_terms(outputs[k], emitters)
            bg = self.background_term(outputs[k], background_BHW)
            parts[f"count_{k}"], parts[f"gmm_{k}"], parts[f"bg_{k}"] = (
                count.detach(),
                gmm.detach(),
                bg.detach(),
            )
            total = total + self.loc_weight * (count + gmm) + self.background_weight * bg
        parts["total"] = total.detach()
        return total, parts

    def localization_terms(self, out: dict, emitters: torch.Tensor):
        p = torch.sigmoid(out["logits"])  # (B, h, w)
        B, h, w = p.shape
        s = out["stride"]
        # count: the number of emitters per frame ~ Normal(sum p, sum p(1-p))
        n_true = (
            torch.bincount(emitters[:, 0].long(), minlength=B).float() if len(emitters) else p.new_zeros(B)
        )
        mean = p.sum((1, 2))
        var = (p * (1 - p)).sum((1, 2)).clamp_min(1e-3)
        count = (0.5 * (n_true - mean) ** 2 / var + 0.5 * torch.log(var)).mean()
        if len(emitters) == 0:
            return count, p.new_zeros(())
        # mixture over a neighbourhood of cells around each true emitter
        b = emitters[:, 0].long()
        x, y, n = emitters[:, 2], emitters[:, 3], emitters[:, 4] / PHOTON_NORM
        r0, c0 = cell_index(y, s, h), cell_index(x, s, w)
        d = torch.arange(-self.neighbourhood, self.neighbourhood + 1, device=p.device)
        rr = (r0[:, None, None] + d[None, :, None]).expand(-1, len(d), len(d)).reshape(len(b), -1)  # (N, K)
        cc = (c0[:, None, None] + d[None, None, :]).expand(-1, len(d), len(d)).reshape(len(b), -1)
        inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        rr, cc = rr.clamp(0, h - 1), cc.clamp(0, w - 1)
        bb = b[:, None].expand_as(rr)
        mu_x = (cc + 0.5) * s - 0.5 + out["offset"][bb, 0, rr, cc] * s
        mu_y = (rr + 0.5) * s - 0.5 + out["offset"][bb, 1, rr, cc] * s
        sig_x, sig_y = out["sigma"][bb, 0, rr, cc] * s, out["sigma"][bb, 1, rr, cc] * s
        mu_n = out["photons"][bb, rr, cc] / PHOTON_NORM
        sig_n = out["photon_sigma"][bb, rr, cc] / PHOTON_NORM
        log_comp = (
            torch.log(p[bb, rr, cc].clamp_min(1e-8))
            + _normal_logpdf(x[:, None], mu_x, sig_x)
            + _normal_logpdf(y[:, None], mu_y, sig_y)
            + _normal_logpdf(n[:, None], mu_n, sig_n)
        ).masked_fill(~inside, float("-inf"))
        log_lik = torch.logsumexp(log_comp, dim=1) - torch.log(mean.clamp_min(1e-6))[b]
        return count, -log_lik.mean()

    def background_term(self, out: dict, background_BHW: torch.Tensor) -> torch.Tensor:
        pred = out["background"]  # photons per pixel, on the level grid
        h, w = pred.shape[-2:]
        s = out["stride"]
        bg = background_BHW[:, None]
        if s >= 1:
            bg = F.avg_pool2d(bg, int(s)) if s > 1 else bg
        else:
            bg = F.interpolate(bg, scale_factor=int(round(1 / s)), mode="nearest")
        scale = bg.mean().clamp_min(1.0)
        return F.smooth_l1_loss(pred / scale, bg[:, 0, :h, :w] / scale)
