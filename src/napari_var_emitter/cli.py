"""The ``napari-var-emitter`` command (CONVENTIONS section 5).

Subcommands: ``predict``, ``simulate``, ``evaluate`` (and ``train``, added in its own section
below). Each has a ``_add_<name>(subparsers)`` that builds its parser and a ``_run_<name>(args)``
that does the work and returns the exit code.

Any :class:`VarEmitterError` (bad input, bad model file, bad CSV) or ``OSError`` ends the command
with one line ``napari-var-emitter: error: <message>`` on stderr and exit code 2; output files are
written atomically, so a failed run leaves none behind.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

from .camera import Camera
from .errors import InputError, VarEmitterError

PROG = "napari-var-emitter"
EXIT_ERROR = 2


# ---------------------------------------------------------------------------------------------------
# shared options


def _add_camera_flags(parser: argparse.ArgumentParser) -> None:
    d = Camera()
    group = parser.add_argument_group("camera (CONVENTIONS section 2; defaults: SMLM challenge 2016 EMCCD)")
    group.add_argument("--pixel-size-nm", type=float, default=d.pixel_size_nm, help="pixel size [nm]")
    group.add_argument("--baseline", type=float, default=d.baseline, help="camera offset [ADU]")
    group.add_argument("--e-per-adu", type=float, default=d.e_per_adu, help="electrons per ADU")
    group.add_argument("--em-gain", type=float, default=d.em_gain, help="EM gain (1 for sCMOS/CCD)")
    group.add_argument("--qe", type=float, default=d.qe, help="quantum efficiency (0..1]")
    group.add_argument("--read-noise-e", type=float, default=d.read_noise_e, help="read noise [e-]")


def _camera(args: argparse.Namespace) -> Camera:
    return Camera(
        pixel_size_nm=args.pixel_size_nm,
        baseline=args.baseline,
        e_per_adu=args.e_per_adu,
        em_gain=args.em_gain,
        qe=args.qe,
        read_noise_e=args.read_noise_e,
    )


def _say(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr)


# ---------------------------------------------------------------------------------------------------
# progress


class ProgressBar:
    """One redrawn terminal line: frames done/total, a bar, frames/s and the time left.

    Draws only when ``enabled`` (default: the stream is a terminal), at most every
    ``min_interval`` seconds and once at the end; :meth:`close` ends the line.
    """

    def __init__(self, label: str = "predict", stream=None, enabled: bool | None = None, min_interval=0.1):
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(isatty and isatty()) if enabled is None else enabled
        self.label = label
        self.min_interval = min_interval
        self.start = time.monotonic()
        self._last_draw = -float("inf")
        self._drawn = False

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (done < total and now - self._last_draw < self.min_interval):
            return
        self._last_draw = now
        self.stream.write("\r" + self.line(done, total, now - self.start))
        self.stream.flush()
        self._drawn = True

    @staticmethod
    def line(done: int, total: int, elapsed: float, width: int = 24) -> str:
        fraction = done / total if total else 1.0
        filled = int(round(width * fraction))
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (total - done) / rate if rate > 0 else float("nan")
        eta = "--:--" if left != left else _clock(left)
        return (
            f"{done:,}/{total:,} frames [{'#' * filled}{'.' * (width - filled)}] "
            f"{rate:,.1f} frames/s, {eta} left "
        )

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


# ---------------------------------------------------------------------------------------------------
# predict


def _add_predict(sub) -> None:
    from .localize.pipeline import DEFAULT_BATCH_SIZE, GPU_BATCH_SIZE
    from .localize.tiling import DEFAULT_MARGIN, DEFAULT_TILE_SIZE

    p = sub.add_parser("predict", help="localize emitters in a TIFF stack and write a ThunderSTORM CSV")
    p.add_argument("frames", metavar="FRAMES", help="TIFF stack (T, Y, X) or single frame, in ADU")
    p.add_argument(
        "--out",
        required=True,
        metavar="LOCS.csv",
        help="output: .csv (ThunderSTORM, CONVENTIONS section 3; written as the frames are done) "
        "or .hdf5 (Picasso)",
    )
    p.add_argument(
        "--model",
        default="auto",
        metavar="auto|bundled|bundled:window-3|PATH|classical",
        help="auto (default): the bundled model that sees frames t-1, t, t+1 when the stack is a "
        "movie (emitters persist across consecutive frames), else the bundled one-frame model; "
        "'bundled' or 'bundled:window-3' for one of them; a model file; or 'classical' for the "
        "Gaussian-fit baseline",
    )
    p.add_argument("--mode", choices=("progressive", "super_resolution"), default="progressive")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="detection threshold (VAR: probability; classical: multiples of the filtered noise)",
    )
    p.add_argument("--psf-sigma-nm", type=float, default=None, help="classical only: PSF sigma [nm]")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary line on stderr")
    group = p.add_argument_group("throughput (VAR)")
    group.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"frames (or tiles) per forward pass (default: {DEFAULT_BATCH_SIZE} on the CPU, "
        f"{GPU_BATCH_SIZE} on a GPU, fewer where they would not fit its memory)",
    )
    group.add_argument(
        "--batch-pixels",
        type=int,
        default=None,
        help="at most this many pixels per forward pass (default: 524288 on the CPU; on a GPU, "
        "what fits in 40 %% of its memory)",
    )
    group.add_argument(
        "--tile-size",
        type=int,
        default=DEFAULT_TILE_SIZE,
        help="frames larger than this (px) are cut into overlapping tiles; 0: never",
    )
    group.add_argument(
        "--tile-margin", type=int, default=DEFAULT_MARGIN, help="tile overlap on each side [px]"
    )
    group.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="auto: bf16 where the hardware is fast at it (CUDA, recent CPUs), else fp32",
    )
    group.add_argument("--compile", action="store_true", help="torch.compile the network (slow start)")
    group.add_argument(
        "--no-refine",
        action="store_true",
        help="keep the network's own positions (no maximum-likelihood refinement, so no fit "
        "confirmation either; a little faster)",
    )
    group.add_argument(
        "--no-pool",
        action="store_true",
        help="with a model that sees several frames (movies): do not average each fit with the "
        "same emitter's in the frames before and after",
    )
    group.add_argument(
        "--local-attention",
        action="store_true",
        help="frames of 192 px and more: attend within windows of the training size (64 px, with 8 px "
        "of context) instead of over the whole frame: 1.6x faster at 256 px, E 0.1-0.6 lower on dim "
        "sparse emitters (training/RESULTS.md)",
    )
    group.add_argument(
        "--no-confirm",
        action="store_true",
        help="keep only detections above the threshold (the fit does not confirm dim candidates below it)",
    )
    group.add_argument(
        "--dask-scheduler",
        default=None,
        metavar="ADDRESS",
        help="run frame chunks on this Dask distributed scheduler (e.g. tcp://host:8786); the workers "
        "must read FRAMES and --model at the same paths",
    )
    group.add_argument("--chunk-frames", type=int, default=512, help="frames per Dask task")
    _add_camera_flags(p)
    p.set_defaults(run=_run_predict)


_CLASSICAL_CHUNK_PIXELS = 1 << 21  # pixels read at a time by the classical baseline


def _classical_chunks(frames, camera, args, write, progress) -> None:
    """The Gaussian-fit baseline, chunk by chunk (its fits are per frame: same result as one call)."""
    from .localize import classical

    kwargs = {}
    if args.threshold is not None:
        kwargs["threshold"] = args.threshold
    if args.psf_sigma_nm is not None:
        kwargs["psf_sigma_px"] = args.psf_sigma_nm / camera.pixel_size_nm
    n, h, w = frames.shape
    step = max(1, _CLASSICAL_CHUNK_PIXELS // (h * w))
    for a in range(0, n, step):
        b = min(a + step, n)
        locs = classical.localize(frames[a:b], camera, **kwargs)
        locs.frame += a
        write(locs)
        progress(b, n)


def _run_predict(args: argparse.Namespace) -> int:
    from .io.frames import as_frames
    from .io.localizations import Localizations, table_format, write_localizations
    from .io.stream import close_frames, csv_stream, open_frames

    camera = _camera(args)
    out = Path(args.out)
    if not out.parent.is_dir() and str(out.parent) != "":
        raise InputError(f"output folder {out.parent} does not exist")
    kind = table_format(out)  # an unknown suffix is refused before any work
    bad_batch = args.batch_size is not None and args.batch_size < 1
    if bad_batch or args.tile_size < 0 or args.tile_margin < 0 or args.chunk_frames < 1:
        raise InputError("--batch-size and --chunk-frames must be >= 1, --tile-size and --tile-margin >= 0")
    if args.batch_pixels is not None and args.batch_pixels < 1:
        raise InputError("--batch-pixels must be >= 1")
    if args.dask_scheduler and args.model == "classical":
        raise InputError("--dask-scheduler runs the VAR model; the classical baseline runs locally")
    frames = open_frames(args.frames)
    bar = ProgressBar(enabled=None if not args.quiet else False)
    parts: list[Localizations] = []
    try:
        as_frames(frames[:1])  # checks dtype, shape and size before loading the model
        n_frames, height, width = frames.shape
        start = time.perf_counter()
        with contextlib.ExitStack() as stack:
            write = (
                stack.enter_context(csv_stream(out, camera.pixel_size_nm)) if kind == "csv" else parts.append
            )
            if args.model == "classical":
                _classical_chunks(frames, camera, args, write, bar.update)
                where = "classical"
            else:
                options = dict(
                    mode=args.mode,
                    threshold=args.threshold,
                    device=args.device,
                    batch_size=args.batch_size,
                    tile_size=args.tile_size or None,
                    tile_margin=args.tile_margin,
                    precision=args.precision,
                    compile=args.compile,
                    batch_pixels=args.batch_pixels,
                    refine=not args.no_refine,
                    confirm=not args.no_confirm,
                    pool=False if args.no_pool else None,
                    local_attention=args.local_attention,
                )
                from .localize.autoselect import choose_bundled
                from .localize.pipeline import load_model, predict

                chosen = ""
                if args.model == "auto":
                    model, choice = choose_bundled(frames, camera, device="cpu")
                    name, chosen = f"bundled:{choice.name}", f"; {choice.describe()}"
                else:
                    model = load_model(None if args.model == "bundled" else args.model, device="cpu")
                    name = None if args.model == "bundled" else args.model
                if args.dask_scheduler:
                    from .localize.cluster import predict_on_cluster

                    close_frames(frames)
                    result = predict_on_cluster(
                        args.frames,
                        args.dask_scheduler,
                        model=name,
                        camera=camera,
                        chunk_frames=args.chunk_frames,
                        sink=write,
                        progress=bar.update,
                        **options,
                    )
                else:
                    result = predict(frames, model, camera, sink=write, progress=bar.update, **options)
                where = f"VAR on {result.device}{chosen}"
            n_locs = write.rows if kind == "csv" else sum(len(p) for p in parts)
            if kind != "csv":
                write_localizations(
                    Localizations.concatenate(parts),
                    out,
                    pixel_size_nm=camera.pixel_size_nm,
                    frame_shape=(height, width),
                    n_frames=n_frames,
                )
        elapsed = time.perf_counter() - start
    finally:
        bar.close()
        close_frames(frames)
    _say(
        args,
        f"{n_locs} localizations in {n_frames} frames, {elapsed:.2f} s "
        f"({n_frames / max(elapsed, 1e-9):.0f} frames/s, {where}) -> {out}",
    )
    return 0


# ---------------------------------------------------------------------------------------------------
# simulate


def _add_simulate(sub) -> None:
    p = sub.add_parser(
        "simulate", help="simulate an SMLM movie: frames.tif, truth.csv, camera/simulation JSON"
    )
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--frames", type=int, default=100, help="number of frames")
    p.add_argument(
        "--size", type=int, nargs="+", default=[64], metavar=("H", "W"), help="frame size H [W] px"
    )
    p.add_argument("--density", type=float, default=0.3, help="emitters ON per frame per square micrometre")
    p.add_argument("--photons", type=float, nargs=2, default=(1000.0, 8000.0), metavar=("LO", "HI"))
    p.add_argument("--psf-sigma-nm", type=float, default=120.0, help="Gaussian PSF sigma [nm]")
    p.add_argument(
        "--background",
        type=float,
        nargs=2,
        default=(20.0, 100.0),
        metavar=("LO", "HI"),
        help="background photons per pixel per frame (uniform per movie)",
    )
    p.add_argument("--structure", choices=("uniform", "filaments"), default="uniform")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    _add_camera_flags(p)
    p.set_defaults(run=_run_simulate)


def _run_simulate(args: argparse.Namespace) -> int:
    from .simulation.simulate import SimulationConfig, simulate_movie, write_movie

    if len(args.size) not in (1, 2):
        raise InputError(f"--size takes H or H W, got {len(args.size)} numbers")
    h, w = (args.size[0], args.size[0]) if len(args.size) == 1 else tuple(args.size)
    config = SimulationConfig(
        frame_size=(h, w),
        density_per_um2=args.density,
        photons=tuple(args.photons),
        psf_sigma_nm=(args.psf_sigma_nm, args.psf_sigma_nm),
        background_photons=tuple(args.background),
        structure=args.structure,
        camera=_camera(args),
    )
    movie = simulate_movie(config, args.frames, seed=args.seed)
    out = write_movie(movie, args.out_dir)
    _say(args, f"{args.frames} frames of {h}x{w} px, {len(movie.truth)} emitters -> {out}")
    return 0


# ---------------------------------------------------------------------------------------------------
# evaluate


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="compare localizations with a ground truth (SMLM challenge metrics)")
    p.add_argument("truth", metavar="TRUTH.csv")
    p.add_argument("locs", metavar="LOCS.csv")
    p.add_argument("--pixel-size-nm", type=float, default=100.0)
    p.add_argument("--tolerance-nm", type=float, default=250.0, help="matching radius [nm]")
    p.add_argument("--match", choices=("hungarian", "greedy"), default="hungarian")
    p.set_defaults(run=_run_evaluate)


def format_report(report) -> str:
    """A two-column text table of a MetricReport's numbers."""
    rows = [
        ("Jaccard index [%]", "jaccard"),
        ("RMSE lateral [nm]", "rmse_nm"),
        ("efficiency E [%]", "efficiency"),
        ("recall", "recall"),
        ("precision", "precision"),
        ("bias x [nm]", "bias_x_nm"),
        ("bias y [nm]", "bias_y_nm"),
        ("RMSE / CRLB (isol.)", "rmse_over_crlb"),
        ("uncertainty calib.", "calibration"),
        ("true positives", "tp"),
        ("false positives", "fp"),
        ("false negatives", "fn"),
    ]
    lines = []
    for label, name in rows:
        value = getattr(report, name, None)
        if value is None:
            continue
        text = f"{value:d}" if isinstance(value, int) else f"{float(value):.4g}"
        lines.append(f"{label:<20} {text:>10}")
    return "\n".join(lines)


