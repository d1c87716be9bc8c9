"""Drift correction and FRC resolution on a simulated filament table with a known drift.

python training/bench_drift.py [--locs 122535] [--frames 20000] [--seed 0] [--fiducials 3]

The table (``napari_var_emitter.simulation.tables``): blinking emitters on 6 curved filaments in a
10 um field, about 4 localizations per emitter in random frames, 2% uniform background, 100 nm
camera pixels. Drift: x linear plus periodic (152 nm peak to peak), y quadratic (100 nm). Printed,
as a Markdown table:

- RCC (:func:`napari_var_emitter.analysis.drift.estimate_drift`, defaults), 10 and 30 nm noise:
  the drift left after correction (RMS over rows of true minus estimated drift, its constant
  offset removed; x, y and both), the largest error at any frame, and the run time (estimate
  and apply). The same for fiducial tracking on the table with ``--fiducials`` beads added.
- FRC (:func:`napari_var_emitter.analysis.frc.frc`, defaults) for 10 and 30 nm noise: without drift,
  with the drift left in, and after RCC correction.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import numpy as np

from napari_var_emitter.analysis.drift import estimate_drift, estimate_drift_fiducials
from napari_var_emitter.analysis.frc import frc
from napari_var_emitter.simulation.tables import simulate_filaments

PX_NM = 100.0


def drift_row(label: str, sim, estimator):
    """The table row of one estimator on one table, and the corrected table."""
    start = time.perf_counter()
    drift = estimator(sim.locs, pixel_size_nm=PX_NM)
    corrected = drift.apply(sim.locs)
    seconds = time.perf_counter() - start
    frame = sim.locs.frame
    left_x = (corrected.x - (sim.locs.x - sim.drift_x_px[frame])) * PX_NM
    left_y = (corrected.y - (sim.locs.y - sim.drift_y_px[frame])) * PX_NM
    rms_x, rms_y = np.std(left_x), np.std(left_y)
    per_frame = np.hypot(  # at every frame, the same offset removed
        (sim.drift_x_px - drift.dx) * PX_NM - np.mean(left_x),
        (sim.drift_y_px - drift.dy) * PX_NM - np.mean(left_y),
    )
    detail = (
        f"{len(drift.segment_frames)} segments, {drift.pairs_used}/{drift.pairs_total} pairs"
        if drift.method == "rcc"
        else f"{drift.n_fiducials} fiducials"
    )
    row = (
        f"| {label} | {len(sim.locs):,} | {rms_x:.2f} | {rms_y:.2f} | {np.hypot(rms_x, rms_y):.2f} "
        f"| {per_frame.max():.1f} | {seconds:.2f} | {detail} |"
    )
    return row, corrected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--locs", type=int, default=122_535)
    parser.add_argument("--frames", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fiducials", type=int, default=3)
    args = parser.parse_args(argv)

    tables = {
        noise: simulate_filaments(args.locs, args.frames, noise_nm=noise, seed=args.seed)
        for noise in (10.0, 30.0)
    }
    print(f"# drift: {args.locs:,} localizations, {args.frames:,} frames, seed {args.seed}\n")
    print("| method | rows | RMS x [nm] | RMS y [nm] | RMS [nm] | max [nm] | time [s] | |")
    print("|---|---|---|---|---|---|---|---|")
    corrected = {}
    for noise, sim in tables.items():
        row, corrected[noise] = drift_row(f"RCC, {noise:.0f} nm noise", sim, estimate_drift)
        print(row)
    if args.fiducials:
        beads = simulate_filaments(
            args.locs, args.frames, noise_nm=10.0, n_fiducials=args.fiducials, seed=args.seed
        )
        print(
            drift_row(f"fiducials ({args.fiducials} beads), 10 nm noise", beads, estimate_drift_fiducials)[0]
        )

    print("\n| noise [nm] | table | FRC resolution [nm] | time [s] |")
    print("|---|---|---|---|")
    for noise, sim in tables.items():
        frame = sim.locs.frame
        still = replace(sim.locs, x=sim.locs.x - sim.drift_x_px[frame], y=sim.locs.y - sim.drift_y_px[frame])
        for label, locs in (
            ("no drift", still),
            ("drift left in", sim.locs),
            ("RCC-corrected", corrected[noise]),
        ):
            start = time.perf_counter()
            result = frc(locs, pixel_size_nm=PX_NM)
            print(
                f"| {noise:.0f} | {label} | {result.resolution_nm:.1f} | {time.perf_counter() - start:.2f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
