"""Streaming: lazy TIFF stacks, chunked prediction into a sink, the appended CSV, the progress bar."""

import io
import sys
import tracemalloc

import numpy as np
import pytest
import tifffile
import torch

from _tiny import TINY
from napari_var_emitter import cli
from napari_var_emitter.camera import Camera
from napari_var_emitter.cli.common import ProgressBar
from napari_var_emitter.errors import InputError
from napari_var_emitter.io.atomic import temporaries
from napari_var_emitter.io.localizations import Localizations, read_csv, to_csv
from napari_var_emitter.io.stream import RawTiffStack, TiffPageStack, close_frames, csv_stream, open_frames
from napari_var_emitter.localize import pipeline, predict
from napari_var_emitter.model import ModelConfig, TrueVAREmitterPredictor
from napari_var_emitter.model.checkpoint import EmitterModel, load_checkpoint


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return EmitterModel(net=TrueVAREmitterPredictor(ModelConfig(**TINY)).eval(), threshold=0.3)


@pytest.fixture(scope="module")
def movie():
    return np.random.default_rng(0).poisson(300, size=(12, 24, 20)).astype(np.uint16)


@pytest.fixture(scope="module")
def sim_movie():
    from napari_var_emitter.simulation import SimulationConfig, simulate_movie

    config = SimulationConfig(frame_size=(32, 40), density_per_um2=0.5, photons=(2000.0, 5000.0))
    return simulate_movie(config, 12, seed=4).frames.numpy().astype(np.uint16)


# ---------------------------------------------------------------------------------------------------
# opening stacks lazily


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_uncompressed_stacks_are_read_without_a_map(tmp_path, movie, byteorder):
    tifffile.imwrite(tmp_path / "m.tif", movie.astype(byteorder + "u2"), byteorder=byteorder)
    frames = open_frames(tmp_path / "m.tif")
    try:
        assert isinstance(frames, RawTiffStack) and frames.shape == movie.shape
        np.testing.assert_array_equal(frames[3:5], movie[3:5])
        np.testing.assert_array_equal(frames[7], movie[7])
        np.testing.assert_array_equal(frames[10:2:-3, 5], movie[10:2:-3, 5])
        np.testing.assert_array_equal(np.asarray(frames), movie)
        assert frames[5:5].shape == (0, 24, 20)
    finally:
        close_frames(frames)
    tifffile.imwrite(tmp_path / "one.tif", movie[0])  # a single frame is a stack of one
    frames = open_frames(tmp_path / "one.tif")
    np.testing.assert_array_equal(frames[:], movie[:1])
    close_frames(frames)


def test_a_truncated_raw_stack_is_an_input_error(tmp_path, movie):
    tifffile.imwrite(tmp_path / "m.tif", movie)
    frames = open_frames(tmp_path / "m.tif")
    with open(tmp_path / "m.tif", "r+b") as handle:
        handle.truncate(frames.offset + 5 * 24 * 20 * 2)
    np.testing.assert_array_equal(frames[:5], movie[:5])
    with pytest.raises(InputError, match="truncated"):
        frames[4:6]
    close_frames(frames)


@pytest.mark.parametrize("imagej", [False, True])
def test_compressed_stacks_are_read_page_by_page(tmp_path, movie, imagej, monkeypatch):
    data = movie[:, None] if imagej else movie  # ImageJ hyperstack (T, 1, Y, X)
    tifffile.imwrite(tmp_path / "c.tif", data, compression="zlib", imagej=imagej)
    frames = open_frames(tmp_path / "c.tif")
    try:
        assert isinstance(frames, TiffPageStack)
        assert frames.shape == movie.shape and frames.dtype == movie.dtype and len(frames) == 12
        read = []
        decode = TiffPageStack._frame
        monkeypatch.setattr(TiffPageStack, "_frame", lambda self, i: read.append(i) or decode(self, i))
        np.testing.assert_array_equal(frames[4:7], movie[4:7])
        assert read == [4, 5, 6]  # only the frames asked for
        np.testing.assert_array_equal(frames[-1], movie[-1])
        np.testing.assert_array_equal(frames[2:4, 1:3, ::2], movie[2:4, 1:3, ::2])
        np.testing.assert_array_equal(np.asarray(frames), movie)
        with pytest.raises(IndexError):
            frames[12]
    finally:
        close_frames(frames)


