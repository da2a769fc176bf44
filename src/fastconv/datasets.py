"""Fashion-MNIST from its idx files (plain or gzip-compressed).

Looked up in `path`, else ``$FASTCONV_DATA``, else ``/usr/share/datasets/fashion-mnist/`` (where
Debian's ``dataset-fashion-mnist`` package puts them). The idx format: a 4-byte magic number
(two zero bytes, a type code, 0x08 = unsigned byte, and the number of dimensions), then each
dimension as a big-endian uint32, then the data. Every header field and the file length is
checked, so a damaged file gives an error, never a wrong array.
"""
import gzip
import numbers
import os

import numpy as np

from ._shapes import flag

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
HOW_TO_GET = ("install them with `sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu, into "
              f"{DEFAULT_DIR}), or download the four idx files from "
              "https://github.com/zalandoresearch/fashion-mnist and point FASTCONV_DATA (or "
              "path=) at their folder")


#: The most data bytes an idx file may announce: Fashion-MNIST's training images are 47 MB.
_MAX_BYTES = 1 << 32


class DatasetError(ValueError):
    """A data file is missing, damaged or not what it claims to be."""


def _find(folder, stem):
    for name in (stem, stem + ".gz"):
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"Fashion-MNIST file {stem}[.gz] not found in {folder}: {HOW_TO_GET}")


def read_idx(filename, expected_ndim):
    """The uint8 array stored in an idx file, after checking magic, dimensions and length. The
    header is read first and then exactly the data it announces (one byte more, to see a longer
    file), so what is held in memory is bounded by the header's claim (at most _MAX_BYTES): a
    small compressed file that inflates to gigabytes behind a small header is refused after that
    many bytes. filename: a str, bytes or os.PathLike path."""
    filename = os.fsdecode(filename)  # a TypeError naming the types for anything else
    opener = gzip.open if filename.endswith(".gz") else open
    try:
        with opener(filename, "rb") as f:
            head = f.read(4)
            if len(head) < 4:
                raise DatasetError(f"{filename}: {len(head)} bytes, too short for an idx header")
            zero, dtype_code, ndim = head[:2], head[2], head[3]
            if zero != b"\x00\x00" or dtype_code != 0x08 or ndim != expected_ndim:
                raise DatasetError(f"{filename}: bad magic number {head.hex()}; expected "
                                   f"0000080{expected_ndim} (unsigned bytes, {expected_ndim} "
                                   f"dimensions)")
            raw_dims = f.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise DatasetError(f"{filename}: truncated header ({4 + len(raw_dims)} bytes, "
                                   f"need {4 + 4 * ndim})")
            dims = tuple(int(d) for d in np.frombuffer(raw_dims, ">u4"))
            size = 1
            for d in dims:  # (Python ints: a product of uint32s can pass int64's range)
                size *= d
            if size > _MAX_BYTES:
                raise DatasetError(f"{filename}: header says {dims} = {size} bytes of data, more "
                                   f"than an idx file of this library holds ({_MAX_BYTES})")
            raw = f.read(size + 1)
    except (OSError, EOFError) as exc:  # gzip reports a truncated stream as EOFError/BadGzipFile
        raise DatasetError(f"{filename}: cannot be read ({exc})") from None
    if len(raw) != size:
        raise DatasetError(f"{filename}: header says {dims} = {size} bytes of data but the file "
                           f"holds {'more' if len(raw) > size else len(raw)} (truncated or corrupt)")
    return np.frombuffer(raw, np.uint8).reshape(dims)


def _load_split(folder, images_key, labels_key):
    images = read_idx(_find(folder, FILES[images_key]), 3)
    labels = read_idx(_find(folder, FILES[labels_key]), 1)
    if images.shape[1:] != (28, 28):
        raise DatasetError(f"{FILES[images_key]}: images must be 28x28, got {images.shape[1:]}")
    if len(labels) != len(images):
        raise DatasetError(f"{FILES[labels_key]} has {len(labels)} labels but "
                           f"{FILES[images_key]} has {len(images)} images")
    if len(labels) and labels.max() >= len(CLASS_NAMES):
        raise DatasetError(f"{FILES[labels_key]}: label {labels.max()} is not a class (0-9)")
    x = images.reshape(-1, 1, 28, 28).astype(np.float32)
    x /= np.float32(255)
    return x, labels.astype(np.int64)


def data_dir(path=None):
    """The folder the files are read from: `path` (a str, bytes or os.PathLike; None for the
    defaults), else ``$FASTCONV_DATA`` when set and not empty, else the Debian location. An empty
    `path` is refused rather than taken for "the default"."""
    if path is not None:
        folder = os.fsdecode(path)
        if not folder:
            raise ValueError("path must name a folder (or be None for $FASTCONV_DATA or "
                             f"{DEFAULT_DIR}), got an empty path {path!r}")
    else:
        folder = os.environ.get("FASTCONV_DATA") or DEFAULT_DIR
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Fashion-MNIST folder {folder} does not exist: {HOW_TO_GET}")
    return folder


def load_fashion_mnist(path=None):
    """((x_train, y_train), (x_test, y_test)): x float32 (N, 1, 28, 28) in [0, 1], y int64 (N,).

    Raises FileNotFoundError (saying how to get the data) when the files are absent and
    `DatasetError` (a ValueError) when one is damaged.
    """
    folder = data_dir(path)
    return (_load_split(folder, "train_images", "train_labels"),
            _load_split(folder, "test_images", "test_labels"))


def random_shift_flip(x, rng, max_shift=2, flip=True):
    """A training batch x (N, C, H, W) augmented the usual way for small images: each image moved
    by up to `max_shift` pixels in each direction (the uncovered border filled with zeros, i.e.
    a random crop of the zero-padded image) and, with `flip`, mirrored left-right with
    probability 1/2. Returns a new array; x is not modified. rng: a numpy Generator; max_shift:
    an int in [0, min(H, W)) (a larger shift would only move the image out of its frame); flip:
    True or False."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"x must be a batch of images (N, C, H, W), got shape {x.shape}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), got "
                        f"{type(rng).__name__}")
    if isinstance(max_shift, (bool, np.bool_)) or not isinstance(max_shift, numbers.Integral):
        raise TypeError(f"max_shift must be a non-negative int, got {max_shift!r}")
    flip = flag(flip, "flip")
    n, _, h, w = x.shape
    s = int(max_shift)
    if s < 0 or (s and s >= min(h, w)):  # (0, no shift, suits any size)
        raise ValueError(f"max_shift must be a non-negative int smaller than the images' height "
                         f"and width ({h}x{w}), got {max_shift!r}")
    padded = np.zeros(x.shape[:2] + (h + 2 * s, w + 2 * s), x.dtype)
    padded[:, :, s:s + h, s:s + w] = x
    offsets = rng.integers(0, 2 * s + 1, size=(n, 2))
    out = np.empty_like(x)
    for i, (dy, dx) in enumerate(offsets):
        out[i] = padded[i, :, dy:dy + h, dx:dx + w]
    if flip:
        mirrored = rng.random(n) < 0.5
        out[mirrored] = out[mirrored, :, :, ::-1]
    return out
