import numpy as np
import pytest

from raytal.core.errors import DataError
from raytal.data.features import check_features, load_features, save_features
from raytal.core.video import Video


def video(end=10.0):
    # fps 10, feat_stride 4, num_frames 8: an end at 10 s is grid position (10*10 - 8/2)/4 = 24.
    return Video("vid", "train", 12.0, 10.0, 4, 8, segments=np.array([[1.0, end]]), labels=np.array([0]))


def test_load_good(tmp_path):
    x = np.arange(23 * 3, dtype=np.float32).reshape(23, 3)
    save_features(tmp_path, "vid", x)
    np.testing.assert_array_equal(load_features(tmp_path, video(), feature_dim=3), x)


def test_length_check_boundary(tmp_path):
    # Snippets cover up to grid position T-1 + num_frames/(2*feat_stride) = T - 1 + 1 = T; with the
    # tolerance of 1 snippet, position 24 needs T + 1 >= 24, i.e. T >= 23.
    check_features(np.zeros((23, 3), np.float32), video())
    with pytest.raises(DataError, match=r"vid.*field 'features'.*T = 22 snippets is shorter"):
        check_features(np.zeros((22, 3), np.float32), video(), source="f.npy")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"vid.npy: video 'vid': field 'features': feature file missing"):
        load_features(tmp_path, video())


def test_not_2d(tmp_path):
    np.save(tmp_path / "vid.npy", np.zeros((30,), np.float32))
    with pytest.raises(DataError, match=r"vid.npy: video 'vid': field 'features': expected a 2-D array"):
        load_features(tmp_path, video())


def test_wrong_dim(tmp_path):
    np.save(tmp_path / "vid.npy", np.zeros((30, 5), np.float32))
    with pytest.raises(DataError, match=r"vid.npy: video 'vid': field 'features': expected D = 4"):
        load_features(tmp_path, video(), feature_dim=4)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite(tmp_path, bad):
    x = np.zeros((30, 2), np.float32)
    x[7, 1] = bad
    np.save(tmp_path / "vid.npy", x)
    with pytest.raises(DataError, match=r"vid.npy: video 'vid': field 'features': 1 NaN/Inf values \(first in snippet 7"):
        load_features(tmp_path, video())


def test_too_short_from_file(tmp_path):
    np.save(tmp_path / "vid.npy", np.zeros((10, 2), np.float32))
    with pytest.raises(DataError, match=r"vid.npy: video 'vid': field 'features'.*shorter than the annotations"):
        load_features(tmp_path, video())


def test_pickle_refused_and_corrupt(tmp_path):
    np.save(tmp_path / "vid.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="not a readable .npy"):
        load_features(tmp_path, video())
    (tmp_path / "vid.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DataError, match="not a readable .npy"):
        load_features(tmp_path, video())


def test_float64_cast_and_no_segments():
    v = Video("e", "train", 3.0, 10.0, 4, 8)
    out = check_features(np.ones((1, 2), np.float64), v)
    assert out.dtype == np.float32