def _run_evaluate(args: argparse.Namespace) -> int:
    from .analysis.metrics import evaluate
    from .io.localizations import read_localizations

    if not args.tolerance_nm > 0:
        raise InputError(f"--tolerance-nm must be > 0, got {args.tolerance_nm}")
    # CSV (ours, ThunderSTORM; in nm) or Picasso HDF5 (in its own pixels, which then win)
    truth, truth_meta = read_localizations(args.truth, args.pixel_size_nm)
    locs, locs_meta = read_localizations(args.locs, args.pixel_size_nm)
    pixel_size_nm = args.pixel_size_nm
    for meta in (truth_meta, locs_meta):
        if meta["format"] != "csv":
            pixel_size_nm = float(meta["pixel_size_nm"])
    if {truth_meta["format"], locs_meta["format"]} != {"csv"} and pixel_size_nm != args.pixel_size_nm:
        if truth_meta["format"] == "csv":
            truth, _ = read_localizations(args.truth, pixel_size_nm)
        if locs_meta["format"] == "csv":
            locs, _ = read_localizations(args.locs, pixel_size_nm)
    sizes = {float(m["pixel_size_nm"]) for m in (truth_meta, locs_meta) if m["format"] != "csv"}
    if len(sizes) > 1:
        raise InputError(f"the two Picasso files have different pixel sizes: {sorted(sizes)} nm")
    report = evaluate(locs, truth, pixel_size_nm, tolerance_nm=args.tolerance_nm, method=args.match)
    print(
        f"{len(locs)} localizations vs {len(truth)} true emitters, {args.match} matching "
        f"within {args.tolerance_nm:g} nm"
    )
    print(format_report(report))
    return 0


