"""Fashion-MNIST idx loading: round trip, damaged files and the missing-data message."""
import gzip
import struct

import numpy as np
import pytest

from fastconv import datasets
from fastconv.datasets import DatasetError, load_fashion_mnist, read_idx


def idx_bytes(array, magic=None):
    """The idx encoding of a uint8 array (magic 0x0000080D, D = ndim, then big-endian dims)."""
    magic = bytes([0, 0, 8, array.ndim]) if magic is None else magic
    return magic + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def write_set(folder, n_train=5, n_test=3, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for name, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            with gzip.open(folder / (name + ".gz"), "wb") as f:
                f.write(data)
        else:
            (folder / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_round_trip(tmp_path, gz):
    arrays = write_set(tmp_path, gz=gz)
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(tmp_path)
    assert x_train.shape == (5, 1, 28, 28) and x_train.dtype == np.float32
    assert x_test.shape == (3, 1, 28, 28)
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    np.testing.assert_allclose(x_train[:, 0] * 255, arrays["train-images-idx3-ubyte"], atol=1e-4)
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])
    assert 0 <= x_train.min() and x_train.max() <= 1


def test_environment_variable_is_used(tmp_path, monkeypatch):
    write_set(tmp_path)
    monkeypatch.setenv("FASTCONV_DATA", str(tmp_path))
    (x_train, _), _ = load_fashion_mnist()
    assert len(x_train) == 5


def test_bad_magic(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(idx_bytes(np.zeros((2, 28, 28)), magic=b"\x00\x00\x0d\x03"))  # float, not ubyte
    with pytest.raises(DatasetError, match="bad magic number 00000d03"):
        read_idx(str(path), 3)
    path.write_bytes(idx_bytes(np.zeros(4)))  # a label file where images were expected
    with pytest.raises(DatasetError, match="magic"):
        read_idx(str(path), 3)


@pytest.mark.parametrize("cut", [2, 10, 100])
def test_truncated_file(tmp_path, cut):
    data = idx_bytes(np.ones((3, 28, 28)))
    path = tmp_path / "f"
    path.write_bytes(data[:-cut] if cut != 10 else data[:10])  # cut data, or cut the header
    with pytest.raises(DatasetError, match="truncated|too short"):
        read_idx(str(path), 3)


def test_a_small_file_announcing_or_inflating_to_gigabytes_is_refused(tmp_path, monkeypatch):
    """A 60 KB gzip of 60 MB of zeros behind a 10-label header was read whole before the length
    check (40 MB of gzip would have asked for 40 GB), and dimensions whose product passes int64
    wrapped to a size the check then accepted (found by fuzzing)."""
    import tracemalloc
    path = tmp_path / "bomb.gz"
    with gzip.open(path, "wb") as f:
        f.write(idx_bytes(np.zeros(10)))
        f.write(bytes(60 << 20))
    tracemalloc.start()
    with pytest.raises(DatasetError, match=r"header says \(10,\) = 10 bytes of data but the file holds more"):
        read_idx(str(path), 1)
    assert tracemalloc.get_traced_memory()[1] < 1 << 20  # bytes allocated at the peak
    tracemalloc.stop()
    huge = tmp_path / "huge"
    huge.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**22, 2**21, 2**21))
    with pytest.raises(DatasetError, match="more than an idx file"):
        read_idx(str(huge), 3)


def test_truncated_gzip(tmp_path):
    packed = gzip.compress(idx_bytes(np.ones((3, 28, 28))))
    (tmp_path / "f.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DatasetError, match="cannot be read|truncated"):
        read_idx(str(tmp_path / "f.gz"), 3)


def test_wrong_image_size_and_label_count(tmp_path):
    write_set(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((3, 27, 27))))
    with pytest.raises(DatasetError, match="28x28"):
        load_fashion_mnist(tmp_path)
    write_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(4)))
    with pytest.raises(DatasetError, match="4 labels"):
        load_fashion_mnist(tmp_path)
    write_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([1, 12, 3])))
    with pytest.raises(DatasetError, match="label 12"):
        load_fashion_mnist(tmp_path)


