"""The batched box Kalman filter against a plain one-track-at-a-time reference, and its
behaviour in seconds: the same motion sampled at different rates gives the same estimate."""

import numpy as np
import pytest

from agent.tracking import kalman


def reference_predict(mean, cov, dt):
    """Textbook form, one track: x = F x, P = F P F^T + Q."""
    f = np.eye(8)
    f[:4, 4:] = dt * np.eye(4)
    w, h = max(mean[2], 1.0), max(mean[3], 1.0)
    scale = np.array([w, h, w, h])
    q = np.diag(np.concatenate([kalman.POSITION_VAR_PER_S * scale ** 2,
                                kalman.VELOCITY_VAR_PER_S * scale ** 2])) * dt
    return f @ mean, f @ cov @ f.T + q


def reference_update(mean, cov, z):
    hm = np.hstack([np.eye(4), np.zeros((4, 4))])
    w, h = max(mean[2], 1.0), max(mean[3], 1.0)
    r = np.diag((kalman.MEASUREMENT_STD * np.array([w, h, w, h])) ** 2)
    s = hm @ cov @ hm.T + r
    k = cov @ hm.T @ np.linalg.inv(s)
    return mean + k @ (z - hm @ mean), (np.eye(8) - k @ hm) @ cov


def random_tracks(rng, n):
    z = np.column_stack([rng.uniform(0, 640, n), rng.uniform(0, 480, n), rng.uniform(5, 200, (n, 2))])
    mean, cov = kalman.initiate(z)
    mean[:, 4:] = rng.normal(0, 50, (n, 4))
    a = rng.normal(0, 1, (n, 8, 8))
    cov = cov + a @ np.swapaxes(a, 1, 2)  # any symmetric positive-definite covariance
    return mean, cov


def test_batched_predict_and_update_equal_the_textbook_filter_track_by_track():
    rng = np.random.default_rng(1)
    mean, cov = random_tracks(rng, 7)
    dt = rng.uniform(0.0, 0.5, 7)
    pm, pc = kalman.predict(mean, cov, dt)
    z = pm[:, :4] + rng.normal(0, 3, (7, 4))
    um, uc = kalman.update(pm, pc, z)
    for i in range(7):
        rm, rc = reference_predict(mean[i], cov[i], dt[i])
        np.testing.assert_allclose(pm[i], rm, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(pc[i], rc, rtol=1e-10, atol=1e-9)
        rm, rc = reference_update(rm, rc, z[i])
        np.testing.assert_allclose(um[i], rm, rtol=1e-9, atol=1e-7)
        np.testing.assert_allclose(uc[i], rc, rtol=1e-7, atol=1e-6)
    assert np.allclose(uc, np.swapaxes(uc, 1, 2))
    assert (np.linalg.eigvalsh(uc) > 0).all()


def test_prediction_moves_by_velocity_times_seconds_and_uncertainty_grows_with_time():
    mean, cov = kalman.initiate(np.array([[100.0, 50.0, 20.0, 40.0]]))
    mean[0, 4:6] = [30.0, -10.0]  # px/s
    short = kalman.predict(mean, cov, np.array([0.1]))
    long = kalman.predict(mean, cov, np.array([1.0]))
    np.testing.assert_allclose(short[0][0, :2], [103.0, 49.0])
    np.testing.assert_allclose(long[0][0, :2], [130.0, 40.0])
    assert (np.diag(long[1][0]) > np.diag(short[1][0])).all()
    same = kalman.predict(mean, cov, np.array([0.0]))
    np.testing.assert_array_equal(same[0], mean)
    np.testing.assert_array_equal(same[1], cov)


def test_update_pulls_the_box_to_the_measurement_and_shrinks_the_uncertainty():
    mean, cov = kalman.initiate(np.array([[100.0, 100.0, 40.0, 40.0]]))
    mean, cov = kalman.predict(mean, cov, np.array([0.1]))
    new_mean, new_cov = kalman.update(mean, cov, np.array([[110.0, 100.0, 40.0, 40.0]]))
    assert 100.0 < new_mean[0, 0] < 110.0
    assert (np.diag(new_cov[0])[:4] < np.diag(cov[0])[:4]).all()


@pytest.mark.parametrize("fps", [5.0, 15.0, 30.0])
def test_velocity_is_estimated_in_pixels_per_second_at_any_frame_rate(fps):
    velocity = np.array([60.0, -24.0])  # px/s
    start = np.array([100.0, 300.0])
    mean, cov = kalman.initiate(np.array([[*start, 30.0, 30.0]]))
    steps = int(4 * fps)  # four seconds of frames
    for k in range(1, steps + 1):
        mean, cov = kalman.predict(mean, cov, np.array([1.0 / fps]))
        mean, cov = kalman.update(mean, cov, np.array([[*(start + velocity * k / fps), 30.0, 30.0]]))
    np.testing.assert_allclose(mean[0, 4:6], velocity, atol=2.0)
    ahead, _ = kalman.predict(mean, cov, np.array([0.5]))
    np.testing.assert_allclose(ahead[0, :2], start + velocity * (4.0 + 0.5), atol=1.5)


def test_box_conversions_round_trip():
    xyxy = np.array([[10.0, 20.0, 50.0, 100.0], [0.0, 0.0, 1.0, 1.0]])
    xywh = kalman.xyxy_to_xywh(xyxy)
    np.testing.assert_allclose(xywh[0], [30.0, 60.0, 40.0, 80.0])
    np.testing.assert_allclose(kalman.xywh_to_xyxy(xywh), xyxy)
    np.testing.assert_allclose(kalman.xywh_to_xyxy(np.array([[5.0, 5.0, -2.0, 4.0]])), [[5.0, 3.0, 5.0, 7.0]])
