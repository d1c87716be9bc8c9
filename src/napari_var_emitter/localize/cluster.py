"""Prediction of one TIFF stack on a Dask distributed cluster (``pip install distributed``).

The client sends each worker a task that names the file and a frame range, never pixels: the
file must be readable by the workers at the same path (a shared file system). A worker loads the
model (the bundled weights or a checkpoint path) once per thread and keeps it, opens the stack
lazily (:func:`.stream.open_frames`) and runs :func:`.predict.iter_predict` on its range, which
reads the frame window's neighbours beyond the range as the single-process run does. Chunks are a
whole number of batches, so every batch is the one a single process would run: the localizations
are the single-process run's, returned in frame order.

At most ``max_in_flight`` chunks are pending at a time and finished chunks go to ``sink`` as soon
as every chunk before them has arrived, so the client's memory does not grow with the movie.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ..camera import Camera
from ..errors import InputError
from ..io.localizations import Localizations
from ..model.checkpoint import BUNDLED_PREFIX

DEFAULT_CHUNK_FRAMES = 512
CONNECT_TIMEOUT_S = 20.0  # to reach the scheduler


@dataclass(frozen=True)
class ChunkJob:
    """What a worker needs besides the frame range: small, picklable."""

    path: str
    model: str | None  # checkpoint path; None: the bundled weights
    camera: dict | None  # Camera.to_dict(); None: the model's camera
    options: dict = field(default_factory=dict)  # keyword arguments of iter_predict


@functools.lru_cache(maxsize=8)
def _worker_model(model: str | None, device: str, thread: int):
    """One model per (file, device, worker thread): loaded once, kept for the following chunks."""
    from .pipeline import load_model

    return load_model(model, device)


def predict_chunk(job: ChunkJob, start: int, stop: int) -> dict:
    """Run on a worker: the localizations of frames [start, stop) of ``job.path`` (``locs``), with
    the run's ``device`` and ``grid_factor``."""
    from ..io.stream import close_frames, open_frames
    from .pipeline import predict, resolve_device
    from .pooling import pooling_on

    device = str(resolve_device(job.options.get("device", "auto")))
    model = _worker_model(job.model, device, threading.get_ident())
    camera = Camera.from_dict(job.camera) if job.camera is not None else None
    options = dict(job.options)
    pool = options.pop("pool", None)  # pooling crosses chunks: the client does it (predict_on_cluster)
    frames = open_frames(job.path)
    try:
        result = predict(frames, model, camera, frame_range=(start, stop), pool=False, **options)
    finally:
        close_frames(frames)
    return {
        "locs": result.localizations,
        "position_sd": result.position_sd,
        "pool": pooling_on(model.config.frame_window, pool, options.get("refine", True)),
        "device": result.device,
        "grid_factor": result.grid_factor,
    }


def _client(scheduler):
    try:
        import distributed
    except ImportError:
        raise InputError(
            "the Dask path needs the 'distributed' package: pip install 'napari-var-emitter[cluster]'"
        ) from None
    if isinstance(scheduler, distributed.Client):
        return scheduler, False
    try:
        return distributed.Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s"), True
    except (OSError, TimeoutError, ValueError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(f"cannot reach the Dask scheduler at {scheduler}: {message}") from None


def predict_on_cluster(
    path,
    scheduler,
    *,
    model: str | None = None,
    camera: Camera | None = None,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    max_in_flight: int | None = None,
    sink: Callable[[Localizations], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    **options,
):
    """Localizations of the TIFF stack at ``path``, computed on the cluster ``scheduler`` (an
    address such as ``tcp://host:8786``, or a ``distributed.Client``).

    ``model``: a checkpoint path the workers can read, or a bundled name such as
    ``"bundled:window-3"`` (None: the bundled one-frame weights). ``options``:
    keyword arguments of :func:`.predict.iter_predict` (mode, threshold, device, batch_size (None:
    the CPU's default, also on GPU workers), ...).
    Finished chunks go to ``sink`` in frame order (and are then not kept), else they are gathered.
    Returns a :class:`.predict.PredictionResult` (no maps).
    """
    from pathlib import Path

    from ..io.stream import close_frames, open_frames
    from .pipeline import DEFAULT_BATCH_SIZE, Output, PredictionResult
    from .pooling import TemporalPooler

    if "maps" in options or "frame_range" in options:
        raise InputError("the Dask path returns localizations only, of the whole stack (no maps, no range)")
    path = Path(path).resolve()
    frames = open_frames(path)  # checks the file here, before anything is sent
    try:
        n_frames = int(frames.shape[0]) if len(frames.shape) == 3 else 1
    finally:
        close_frames(frames)
    batch = DEFAULT_BATCH_SIZE if options.get("batch_size") is None else int(options["batch_size"])
    if batch < 1 or int(chunk_frames) < 1:
        raise InputError("batch size and frames per chunk must be >= 1")
    chunk = -(-int(chunk_frames) // batch) * batch  # whole batches: the single-process run's batches
    ranges = [(a, min(a + chunk, n_frames)) for a in range(0, n_frames, chunk)]
    job = ChunkJob(
        path=str(path),
        model=model if model is None or str(model).startswith(BUNDLED_PREFIX) else str(Path(model).resolve()),
        camera=None if camera is None else camera.to_dict(),
        options={**options, "batch_size": batch},  # the workers run the batches planned here
    )

    client, owned = _client(scheduler)
    try:
        import distributed

        if max_in_flight is None:
            threads = sum(client.nthreads().values()) or 1
            max_in_flight = 2 * threads
        pending = distributed.as_completed()
        index_of, finished, emit = {}, {}, Output(sink)
        device, grid_factor = str(options.get("device", "auto")), 1.0
        next_submit = next_write = done_frames = 0
        pooler = None

        def submit():
            nonlocal next_submit
            a, b = ranges[next_submit]
            future = client.submit(predict_chunk, job, a, b, pure=False)
            index_of[future.key] = next_submit
            pending.add(future)
            next_submit += 1

        while next_submit < len(ranges) and next_submit < max_in_flight:
            submit()
        for future in pending:
            k = index_of.pop(future.key)
            finished[k] = future.result()  # a worker's error is raised here, as it was raised there
            future.release()
            if next_submit < len(ranges):
                submit()
            while next_write in finished:  # write in frame order
                out = finished.pop(next_write)
                locs, device, grid_factor = out["locs"], out["device"], out["grid_factor"]
                if out["pool"]:  # as iter_predict does, across the chunks' borders too
                    pooler = pooler or TemporalPooler()
                    locs = pooler.feed(locs, out["position_sd"], ranges[next_write][1])
                emit(locs)
                done_frames += ranges[next_write][1] - ranges[next_write][0]
                next_write += 1
                if progress is not None:
                    progress(done_frames, n_frames)
        if pooler is not None:
            emit(pooler.flush())
    finally:
        if owned:
            client.close()
    return PredictionResult(
        localizations=emit.gathered(),
        device=f"{device} on a Dask cluster",
        mode=options.get("mode", "progressive"),
        grid_factor=grid_factor,
        n_localizations=emit.rows,
    )