def test_a_compressed_single_frame_is_a_stack_of_one(tmp_path, movie):
    tifffile.imwrite(tmp_path / "one.tif", movie[0], compression="zlib")
    frames = open_frames(tmp_path / "one.tif")
    assert frames.shape == (1, 24, 20)
    np.testing.assert_array_equal(frames[0:1], movie[:1])
    close_frames(frames)


def test_open_frames_gives_read_frames_messages(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        open_frames(tmp_path / "missing.tif")
    (tmp_path / "text.tif").write_text("not a tiff")
    with pytest.raises(InputError, match="TIFF"):
        open_frames(tmp_path / "text.tif")


# ---------------------------------------------------------------------------------------------------
# prediction chunk by chunk


class _Recording:
    """An array that records which frames are read (as a lazy dask or zarr array would be read)."""

    def __init__(self, data):
        self.data, self.shape, self.dtype, self.reads = data, data.shape, data.dtype, []

    def __getitem__(self, key):
        self.reads.append((key.start, key.stop))
        return self.data[key]


@pytest.mark.parametrize("name", [None, "bundled:window-3"])
def test_predict_reads_chunks_and_sink_gets_every_localization(sim_movie, name):
    model = load_checkpoint(name)
    whole = predict(sim_movie, model, Camera(), device="cpu", batch_size=5)
    frames = _Recording(sim_movie)
    got = []
    streamed = predict(frames, model, Camera(), device="cpu", batch_size=5, sink=got.append)
    half = model.net.config.frame_window // 2  # each chunk is read with its context frames
    assert frames.reads == [(max(a - half, 0), min(b + half, 12)) for a, b in ((0, 5), (5, 10), (10, 12))]
    assert len(streamed.localizations) == 0  # given to the sink, not kept
    assert streamed.n_localizations == whole.n_localizations == len(whole.localizations) > 0
    joined = Localizations.concatenate(got)
    for name in Localizations.column_names():
        np.testing.assert_array_equal(getattr(joined, name), getattr(whole.localizations, name))


def test_cpu_forward_passes_are_bounded_in_pixels(tiny_model):
    from napari_var_emitter.localize.batching import CPU_BATCH_PIXELS, pass_sizes
    from napari_var_emitter.localize.tiling import plan_tiles

    frames = _Recording(np.full((10, 256, 256), 300, np.uint16))
    predict(frames, tiny_model, Camera(), device="cpu", batch_size=16, sink=lambda locs: None)
    assert CPU_BATCH_PIXELS == 8 * 256 * 256
    assert frames.reads == [(0, 8), (8, 10)]
    cpu = CPU_BATCH_PIXELS
    assert pass_sizes((200, 200), 16, cpu, None) == (8, 8)  # 13 fit: 8 divides 16
    assert pass_sizes((256, 256), 16, None, None) == (16, 16)  # no limit
    plan = plan_tiles(2048, 2048, 256, 16, 8)  # 100 tiles of 240 x 240
    assert pass_sizes((2048, 2048), 16, cpu, plan) == (1, 8)  # 9 tiles fit: 8 divides 16
    assert pass_sizes((512, 512), 16, 1 << 30, plan_tiles(512, 512, 256, 16, 8)) == (1, 16)
    with pytest.raises(InputError, match="batch_pixels"):
        predict(frames, tiny_model, Camera(), device="cpu", batch_pixels=0)


def _peak_traced(frames, model, **kw):
    tracemalloc.start()
    try:
        predict(frames, model, Camera(), device="cpu", precision="fp32", sink=lambda locs: None, **kw)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_as_the_movie_grows(tiny_model, tmp_path):
    rng = np.random.default_rng(1)
    tifffile.imwrite(tmp_path / "long.tif", rng.poisson(300, size=(320, 64, 64)).astype(np.uint16))
    frames = open_frames(tmp_path / "long.tif")
    short = _peak_traced(frames[:40], tiny_model, batch_size=8)  # 40 frames, in memory: 0.3 MB
    long = _peak_traced(frames, tiny_model, batch_size=8)  # 320 frames: 5 MB as float32
    assert long < short + 1_000_000, (short, long)


# ---------------------------------------------------------------------------------------------------
# the CSV, appended


def _locs(n, first_frame, rng):
    return Localizations(
        frame=np.sort(rng.integers(first_frame, first_frame + 4, n)),
        x=rng.uniform(-0.5, 60, n),
        y=rng.uniform(-0.5, 40, n),
        photons=rng.uniform(100, 5000, n),
        background=rng.uniform(10, 100, n),
        bkgstd=np.where(rng.random(n) < 0.2, np.nan, 3.0),
        sigma=1.2,
        uncertainty=rng.uniform(0.01, 0.3, n),
        probability=rng.uniform(0.5, 1, n),
        grid_factor=1.0,
    )


def test_appended_csv_is_byte_for_byte_the_whole_tables_csv(tmp_path):
    rng = np.random.default_rng(5)
    parts = [_locs(7, 0, rng), _locs(0, 4, rng), _locs(12, 8, rng), _locs(1, 12, rng)]
    to_csv(Localizations.concatenate(parts), tmp_path / "whole.csv", 107.0)
    with csv_stream(tmp_path / "streamed.csv", 107.0) as write:
        for part in parts:
            write(part)
            assert not (tmp_path / "streamed.csv").exists()  # only when the run ends
    assert write.rows == 20
    assert (tmp_path / "streamed.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()


def test_an_interrupted_stream_leaves_no_file(tmp_path):
    target = tmp_path / "locs.csv"
    target.write_text("the previous table\n")
    rng = np.random.default_rng(0)
    with pytest.raises(KeyboardInterrupt), csv_stream(target, 100.0) as write:
        write(_locs(5, 0, rng))
        raise KeyboardInterrupt
    assert target.read_text() == "the previous table\n"
    assert temporaries(target) == []


# ---------------------------------------------------------------------------------------------------
# the command line


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_line_and_drawing():
    line = ProgressBar.line(250, 1000, elapsed=5.0, width=10)
    assert line.startswith("250/1,000 frames [##........] 50.0 frames/s, 0:15 left")
    assert "1:01:40 left" in ProgressBar.line(10, 37010, elapsed=1.0)
    term = _Terminal()
    bar = ProgressBar(stream=term, min_interval=0.0)
    for done in (4, 8, 12):
        bar.update(done, 12)
    bar.close()
    text = term.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and "12/12 frames" in text
    quiet = io.StringIO()  # not a terminal: nothing
    bar = ProgressBar(stream=quiet)
    bar.update(1, 2)
    bar.close()
    assert quiet.getvalue() == ""


@pytest.fixture(scope="module")
def compressed_movie(tmp_path_factory, sim_movie):
    out = tmp_path_factory.mktemp("movie")
    frames = sim_movie[:10]
    tifffile.imwrite(out / "plain.tif", frames)
    tifffile.imwrite(out / "zlib.tif", frames, compression="zlib")
    return out


def test_cli_streams_a_compressed_stack_with_a_progress_bar(compressed_movie, tmp_path, monkeypatch):
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    out = tmp_path / "locs.csv"
    args = ["predict", str(compressed_movie / "zlib.tif"), "--out", str(out), "--batch-size", "4"]
    assert cli.main(args + ["--device", "cpu"]) == 0
    lines = term.getvalue().split("\n")
    assert "10/10 frames" in lines[0] and "frames/s" in lines[0] and lines[0].startswith("\r")
    assert "localizations in 10 frames" in lines[1]
    plain = tmp_path / "plain.csv"
    assert cli.main(["predict", str(compressed_movie / "plain.tif"), "--out", str(plain), "--quiet"]) == 0
    streamed, whole = read_csv(out, 100.0), read_csv(plain, 100.0)
    assert streamed.frame.size == whole.frame.size > 5
    # batches differ (4, 16), the rows do not: the network's numbers are the same bits in any batch;
    # the refinement's float64 least squares may differ in the last bit (~1e-15) with the batch
    np.testing.assert_array_equal(streamed.frame, whole.frame)
    for name in ("x", "y", "photons", "background", "uncertainty", "probability"):
        np.testing.assert_allclose(getattr(streamed, name), getattr(whole, name), rtol=1e-12, err_msg=name)


def test_cli_quiet_on_a_terminal_says_nothing(compressed_movie, tmp_path, monkeypatch):
    term = _Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    args = ["predict", str(compressed_movie / "plain.tif"), "--out", str(tmp_path / "q.csv"), "--quiet"]
    assert cli.main(args + ["--model", "classical"]) == 0
    assert term.getvalue() == ""


def test_cli_interrupted_leaves_no_output(compressed_movie, tmp_path, monkeypatch, capsys):
    import napari_var_emitter.localize.pipeline as predict_module

    real = predict_module.iter_predict

    def interrupted(*args, **kwargs):
        gen = real(*args, **kwargs)
        yield next(gen)  # the first chunk is written ...
        raise KeyboardInterrupt  # ... then Ctrl-C

    monkeypatch.setattr(predict_module, "iter_predict", interrupted)
    out = tmp_path / "locs.csv"
    args = ["predict", str(compressed_movie / "zlib.tif"), "--out", str(out), "--batch-size", "2"]
    assert cli.main(args) == 130
    assert not out.exists() and temporaries(out) == []
    assert capsys.readouterr().err.strip() == "napari-var-emitter: interrupted"


def test_cli_classical_in_chunks_equals_one_call(compressed_movie, tmp_path, monkeypatch):
    from napari_var_emitter.io.frames import read_frames
    from napari_var_emitter.localize import classical

    monkeypatch.setattr(pipeline, "CLASSICAL_CHUNK_PIXELS", 3 * 32 * 40)  # chunks of 3 frames
    out = tmp_path / "classical.csv"
    args = ["predict", str(compressed_movie / "zlib.tif"), "--out", str(out), "--model", "classical"]
    assert cli.main(args + ["--quiet"]) == 0
    to_csv(
        classical.localize(read_frames(compressed_movie / "plain.tif"), Camera()), tmp_path / "one.csv", 100
    )
    assert out.read_bytes() == (tmp_path / "one.csv").read_bytes()


def test_cli_writes_picasso_hdf5(compressed_movie, tmp_path):
    pytest.importorskip("napari_var_emitter.io.picasso")
    from napari_var_emitter.io.tables import read_localizations

    out = tmp_path / "locs.hdf5"
    args = ["predict", str(compressed_movie / "plain.tif"), "--out", str(out), "--quiet"]
    assert cli.main(args + ["--model", "classical"]) == 0
    locs, meta = read_localizations(out)
    assert len(locs) > 5 and meta["format"] == "picasso"


def test_a_truncated_compressed_stack_is_one_error_line(tmp_path, sim_movie, capsys):
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, sim_movie, compression="zlib")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    out = tmp_path / "o.csv"
    assert cli.main(["predict", str(path), "--out", str(out), "--model", "classical"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "damaged or truncated" in err[0], err
    assert not out.exists()
