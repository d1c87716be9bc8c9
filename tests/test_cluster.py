"""The Dask distributed path gives the single-process run's localizations, in frame order."""

import numpy as np
import pytest
import tifffile

from napari_var_emitter.camera import Camera
from napari_var_emitter.cli import main
from napari_var_emitter.errors import InputError
from napari_var_emitter.io.localizations import Localizations
from napari_var_emitter.io.stream import open_frames
from napari_var_emitter.localize import PredictOptions, load_model, predict

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def movie_path(tmp_path_factory):
    from napari_var_emitter.simulation import SimulationConfig, simulate_movie

    config = SimulationConfig(frame_size=(40, 48), density_per_um2=0.8, photons=(1500.0, 6000.0))
    frames = simulate_movie(config, 22, seed=8).frames.numpy().astype(np.uint16)
    path = tmp_path_factory.mktemp("cluster") / "movie.tif"
    tifffile.imwrite(path, frames)
    return path


@pytest.fixture(scope="module")
def cluster():
    # worker processes: tasks, results and errors really travel (pickled) between processes
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as local:
        yield local


def _assert_same(a: Localizations, b: Localizations):
    assert len(a) == len(b) > 20
    np.testing.assert_array_equal(a.frame, b.frame)
    for name in ("x", "y", "photons", "background", "uncertainty", "probability"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-6, atol=1e-6)


def test_cluster_gives_the_single_process_localizations(movie_path, cluster):
    from napari_var_emitter.localize.cluster import predict_on_cluster

    camera = Camera(baseline=101.0)  # sent to the workers: not the model's own camera
    options = PredictOptions(model="bundled", camera=camera, device="cpu", batch_size=4, precision="fp32")
    single = predict(open_frames(movie_path), load_model(None), options=options)
    events, parts = [], []
    result, resolved = predict_on_cluster(
        movie_path,
        cluster.scheduler_address,
        options,
        chunk_frames=6,  # rounded up to 8: whole batches; 3 ranges, the last one short
        max_in_flight=2,
        sink=parts.append,
        progress=lambda done, total: events.append((done, total)),
    )
    assert resolved.spec == "bundled"
    assert events == [(t, 22) for t in (4, 8, 12, 16, 20, 22)]  # each batch of each range, in order
    assert len(result.localizations) == 0 and result.n_localizations == len(single.localizations)
    assert "Dask" in result.device
    _assert_same(Localizations.concatenate(parts), single.localizations)


def test_cli_with_a_dask_scheduler(movie_path, cluster, tmp_path):
    local, remote = tmp_path / "local.csv", tmp_path / "cluster.csv"
    args = ["predict", str(movie_path), "--device", "cpu", "--batch-size", "4", "--quiet"]
    assert main(args + ["--out", str(local)]) == 0
    assert main(args + ["--out", str(remote), "--dask-scheduler", cluster.scheduler_address]) == 0
    assert remote.read_bytes() == local.read_bytes()


def test_worker_errors_and_bad_requests_are_one_line(movie_path, cluster, tmp_path, capsys, monkeypatch):
    from napari_var_emitter.localize import cluster as cluster_module
    from napari_var_emitter.localize.cluster import predict_on_cluster

    monkeypatch.setattr(cluster_module, "CONNECT_TIMEOUT_S", 1.0)
    # tiles too small for their margin: found when a worker plans its range, re-raised here
    too_small = PredictOptions(model="bundled", tile_size=8, tile_margin=16, device="cpu")
    with pytest.raises(InputError, match="no core"):
        predict_on_cluster(movie_path, cluster.scheduler_address, too_small)
    with pytest.raises(InputError, match="threshold"):  # refused before anything is sent
        predict_on_cluster(movie_path, cluster.scheduler_address, PredictOptions(threshold=-1.0))
    out = tmp_path / "x.csv"
    args = ["predict", str(movie_path), "--out", str(out), "--dask-scheduler", "tcp://127.0.0.1:1"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach the Dask scheduler" in err[0]
    assert not out.exists()
