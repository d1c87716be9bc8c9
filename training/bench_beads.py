"""How well ``calibrate --beads`` measures the PSF: simulated bead stacks against the PSF they were
drawn with; prints one markdown table.

python training/bench_beads.py [--seeds 3]

Each row is a bead stack (simulation/beads.py: a pupil PSF, NA 1.4, 680 nm, 100 nm pixels, beads on
a grid with sub-pixel jitter, background 100 photons per pixel, an sCMOS-like camera unless said)
measured by ``calibration.beads.measure_psf``. ``table error`` is the relative L2 difference between
the measured pixel table and the true one at the plane the measurement chose, after the best scaling,
on their common extent; ``sigma`` the measured Gaussian-equivalent width against the true table's,
fitted the same way; ``photon bias`` the mean photons that the maximum-likelihood fit with the
measured PSF finds for 400 emitters of 2,000 photons drawn with the true PSF (0 % is unbiased; the
Gaussian model's is given for comparison). Mean (and worst) over ``--seeds`` seeds.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from napari_var_emitter.calibration.beads import measure_psf, table_sigma_px
from napari_var_emitter.camera import Camera
from napari_var_emitter.localize.refine import refine
from napari_var_emitter.simulation.beads import simulate_beads
from napari_var_emitter.simulation.psf import render_pupil

SCAN = tuple(float(z) for z in np.arange(-400.0, 401.0, 50.0))
EMCCD = Camera(em_gain=100.0, e_per_adu=15.0)
CASES = {
    # name: simulate_beads settings
    "25 beads, 10 frames in focus (sCMOS-like)": dict(planes_nm=(0.0,) * 10),
    "25 beads, one frame": dict(planes_nm=(0.0,)),
    "9 beads, 10 frames": dict(planes_nm=(0.0,) * 10, beads=9),
    "25 dim beads (5,000 photons), 10 frames": dict(planes_nm=(0.0,) * 10, photons=5_000.0),
    "25 beads, EMCCD gain 100, 10 frames": dict(planes_nm=(0.0,) * 10, camera=EMCCD),
    "z-scan -400..400 nm, 50 nm steps": dict(planes_nm=SCAN),
    "z-scan, spherical aberration 0.3 waves": dict(planes_nm=SCAN, spherical_waves=0.3),
}


def shape_error(table: np.ndarray, truth: np.ndarray) -> float:
    a, b = table.shape[0] // 2, truth.shape[0] // 2
    h = min(a, b)
    t, r = table[a - h : a + h + 1, a - h : a + h + 1], truth[b - h : b + h + 1, b - h : b + h + 1]
    scale = (t * r).sum() / (t * t).sum()
    return float(np.sqrt(((scale * t - r) ** 2).sum() / (r**2).sum()))


def photon_bias(truth: torch.Tensor, psf, seed: int) -> tuple[float, float]:
    """Mean relative photon error of the fit with the measured PSF and with a Gaussian of its width."""
    g = torch.Generator().manual_seed(seed)
    n, photons, background = 400, 2000.0, 20.0
    x, y = 7.5 + torch.rand(n, generator=g), 7.5 + torch.rand(n, generator=g)
    zero = torch.zeros(n, dtype=torch.long)
    expected = render_pupil(x, y, torch.full((n,), photons), zero, truth[None], torch.arange(n), n, 16, 16)
    frames = torch.poisson(expected + background, generator=g).double()
    camera = Camera(em_gain=1.0, e_per_adu=1.0, read_noise_e=0.0, qe=1.0)
    start = [v.double() + 0.2 * torch.randn(n, generator=g).double() for v in (x, y)]
    common = (torch.full((n,), photons), torch.full((n,), background), torch.full((n,), 0.1), camera)
    out = []
    for model in (psf, None):
        fit = refine(frames, torch.arange(n), *start, *common, psf.sigma_px, psf=model)
        out.append(100.0 * (float(fit["photons"][fit["fitted"]].mean()) / photons - 1.0))
    return out[0], out[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="bead stacks per case")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    columns = (
        "bead stack",
        "beads used",
        "table error [%]",
        "sigma error [%]",
        "photon bias [%]: table / Gaussian",
    )
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|")
    for name, settings in CASES.items():
        rows = []
        for seed in range(args.seeds):
            stack, tables = simulate_beads(seed=seed, **settings)
            psf = measure_psf(stack, pixel_size_nm=100.0)
            first, last = psf.source["planes"]
            truth = tables[(first + last) // 2]
            true_sigma = table_sigma_px(truth.numpy().astype(np.float64), psf.oversample)
            rows.append(
                (
                    psf.source["beads"],
                    100.0 * shape_error(psf.table, truth.numpy()),
                    100.0 * (psf.sigma_px / true_sigma - 1.0),
                    *photon_bias(truth, psf, seed),
                )
            )
        r = np.array(rows)
        worst_sigma = r[np.argmax(np.abs(r[:, 2])), 2]
        print(
            f"| {name} | {r[:, 0].mean():.0f} | {r[:, 1].mean():.2f} ({r[:, 1].max():.2f}) | "
            f"{r[:, 2].mean():+.2f} ({worst_sigma:+.2f}) | {r[:, 3].mean():+.2f} / {r[:, 4].mean():+.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
