"""Pooling an emitter's fits across consecutive frames (movies)."""

import numpy as np

from napari_var_emitter.io.localizations import Localizations
from napari_var_emitter.localize.pooling import POOL_PX, TemporalPooler, pool, pool_positions


def test_an_emitter_in_three_frames_is_averaged_by_its_fits_weights():
    # one emitter at x ~ 10 in frames 0, 1, 2 (sd 0.1, 0.2, 0.1); another at x = 20 in frame 1 only
    frame = np.array([0, 1, 1, 2])
    x = np.array([10.0, 10.3, 20.0, 9.9])
    y = np.full(4, 5.0)
    sd = np.array([0.1, 0.2, 0.1, 0.1])
    u = np.sqrt(sd**2 + 0.05**2)  # plus a part that does not average out
    px, py, pu = pool_positions(frame, x, y, u, sd)
    w = 1 / sd**2
    # frame 1 sees both neighbours; frames 0 and 2 see frame 1 only
    assert np.isclose(px[1], (w[0] * 10.0 + w[1] * 10.3 + w[3] * 9.9) / (w[0] + w[1] + w[3]))
    assert np.isclose(px[0], (w[0] * 10.0 + w[1] * 10.3) / (w[0] + w[1]))
    assert np.isclose(pu[1], np.sqrt(1 / (w[0] + w[1] + w[3]) + 0.05**2))
    assert px[2] == 20.0 and pu[2] == u[2]  # alone: as it was
    np.testing.assert_array_equal(py, y)


def test_far_apart_unfitted_or_not_mutual_nearest_are_not_pooled():
    frame = np.array([0, 1, 0, 1, 0, 0, 1])
    x = np.array([10.0, 10.0 + 1.5 * POOL_PX, 30.0, 30.2, 50.0, 50.4, 50.1])
    y = np.zeros(7)
    sd = np.array([0.1, 0.1, np.nan, 0.1, 0.1, 0.1, 0.1])  # row 2 was not fitted
    u = np.full(7, 0.2)
    px, _, _ = pool_positions(frame, x, y, u, sd)
    np.testing.assert_array_equal(px[:4], x[:4])  # too far; unfitted
    # 50.1 in frame 1 is nearest to 50.0 in frame 0, so 50.4 stays alone
    assert px[5] == 50.4 and np.isclose(px[4], 50.05) and np.isclose(px[6], 50.05)


def test_a_pending_row_stays_only_where_an_adjacent_frame_has_the_same_spot():
    rows = [  # frame, x, pending
        (0, 10.0, True),  # one dim emitter in frames 0 and 1: confirmed by each other
        (1, 10.1, True),
        (0, 30.0, True),  # in frames 0 and 2: not adjacent
        (2, 30.0, True),
        (1, 50.0, True),  # beside a sure detection of frame 2
        (2, 50.1, False),
        (1, 70.0, False),  # sure: kept alone
        (1, 90.0, True),  # 1.5 px from frame 0's: too far to be the same emitter
        (0, 91.5, False),
    ]
    frame, x, pending = (np.array(v) for v in zip(*rows, strict=True))
    n = len(x)
    locs = Localizations(frame=frame, x=x, y=np.zeros(n), uncertainty=np.full(n, 0.2))
    kept = pool(locs, np.full(n, 0.1), pending)
    assert kept.frame.tolist() == [0, 1, 1, 2, 1, 0]
    np.testing.assert_allclose(kept.x, [10.05, 10.05, 50.05, 50.05, 70.0, 91.5])  # and pooled
    assert len(pool(locs, np.full(n, 0.1))) == n  # without the pending column nothing is dropped


def _table(seed=0, frames=12):
    rng = np.random.default_rng(seed)
    sites = rng.uniform(0, 40, size=(15, 2))
    on = rng.random((frames, 15)) < 0.6  # blinking
    rows = [(t, *sites[k] + rng.normal(0, 0.1, 2)) for t in range(frames) for k in range(15) if on[t, k]]
    frame, x, y = (np.array(v) for v in zip(*rows, strict=True))
    sd = rng.uniform(0.05, 0.2, len(x))
    photons = rng.uniform(50, 150, len(x))  # against a bound of 40: some confirmed jointly, some not
    pending = rng.random(len(x)) < 0.5
    locs = Localizations(frame=frame, x=x, y=y, photons=photons, uncertainty=sd * 1.1)
    return locs, sd, pending


def test_the_stream_gives_the_whole_tables_result_for_any_chunking():
    locs, sd, pending = _table()
    whole = pool(locs, sd, pending)
    for bounds in ([0, 12], [0, 1, 2, 3, 12], [0, 5, 6, 11, 12], list(range(13))):
        pooler, parts = TemporalPooler(), []
        for a, b in zip(bounds[:-1], bounds[1:], strict=False):
            rows = (locs.frame >= a) & (locs.frame < b)
            parts.append(pooler.feed(locs.subset(rows), sd[rows], b, pending[rows]))
        parts.append(pooler.flush())
        got = Localizations.concatenate(parts)
        np.testing.assert_array_equal(got.frame, whole.frame)
        np.testing.assert_allclose(got.x, whole.x)
        np.testing.assert_allclose(got.uncertainty, whole.uncertainty)
    assert np.abs(pool(locs, sd).x - locs.x).max() > 0  # something was pooled
    assert len(locs) - pending.sum() < len(whole) < len(locs)  # some pending rows kept, some dropped
