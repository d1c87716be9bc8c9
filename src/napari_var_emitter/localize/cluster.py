"""Prediction of one TIFF stack on a Dask distributed cluster (``pip install distributed``).

The client sends each worker a task that names the file, the model spec and a frame range, never
pixels: the file must be readable by the workers at the same path (a shared file system). A worker
loads the model once per thread and keeps it, opens the stack lazily (:func:`..io.stream.open_frames`)
and runs the pipeline's own chunk stage (:func:`.pipeline.localize_chunk`) on its range, reading the
frame window's neighbours beyond the range as the single-process run does. Ranges are a whole
number of batches, so every batch is the one a single process would run. The client puts the
chunks in frame order and hands them to :func:`.pipeline.collect`, which pools across frames (the
one place that does): the localizations are the single-process run's.

At most ``max_in_flight`` ranges are pending at a time and finished ones go to ``sink`` as soon as
every range before them has arrived, so the client's memory does not grow with the movie.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable
from pathlib import Path

from ..errors import InputError
from ..io.localizations import Localizations
from ..io.stream import close_frames, open_frames
from ..progress import run_to_end
from .batching import DEFAULT_BATCH_SIZE
from .models import resolve_model
from .options import PredictOptions
from .pipeline import ChunkResult, PredictionResult, collect, localize_chunk, output_stride, plan_run
from .pooling import pooling_on

DEFAULT_CHUNK_FRAMES = 512
CONNECT_TIMEOUT_S = 20.0  # to reach the scheduler


@functools.lru_cache(maxsize=8)
def _worker_model(spec: str, device: str, thread: int):
    """One model per (spec, device, worker thread): loaded once, kept for the following ranges."""
    return resolve_model(spec, device=device).model


def predict_range(path: str, options: PredictOptions, start: int, stop: int) -> list[ChunkResult]:
    """Run on a worker: the chunks of frames [start, stop) of the stack at ``path`` (unpooled).
    ``options.model`` is a concrete spec (not ``auto``)."""
    from ..model.runtime import resolve_device

    device = str(resolve_device(options.device))
    model = None if options.classical else _worker_model(options.model, device, threading.get_ident())
    frames = open_frames(path)
    try:
        run = plan_run(frames, model, options, frame_range=(start, stop))
        return [localize_chunk(run, frames, a, b) for a, b in run.chunks()]
    finally:
        close_frames(frames)


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
    options: PredictOptions | None = None,
    *,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    max_in_flight: int | None = None,
    sink: Callable[[Localizations], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[PredictionResult, object]:
    """Localizations of the TIFF stack at ``path``, computed on the cluster ``scheduler`` (an
    address such as ``tcp://host:8786``, or a ``distributed.Client``), with ``options`` (their model
    spec is resolved here, ``auto`` from a sample of the frames; the workers load the result).
    Finished ranges go to ``sink`` in frame order (and are then not kept), else they are gathered.
    Returns the :class:`.pipeline.PredictionResult` (no maps) and the :class:`.models.ResolvedModel`.
    """
    options = options or PredictOptions()
    if int(chunk_frames) < 1:
        raise InputError(f"frames per Dask task must be >= 1, got {chunk_frames}")
    path = Path(path).resolve()
    frames = open_frames(path)  # checks the file here, before anything is sent
    try:
        n_frames = int(frames.shape[0]) if len(frames.shape) == 3 else 1
        resolved = resolve_model(options.model, frames, options.camera, device="cpu")
    finally:
        close_frames(frames)
    grid_factor = 0.0 if resolved.model is None else 1.0 / output_stride(resolved.model.net.config, options)
    batch = DEFAULT_BATCH_SIZE if options.batch_size is None else options.batch_size
    chunk = -(-int(chunk_frames) // batch) * batch  # whole batches: the single-process run's batches
    ranges = [(a, min(a + chunk, n_frames)) for a in range(0, n_frames, chunk)]
    # the workers run the batches planned here, with the model chosen here
    job = dataclasses.replace(options, model=resolved.spec, batch_size=batch)
    pool = resolved.model is not None and pooling_on(
        resolved.model.net.config.frame_window, options.pool, options.refine
    )
    client, owned = _client(scheduler)
    try:
        chunks = _in_order(client, str(path), job, ranges, max_in_flight)
        on_event = None if progress is None else (lambda e: progress(e.frames_done, e.frames_total))
        emit, _ = run_to_end(collect(chunks, start=0, stop=n_frames, pool=pool, sink=sink), on_event)
    finally:
        if owned:
            client.close()
    device = options.device if resolved.model is not None else "cpu"
    result = PredictionResult(
        localizations=emit.gathered(),
        device=f"{device} on a Dask cluster",
        mode=options.mode,
        grid_factor=grid_factor,
        n_localizations=emit.rows,
    )
    return result, resolved


def _in_order(client, path: str, job: PredictOptions, ranges, max_in_flight: int | None):
    """The ranges' chunks, in frame order, while at most ``max_in_flight`` ranges are pending."""
    import distributed

    if max_in_flight is None:
        max_in_flight = 2 * (sum(client.nthreads().values()) or 1)
    pending = distributed.as_completed()
    index_of, finished = {}, {}
    next_submit = next_yield = 0

    def submit():
        nonlocal next_submit
        a, b = ranges[next_submit]
        future = client.submit(predict_range, path, job, a, b, pure=False)
        index_of[future.key] = next_submit
        pending.add(future)
        next_submit += 1

    while next_submit < len(ranges) and next_submit < max_in_flight:
        submit()
    for future in pending:
        finished[index_of.pop(future.key)] = future.result()  # a worker's error is raised here
        future.release()
        if next_submit < len(ranges):
            submit()
        while next_yield in finished:
            yield from finished.pop(next_yield)
            next_yield += 1
