"""Nothing lost: a run killed (SIGKILL) in the middle of writing leaves the previous file intact,
never a partial file at the target's name; its temporary file is named as one, and the next write
to the same target removes it."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from _tiny import TINY_TRAIN
from napari_var_emitter.io.atomic import temporaries
from napari_var_emitter.io.localizations import Localizations, read_csv, to_csv
from napari_var_emitter.io.picasso import read_picasso, to_picasso, yaml_path

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL and the stale-file check are POSIX")

CHILD_PRELUDE = """
import sys, time
from pathlib import Path
signal_path = Path(sys.argv[1])
target = Path(sys.argv[2])

def stall(what):
    signal_path.write_text(str(what))  # tell the test we are in the middle of the write
    time.sleep(600)
"""


def _run_until_signal(tmp_path: Path, body: str, target: Path, ready=None) -> subprocess.Popen:
    """Start a child running ``body``; when it signals (or ``ready()`` holds), SIGKILL it."""
    signal_path = tmp_path / "in-the-middle"
    script = CHILD_PRELUDE + textwrap.dedent(body)
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(signal_path), str(target)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 120
    while not (signal_path.exists() or (ready is not None and ready())):
        if child.poll() is not None:
            pytest.fail(f"the writer ended before it was killed: {child.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            child.kill()
            pytest.fail("the writer never reached the middle of its write")
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    child.stdout.close()
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    return child


def _table(n: int, seed: int) -> Localizations:
    rng = np.random.default_rng(seed)
    return Localizations(
        frame=rng.integers(0, 9, n), x=rng.uniform(0, 60, n), y=rng.uniform(0, 60, n), photons=1e3
    )


def test_killed_csv_write_leaves_the_previous_table(tmp_path):
    target = tmp_path / "locs.csv"
    previous = _table(50, seed=1)
    to_csv(previous, target, 100.0)
    before = target.read_bytes()

    def half_written():  # the child's temporary file holds > 1 MB of a ~200 MB table
        return any(p.stat().st_size > 1 << 20 for p in temporaries(target) if p.exists())

    body = """
        import numpy as np
        from napari_var_emitter.io.localizations import Localizations, to_csv
        n = 2_000_000
        to_csv(Localizations(frame=np.zeros(n, int), x=np.arange(n) * 1e-3, y=np.ones(n)), target, 100.0)
        print("finished")
    """
    child = _run_until_signal(tmp_path, body, target, ready=half_written)
    assert target.read_bytes() == before  # the previous file, byte for byte
    assert len(read_csv(target, 100.0)) == len(previous)
    (stale,) = temporaries(target)  # the killed write's temporary, clearly named
    assert stale.name.startswith(f".locs.csv.{child.pid}.") and stale.name.endswith(".tmp")

    to_csv(_table(5, seed=2), target, 100.0)  # the next write cleans up after the dead one
    assert temporaries(target) == [] and len(read_csv(target, 100.0)) == 5


def test_killed_picasso_write_leaves_the_previous_files(tmp_path):
    target = tmp_path / "locs.hdf5"
    to_picasso(_table(40, seed=3), target, pixel_size_nm=100.0)
    before = (target.read_bytes(), yaml_path(target).read_bytes())
    body = """
        import h5py
        import numpy as np
        from napari_var_emitter.io.localizations import Localizations
        from napari_var_emitter.io.picasso import to_picasso
        real = h5py.Group.create_dataset
        def create_then_stall(self, name, *args, **kwargs):
            dataset = real(self, name, *args, **kwargs)
            self.file.flush()
            stall(self.file.filename)  # the locs are written, the metadata is not: killed here
        h5py.Group.create_dataset = create_then_stall
        n = 100_000
        locs = Localizations(frame=np.zeros(n, int), x=np.ones(n), y=np.ones(n))
        to_picasso(locs, target, pixel_size_nm=160.0)
    """
    _run_until_signal(tmp_path, body, target)
    assert (target.read_bytes(), yaml_path(target).read_bytes()) == before
    locs, meta = read_picasso(target)
    assert len(locs) == 40 and meta["pixel_size_nm"] == 100.0
    assert len(temporaries(target)) == 1
    to_picasso(_table(3, seed=4), target, pixel_size_nm=100.0)
    assert temporaries(target) == [] and len(read_picasso(target)[0]) == 3


def test_killed_training_keeps_its_last_checkpoint_and_resumes(tmp_path):
    """A real training run, killed while it rewrites its checkpoint at step 2: the step-1
    checkpoint stays loadable, and resume continues from step 1."""
    from napari_var_emitter.model.checkpoint import load_checkpoint
    from napari_var_emitter.train import TrainConfig, iter_train

    target = tmp_path / "m.pt"
    settings = {**TINY_TRAIN, "val_every": 1, "out": str(target)}
    del settings["steps"]  # each run below sets its own
    body = f"""
        import torch
        from napari_var_emitter.train import TrainConfig, iter_train
        real, saves = torch.save, []
        def save_half_then_stall(obj, path, *args, **kwargs):
            saves.append(path)
            if len(saves) == 2:  # the second checkpoint: write half of it, then get killed
                real(obj, path, *args, **kwargs)
                data = Path(path).read_bytes()
                Path(path).write_bytes(data[: len(data) // 2])
                stall(path)
            return real(obj, path, *args, **kwargs)
        torch.save = save_half_then_stall
        for event in iter_train(TrainConfig(steps=1000, **{settings!r})):
            print(event.step, flush=True)
    """
    _run_until_signal(tmp_path, body, target)
    model = load_checkpoint(target)
    assert model.meta["step"] == 1
    (stale,) = temporaries(target)  # half a checkpoint, under a temporary name
    assert stale.stat().st_size > 0

    resumed = list(iter_train(TrainConfig(steps=2, resume=True, **settings)))
    assert [e.step for e in resumed] == [2]
    assert load_checkpoint(target).meta["step"] == 2
    assert temporaries(target) == []
