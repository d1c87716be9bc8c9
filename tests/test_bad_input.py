"""The bad-input table: every kind of bad input, on every surface, gets one clear answer.

API: a specific exception type (a ``VarEmitterError`` subclass) whose message is one line.
CLI: exit code 2, exactly one line ``napari-var-emitter: error: ...`` on stderr, no traceback, and
no output file (nor a temporary one) left behind. Widgets (test_bad_input_widgets.py): an error
notification, and the viewer keeps working. A row with ``error=None`` is input that is odd but
valid: it must be accepted.

``API_WIRING`` rows are predict's own checks (``io.stack.check_frame_shape`` and ``io.frames.check_values``).
"""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import tifffile
import torch

from _fakes import HugeFrames
from _tiny import tiny_model
from napari_var_emitter.camera import Camera
from napari_var_emitter.cli import main
from napari_var_emitter.errors import (
    CameraError,
    CheckpointError,
    CsvFormatError,
    InputError,
    PicassoFormatError,
    VarEmitterError,
)
from napari_var_emitter.io.frames import as_frames, read_frames
from napari_var_emitter.io.localizations import read_csv
from napari_var_emitter.io.tables import read_localizations, write_localizations
from napari_var_emitter.localize import predict
from napari_var_emitter.model.checkpoint import load_checkpoint, save_checkpoint
from napari_var_emitter.train import TrainConfig, iter_train

HEADER = '"id","frame","x [nm]","y [nm]","intensity [photon]"\n'
MARKER = Path("/tmp/napari_var_emitter_bad_input_pwned")


@dataclass
class Case:
    make: Callable[[Path], Any]  # api: returns the call to make; cli: returns argv
    error: type | None  # the exception type (api) or None: accepted
    fragment: str  # in the message (api) or the stderr line (cli)


# --- makers -------------------------------------------------------------------------------------
def _tif(data, **kwargs) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = tmp / "in.tif"
        tifffile.imwrite(path, data, **kwargs)
        return path

    return make


def _bytes(content: bytes, name="in.tif") -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / name).write_bytes(content)
        return tmp / name

    return make


def _huge_tiff(tmp: Path) -> Path:
    """A 150-byte TIFF whose header claims one 20,000 x 20,000 uint16 frame (800 MB)."""
    import struct

    w = h = 20_000
    entries = [(256, 4, w), (257, 4, h), (258, 3, 16), (259, 3, 1), (262, 3, 1), (273, 4, 8)]
    entries += [(277, 3, 1), (278, 4, h), (279, 4, w * h * 2)]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        ifd += (
            struct.pack("<HHII", tag, kind, 1, value)
            if kind == 4
            else struct.pack("<HHIHH", tag, kind, 1, value, 0)
        )
    path = tmp / "in.tif"
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0))
    return path


def _truncated_tiff(tmp: Path) -> Path:
    path = tmp / "in.tif"
    tifffile.imwrite(path, np.ones((10, 64, 64), np.uint16), imagej=True)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _missing(name="in.tif") -> Callable[[Path], Path]:
    return lambda tmp: tmp / name


GOOD_FRAMES = _tif(np.random.default_rng(0).poisson(300, (2, 16, 16)).astype(np.uint16))


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def _checkpoint(edit: Callable[[dict], None] | None = None, raw: Callable[[bytes], bytes] | None = None):
    def make(tmp: Path) -> Path:
        path = save_checkpoint(tmp / "model.pt", tiny_model())
        if edit is not None:
            payload = torch.load(path, weights_only=True)
            edit(payload)
            torch.save(payload, path)
        if raw is not None:
            path.write_bytes(raw(path.read_bytes()))
        return path

    return make


def _evil_checkpoint(tmp: Path) -> Path:
    path = tmp / "model.pt"
    torch.save({"format": "napari-var-emitter/1", "payload": _Evil()}, path)
    return path


def _nan_weights(payload):
    key = next(iter(payload["state_dict"]))
    payload["state_dict"][key] = payload["state_dict"][key] * float("nan")


def _csv(text: str | bytes, name="locs.csv") -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        return path

    return make


def _billion_line_csv(tmp: Path) -> Path:
    """A real header and 1,000 rows, then a hole: the file claims 50 GB (a billion more lines)
    but takes no disk space (sparse)."""
    path = tmp / "locs.csv"
    rows = "".join(f"{i},1,{100 + i}.5,200.25,1000\n" for i in range(1, 1001))
    path.write_text(HEADER + rows)
    with open(path, "r+b") as handle:
        handle.truncate(50 * 10**9)
    return path