def test_missing_data_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("FASTCONV_DATA", raising=False)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="FASTCONV_DATA"):
        load_fashion_mnist(tmp_path)  # the folder exists, the files do not
    assert datasets.DEFAULT_DIR == "/usr/share/datasets/fashion-mnist"


def test_read_idx_takes_path_likes_and_bytes(tmp_path):
    path = tmp_path / "one.idx"
    path.write_bytes(idx_bytes(np.array([7, 9])))
    for name in (path, str(path), bytes(path)):
        np.testing.assert_array_equal(read_idx(name, 1), [7, 9])
    gz = tmp_path / "one.idx.gz"
    with gzip.open(gz, "wb") as f:
        f.write(idx_bytes(np.array([3])))
    np.testing.assert_array_equal(read_idx(gz, 1), [3])
    np.testing.assert_array_equal(read_idx(bytes(gz), 1), [3])
    with pytest.raises(TypeError):
        read_idx(None, 1)


def test_an_empty_path_is_refused_not_taken_for_the_default(tmp_path, monkeypatch):
    write_set(tmp_path)
    monkeypatch.setenv("FASTCONV_DATA", str(tmp_path))
    for empty in ("", b""):
        with pytest.raises(ValueError, match="path must name a folder.*empty"):
            load_fashion_mnist(empty)
        with pytest.raises(ValueError, match="path must name a folder"):
            datasets.data_dir(empty)
    assert datasets.data_dir() == str(tmp_path)  # None still means $FASTCONV_DATA
    assert datasets.data_dir(bytes(tmp_path)) == str(tmp_path)
    monkeypatch.setenv("FASTCONV_DATA", "")  # an empty variable counts as unset
    monkeypatch.setattr(datasets, "DEFAULT_DIR", str(tmp_path))
    assert datasets.data_dir() == str(tmp_path)


@pytest.mark.parametrize("rng", [None, 0, np.random.RandomState(0), "seed"])
def test_random_shift_flip_wants_a_generator(rng):
    x = np.ones((2, 1, 5, 5), np.float32)
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        datasets.random_shift_flip(x, rng)


@pytest.mark.parametrize("max_shift, error", [
    (-1, ValueError), (5, ValueError), (10**5, ValueError), (1.9, TypeError), (2.0, TypeError),
    ("2", TypeError), (True, TypeError), (None, TypeError)])
def test_random_shift_flip_checks_max_shift(max_shift, error):
    x = np.ones((2, 1, 5, 6), np.float32)
    with pytest.raises(error, match="max_shift must be a non-negative int"):
        datasets.random_shift_flip(x, np.random.default_rng(0), max_shift=max_shift)


def test_random_shift_flip_bounds_and_flip_flag():
    rng = np.random.default_rng(1)
    x = np.ones((2, 1, 5, 6), np.float32)
    assert datasets.random_shift_flip(x, rng, max_shift=np.int64(4)).shape == x.shape  # < 5
    assert datasets.random_shift_flip(np.ones((1, 1, 1, 1)), rng, max_shift=0).shape == (1, 1, 1, 1)
    imgs = np.tile(np.arange(4.0).reshape(1, 1, 1, 4), (50, 1, 1, 1))
    for bad in ("no", 0, 1, None):
        with pytest.raises(TypeError, match="flip must be True or False"):
            datasets.random_shift_flip(imgs, rng, 0, flip=bad)
    np.testing.assert_array_equal(datasets.random_shift_flip(imgs, rng, 0, flip=False), imgs)
    np.testing.assert_array_equal(datasets.random_shift_flip(imgs, rng, 0, flip=np.False_), imgs)
    assert (datasets.random_shift_flip(imgs, rng, 0, flip=True)[:, 0, 0, 0] == 3).any()