# ---------------------------------------------------------------------------------------------------
# train


def _add_train(sub) -> None:
    from .train import TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="train (or fine-tune) the VAR model on simulated movies for your camera")
    p.add_argument("--out", required=True, help="checkpoint to write (rewritten at each validation)")
    p.add_argument("--preset", default=d.preset, help="model preset: default or seed")
    p.add_argument("--init-from", default=None, help='"bundled" or a checkpoint to fine-tune')
    p.add_argument("--resume", action="store_true", help="continue the run saved at --out")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--val-every", type=int, default=d.val_every)
    p.add_argument("--psf-sigma-nm", type=float, nargs=2, default=d.psf_sigma_nm, metavar=("LO", "HI"))
    p.add_argument("--photons", type=float, nargs=2, default=d.photons, metavar=("LO", "HI"))
    p.add_argument(
        "--density",
        type=float,
        nargs=2,
        default=d.density_per_um2,
        metavar=("LO", "HI"),
        help="emitters per square micrometre, drawn per batch",
    )
    p.add_argument("--background", type=float, nargs=2, default=d.background_photons, metavar=("LO", "HI"))
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    _add_camera_flags(p)
    p.set_defaults(run=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, iter_train

    if args.steps < 1 or args.batch_size < 1 or not args.lr > 0:
        raise InputError("--steps and --batch-size must be >= 1 and --lr > 0")
    cfg = TrainConfig(
        preset=args.preset,
        camera=_camera(args),
        psf_sigma_nm=tuple(args.psf_sigma_nm),
        photons=tuple(args.photons),
        density_per_um2=tuple(args.density),
        background_photons=tuple(args.background),
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        val_every=args.val_every,
        seed=args.seed,
        device=args.device,
        out=args.out,
        init_from=args.init_from,
        resume=args.resume,
    )
    start = time.perf_counter()
    for event in iter_train(cfg):
        if event.val:
            metrics = " ".join(f"{k}={v:.3g}" for k, v in event.val.items())
            _say(args, f"step {event.step}/{event.total_steps} loss {event.loss:.3f} {metrics}")
    _say(args, f"saved {args.out} after {cfg.steps} steps in {time.perf_counter() - start:.0f} s")
    return 0


# ---------------------------------------------------------------------------------------------------
# entry point

SUBCOMMANDS = [_add_predict, _add_simulate, _add_evaluate, _add_train]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="SMLM emitter localization with a VAR model")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except VarEmitterError as exc:
        message = str(exc)
    except OSError as exc:
        message = f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an exhausted machine (e.g. out of memory): still one line
        message = f"internal error ({type(exc).__name__}): {exc}"
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