# --- the table ------------------------------------------------------------------------------------
def _api_frames(frames_of: Callable[[Path], Any], via: str):
    """The frames through one API entry: read_frames (a path), as_frames or predict (an array)."""

    def make(tmp):
        frames = frames_of(tmp)
        if via == "read_frames":
            return lambda: read_frames(frames)
        if via == "as_frames":
            return lambda: as_frames(frames)
        return lambda: predict(frames, tiny_model(), Camera(), device="cpu")

    return make


def _arr(array):
    return lambda tmp: array


API = {
    # frames
    "missing file": Case(_api_frames(_missing(), "read_frames"), InputError, "no such file"),
    "text file named .tif": Case(_api_frames(_bytes(b"just some text\n"), "read_frames"), InputError, "TIFF"),
    "empty file": Case(_api_frames(_bytes(b""), "read_frames"), InputError, "TIFF"),
    "truncated TIFF": Case(_api_frames(_truncated_tiff, "read_frames"), InputError, "damaged or truncated"),
    "TIFF header claims 20000x20000": Case(_api_frames(_huge_tiff, "read_frames"), InputError, "too large"),
    "empty stack": Case(_api_frames(_arr(np.zeros((0, 16, 16))), "as_frames"), InputError, "empty"),
    "empty stack (predict)": Case(_api_frames(_arr(np.zeros((0, 16, 16))), "predict"), InputError, "empty"),
    "4-D stack": Case(_api_frames(_arr(np.zeros((2, 3, 16, 16))), "as_frames"), InputError, "4 dimensions"),
    "4-D stack (predict)": Case(
        _api_frames(_arr(np.zeros((2, 3, 16, 16))), "predict"), InputError, "dimensions"
    ),
    "RGB image": Case(_api_frames(_arr(np.zeros((64, 64, 3), np.uint8)), "as_frames"), InputError, "RGB"),
    "RGB image (predict)": Case(
        _api_frames(_arr(np.zeros((64, 64, 3), np.uint8)), "predict"), InputError, "RGB"
    ),
    "NaN frames": Case(_api_frames(_arr(np.full((2, 16, 16), np.nan)), "as_frames"), InputError, "NaN"),
    "NaN frames (predict)": Case(
        _api_frames(_arr(np.full((2, 16, 16), np.nan)), "predict"), InputError, "NaN"
    ),
    "inf frames": Case(_api_frames(_arr(np.full((2, 16, 16), np.inf)), "as_frames"), InputError, "infinite"),
    "1e30 frames": Case(
        _api_frames(_arr(np.full((1, 16, 16), 1e30)), "as_frames"), InputError, "camera readings"
    ),
    "negative values (accepted)": Case(
        _api_frames(_arr(np.full((1, 16, 16), -500.0)), "as_frames"), None, ""
    ),
    "negative values (predict, accepted)": Case(
        _api_frames(_arr(np.full((1, 16, 16), -500.0)), "predict"), None, ""
    ),
    "6x6 frame (below the 8 px coarsest scale)": Case(
        _api_frames(_arr(np.zeros((1, 6, 6))), "as_frames"), InputError, "too small"
    ),
    "1x1 frame": Case(_api_frames(_arr(np.zeros((1, 1))), "as_frames"), InputError, "too small"),
    "20000x20000 frame": Case(
        _api_frames(_arr(np.broadcast_to(np.zeros((1, 1, 1), np.uint16), (1, 20_000, 20_000))), "as_frames"),
        InputError,
        "too large",
    ),
    "object dtype": Case(_api_frames(_arr(np.zeros((2, 16, 16), object)), "as_frames"), InputError, "dtype"),
    # camera
    "camera qe 0": Case(lambda tmp: lambda: Camera(qe=0.0), CameraError, "qe"),
    "camera negative pixel size": Case(lambda tmp: lambda: Camera(pixel_size_nm=-100.0), CameraError, "> 0"),
    "camera NaN e_per_adu": Case(lambda tmp: lambda: Camera(e_per_adu=float("nan")), CameraError, "finite"),
    "camera em_gain 0.5": Case(lambda tmp: lambda: Camera(em_gain=0.5), CameraError, "em_gain"),
    "camera huge int": Case(lambda tmp: lambda: Camera(baseline=10**5000), CameraError, "too large"),
    "camera file not JSON": Case(
        lambda tmp: (lambda p: lambda: Camera.load(p))(_bytes(b"\xff\xfe{", "cam.json")(tmp)),
        CameraError,
        "cannot",
    ),
    "camera file nested 100000 deep": Case(
        lambda tmp: (lambda p: lambda: Camera.load(p))(_bytes(b"[" * 100_000, "cam.json")(tmp)),
        CameraError,
        "cannot read",
    ),
    # model files
    "checkpoint missing": Case(
        lambda tmp: lambda: load_checkpoint(tmp / "nope.pt"), CheckpointError, "no model"
    ),
    "checkpoint truncated": Case(
        lambda tmp: (lambda p: lambda: load_checkpoint(p))(_checkpoint(raw=lambda b: b[: len(b) // 2])(tmp)),
        CheckpointError,
        "truncated",
    ),
    "checkpoint of another architecture": Case(
        lambda tmp: (lambda p: lambda: load_checkpoint(p))(
            _checkpoint(lambda d: d["model_config"].update(embed_dim=32))(tmp)
        ),
        CheckpointError,
        "does not match",
    ),
    "checkpoint with a pickle carrying code": Case(
        lambda tmp: (lambda p: lambda: load_checkpoint(p))(_evil_checkpoint(tmp)), CheckpointError, "refused"
    ),
    "checkpoint config conv_dim 1e9": Case(
        lambda tmp: (lambda p: lambda: load_checkpoint(p))(
            _checkpoint(lambda d: d["model_config"].update(conv_dim=10**9))(tmp)
        ),
        CheckpointError,
        "conv_dim",
    ),
    "checkpoint with NaN weights": Case(
        lambda tmp: (lambda p: lambda: load_checkpoint(p))(_checkpoint(_nan_weights)(tmp)),
        CheckpointError,
        "NaN",
    ),
    "checkpoint threshold NaN": Case(
        lambda tmp: (lambda p: lambda: load_checkpoint(p))(
            _checkpoint(lambda d: d.update(threshold=float("nan")))(tmp)
        ),
        CheckpointError,
        "threshold",
    ),
    "checkpoint psf_sigma_nm a string": Case(
        lambda tmp: (lambda p: lambda: load_checkpoint(p))(
            _checkpoint(lambda d: d.update(psf_sigma_nm="wide"))(tmp)
        ),
        CheckpointError,
        "psf sigma",
    ),
    "checkpoint camera not a mapping": Case(
        lambda tmp: (lambda p: lambda: load_checkpoint(p))(_checkpoint(lambda d: d.update(camera=7))(tmp)),
        CheckpointError,
        "camera",
    ),
    # localization tables
    "CSV missing columns": Case(
        lambda tmp: (lambda p: lambda: read_csv(p, 100.0))(_csv('"id","frame","x [nm]"\n1,1,5\n')(tmp)),
        CsvFormatError,
        '"y [nm]"',
    ),
    "CSV wrong types": Case(
        lambda tmp: (lambda p: lambda: read_csv(p, 100.0))(_csv(HEADER + "1,1,abc,100,5\n")(tmp)),
        CsvFormatError,
        "line 2: not a number",
    ),
    "CSV in UTF-16": Case(
        lambda tmp: (lambda p: lambda: read_csv(p, 100.0))(_csv(HEADER.encode("utf-16"))(tmp)),
        CsvFormatError,
        "not UTF-8",
    ),
    "CSV unicode look-alike header": Case(
        lambda tmp: (lambda p: lambda: read_csv(p, 100.0))(_csv('"frame","x [ｎｍ]","y [nm]"\n1,1,1\n')(tmp)),
        CsvFormatError,
        "lacks",
    ),
    "CSV with UTF-8 BOM and unicode (accepted)": Case(
        lambda tmp: (lambda p: lambda: read_csv(p, 100.0))(
            _csv("\ufeff" + HEADER.replace('"id"', '"id ✓"') + "1,1,150,250,1000\n")(tmp)
        ),
        None,
        "",
    ),
    "CSV claiming a billion lines": Case(
        lambda tmp: (lambda p: lambda: read_csv(p, 100.0))(_billion_line_csv(tmp)), CsvFormatError, "about"
    ),
    "CSV 2 MB line": Case(
        lambda tmp: (lambda p: lambda: read_csv(p, 100.0))(_csv(HEADER + "1" * 2_000_000)(tmp)),
        CsvFormatError,
        "longer than",
    ),
    "CSV frame 0 (not 1-based)": Case(
        lambda tmp: (lambda p: lambda: read_csv(p, 100.0))(_csv(HEADER + "1,0,150,250,1000\n")(tmp)),
        CsvFormatError,
        "1-based",
    ),
    "CSV NaN position": Case(
        lambda tmp: (lambda p: lambda: read_csv(p, 100.0))(_csv(HEADER + "1,1,nan,250,1000\n")(tmp)),
        CsvFormatError,
        "NaN",
    ),
    "CSV ragged row": Case(
        lambda tmp: (lambda p: lambda: read_csv(p, 100.0))(_csv(HEADER + "1,1,150\n")(tmp)),
        CsvFormatError,
        "3 fields",
    ),
    "CSV empty": Case(
        lambda tmp: (lambda p: lambda: read_csv(p, 100.0))(_csv("")(tmp)), CsvFormatError, "is empty"
    ),
    "CSV read with pixel size 0": Case(
        lambda tmp: (lambda p: lambda: read_csv(p, 0.0))(_csv(HEADER)(tmp)), CameraError, "pixel_size_nm"
    ),
    "Picasso file that is not HDF5": Case(
        lambda tmp: (lambda p: lambda: read_localizations(p))(_csv("not hdf5", "locs.hdf5")(tmp)),
        PicassoFormatError,
        "not an HDF5 file",
    ),
    "table with an unknown suffix": Case(
        lambda tmp: (lambda p: lambda: read_localizations(p))(_csv(HEADER, "locs.txt")(tmp)),
        InputError,
        "unknown localization file type",
    ),
    "writing NaN positions": Case(
        lambda tmp: (
            lambda: write_localizations(
                __import__("napari_var_emitter").Localizations(frame=[0], x=[np.nan], y=[1.0]),
                tmp / "out.csv",
                pixel_size_nm=100.0,
            )
        ),
        InputError,
        "NaN",
    ),
    "training max_nonfinite_steps 0": Case(
        lambda tmp: lambda: next(iter_train(TrainConfig(max_nonfinite_steps=0, out=str(tmp / "m.pt")))),
        InputError,
        "max_nonfinite_steps",
    ),
}
API_WIRING = {
    "1x1 frame (predict)": Case(_api_frames(_arr(np.zeros((1, 1))), "predict"), InputError, "too small"),
    "6x6 frame (predict)": Case(_api_frames(_arr(np.zeros((1, 6, 6))), "predict"), InputError, "too small"),
    "1e30 frames (predict)": Case(
        _api_frames(_arr(np.full((1, 16, 16), 1e30, np.float32)), "predict"), InputError, "camera readings"
    ),
    "20000x20000 frame (predict)": Case(
        _api_frames(lambda tmp: HugeFrames(), "predict"), InputError, "too large"
    ),
}


@pytest.mark.parametrize(
    "name",
    [*API, *API_WIRING],
)
def test_api(name, tmp_path):
    case = API.get(name) or API_WIRING[name]
    MARKER.unlink(missing_ok=True)
    call = case.make(tmp_path)
    if case.error is None:
        call()
        return
    with pytest.raises(case.error) as info:
        call()
    assert isinstance(info.value, VarEmitterError)
    message = str(info.value)
    assert case.fragment in message and "\n" not in message, message
    assert not MARKER.exists(), "the checkpoint's code ran"


# --- CLI ----------------------------------------------------------------------------------------
def _predict(frames_of, *flags, model="classical"):
    def make(tmp):
        frames = frames_of(tmp)
        model_flags = ["--model", model] if isinstance(model, str) else ["--model", str(model(tmp))]
        return ["predict", str(frames), "--out", str(tmp / "out.csv"), *model_flags, *flags]

    return make


def _evaluate(table_of):
    good = _csv(HEADER + "1,1,150,250,1000\n", "truth.csv")
    return lambda tmp: ["evaluate", str(good(tmp)), str(table_of(tmp))]


CLI = {
    "missing file": Case(_predict(_missing()), InputError, "no such file"),
    "text file named .tif": Case(_predict(_bytes(b"just some text\n")), InputError, "TIFF"),
    "empty stack": Case(_predict(_tif(np.zeros((0, 16, 16), np.uint16))), InputError, "empty"),
    "truncated TIFF": Case(_predict(_truncated_tiff), InputError, "damaged or truncated"),
    "4-D stack": Case(
        _predict(_tif(np.zeros((2, 3, 16, 16), np.uint16), imagej=True)), InputError, "4 dimensions"
    ),
    "RGB image": Case(_predict(_tif(np.zeros((40, 40, 3), np.uint8), photometric="rgb")), InputError, "RGB"),
    "NaN frames": Case(_predict(_tif(np.full((2, 16, 16), np.nan, np.float32))), InputError, "NaN"),
    "inf frames": Case(_predict(_tif(np.full((2, 16, 16), np.inf, np.float32))), InputError, "infinite"),
    "1e30 frames": Case(
        _predict(_tif(np.full((2, 16, 16), 1e30, np.float32))), InputError, "camera readings"
    ),
    "negative values (accepted)": Case(_predict(_tif(np.full((2, 16, 16), -500.0, np.float32))), None, ""),
    "6x6 frame": Case(_predict(_tif(np.zeros((6, 6), np.uint16))), InputError, "too small"),
    "1x1 frame": Case(_predict(_tif(np.zeros((1, 1), np.uint16))), InputError, "too small"),
    "20000x20000 frame (TIFF header)": Case(_predict(_huge_tiff), InputError, "too large"),
    "camera qe 0": Case(_predict(GOOD_FRAMES, "--qe", "0"), CameraError, "qe"),
    "camera negative pixel size": Case(
        _predict(GOOD_FRAMES, "--pixel-size-nm", "-100"), CameraError, "pixel_size_nm"
    ),
    "camera NaN e-per-adu": Case(_predict(GOOD_FRAMES, "--e-per-adu", "nan"), CameraError, "finite"),
    "camera inf em-gain": Case(_predict(GOOD_FRAMES, "--em-gain", "inf"), CameraError, "finite"),
    "checkpoint missing": Case(
        _predict(GOOD_FRAMES, model=_missing("m.pt")), CheckpointError, "no model file"
    ),
    "checkpoint truncated": Case(
        _predict(GOOD_FRAMES, model=_checkpoint(raw=lambda b: b[: len(b) // 2])), CheckpointError, "truncated"
    ),
    "checkpoint of another architecture": Case(
        _predict(GOOD_FRAMES, model=_checkpoint(lambda d: d["model_config"].update(embed_dim=32))),
        CheckpointError,
        "does not match",
    ),
    "checkpoint with a pickle carrying code": Case(
        _predict(GOOD_FRAMES, model=_evil_checkpoint), CheckpointError, "refused"
    ),
    "checkpoint config embed_dim 1e9": Case(
        _predict(GOOD_FRAMES, model=_checkpoint(lambda d: d["model_config"].update(embed_dim=10**9))),
        CheckpointError,
        "out of range",
    ),
    "output folder missing": Case(
        lambda tmp: [
            "predict",
            str(GOOD_FRAMES(tmp)),
            "--out",
            str(tmp / "no" / "o.csv"),
            "--model",
            "classical",
        ],
        InputError,
        "does not exist",
    ),
    "output is a folder": Case(
        lambda tmp: ["predict", str(GOOD_FRAMES(tmp)), "--out", str(tmp), "--model", "classical"],
        OSError,
        "folder",
    ),
    "CSV missing columns": Case(_evaluate(_csv('"id","frame","x [nm]"\n1,1,5\n')), CsvFormatError, "lacks"),
    "CSV wrong types": Case(_evaluate(_csv(HEADER + "1,1,abc,100,5\n")), CsvFormatError, "not a number"),
    "CSV in UTF-16": Case(_evaluate(_csv(HEADER.encode("utf-16"))), CsvFormatError, "not UTF-8"),
    "CSV claiming a billion lines": Case(_evaluate(_billion_line_csv), CsvFormatError, "about"),
    "training lr NaN": Case(
        lambda tmp: ["train", "--out", str(tmp / "m.pt"), "--lr", "nan"], InputError, "--lr"
    ),
}


@pytest.mark.parametrize("name", list(CLI))
def test_cli(name, tmp_path, capsys):
    case = CLI[name]
    MARKER.unlink(missing_ok=True)
    argv = case.make(tmp_path)
    capsys.readouterr()  # what writing the test's own input printed (a tifffile warning) is not the command's
    before = {p for p in tmp_path.rglob("*")}
    code = main(argv)
    captured = capsys.readouterr()
    if case.error is None:
        assert code == 0, captured.err
        return
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1, captured.err
    assert lines[0].startswith("napari-var-emitter: error: ") and case.fragment in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert {p for p in tmp_path.rglob("*")} == before, "an output or temporary file was left behind"
    assert not MARKER.exists(), "the checkpoint's code ran"
