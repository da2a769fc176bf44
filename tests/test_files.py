"""Files fastconv writes and reads: atomic writes, and Sequential.load's checks on damaged,
malformed or hostile files (every error names the file; nothing large is built from a small file)."""
import json
import os
import tracemalloc

import numpy as np
import pytest

from fastconv import nn
from fastconv._files import atomic_write


def small_model(dtype=np.float32):
    model = nn.Sequential([nn.Conv2D(1, 2, 3, padding=1, seed=0), nn.ReLU(), nn.Flatten(),
                           nn.Dense(2 * 4 * 4, 3, seed=1)])
    return model.astype(dtype)


def test_atomic_write_replaces_the_file_only_when_the_write_completes(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write(b"half of the new")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]  # no temporary file left behind
    with atomic_write(path) as f:
        f.write(b"new")
    assert path.read_bytes() == b"new"
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    old = os.umask(0)
    os.umask(old)
    return old


def test_atomic_write_through_a_symlink_updates_its_target_and_keeps_the_link(tmp_path):
    """Writing to a link replaced the link with a regular file; the target kept its old content
    (found by fuzzing). The target may live in another folder."""
    (tmp_path / "models").mkdir()
    target = tmp_path / "models" / "real.bin"
    target.write_bytes(b"old")
    link = tmp_path / "latest.bin"
    os.symlink(os.path.join("models", "real.bin"), link)
    with atomic_write(link) as f:
        f.write(b"new")
    assert os.path.islink(link) and os.readlink(link) == os.path.join("models", "real.bin")
    assert target.read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["latest.bin", "models"]
    assert os.listdir(tmp_path / "models") == ["real.bin"]


def test_atomic_write_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    """Re-saving a private (0600) file made it 0644 (found by fuzzing); a new file still gets
    0666 & ~umask, as open() would give it."""
    path = tmp_path / "model.npz"
    small_model().save(path)
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o666 & ~_umask())
    for mode in (0o600, 0o640, 0o444):
        os.chmod(path, mode)
        small_model().save(path)
        assert oct(os.stat(path).st_mode & 0o777) == oct(mode)
    with atomic_write(tmp_path / "metrics.json", "w", encoding="utf-8") as f:
        f.write("{}")
    assert oct(os.stat(tmp_path / "metrics.json").st_mode & 0o777) == oct(0o666 & ~_umask())


@pytest.mark.parametrize("name, error, words", [
    ("", ValueError, "the path is empty"),
    ("out" + os.sep, ValueError, "ends in a separator"),
    ("a_dir", IsADirectoryError, "is a directory"),
    (os.path.join("no_such_folder", "m.npz"), FileNotFoundError, "does not exist"),
    (os.path.join("a_file", "m.npz"), NotADirectoryError, "is not a directory"),
])
def test_odd_paths_are_clear_errors_naming_the_path_and_leave_nothing_behind(
        tmp_path, monkeypatch, name, error, words):
    """These errors named atomic_write's temporary file, not the path; for "" and "out/" that
    temporary file was made in the parent folder (found by fuzzing)."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "a_dir").mkdir()
    (work / "a_file").write_bytes(b"x")
    monkeypatch.chdir(work)
    with pytest.raises(error, match=words) as info:
        with atomic_write(name) as f:
            f.write(b"never written")
    assert repr(name) in str(info.value)
    assert ".tmp" not in str(info.value)
    assert sorted(os.listdir(work)) == ["a_dir", "a_file"]
    assert os.listdir(tmp_path) == ["work"] and os.listdir(work / "a_dir") == []
    with pytest.raises(error, match=words):
        small_model().save(name)
    assert sorted(os.listdir(work)) == ["a_dir", "a_file"] and os.listdir(tmp_path) == ["work"]


def test_a_save_that_fails_part_way_keeps_the_previous_model(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    model = small_model()
    model.save(path)
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 a torn archive")
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="No space left"):
        model.save(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]


def test_save_and_load_round_trip_both_dtypes(tmp_path):
    for dtype in (np.float32, np.float64):
        model = small_model(dtype)
        model.save(tmp_path / "m.npz")
        same = nn.Sequential.load(tmp_path / "m.npz")
        assert same.dtype == dtype
        for a, b in zip(model.layers, same.layers):
            for key in a.params:
                np.testing.assert_array_equal(a.params[key], b.params[key])


def _write_npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _arch(model):
    return np.array(json.dumps(model.architecture()))


def _arrays(model, **changes):
    out = {"architecture": _arch(model)}
    for i, layer in enumerate(model.layers):
        for key, value in layer.params.items():
            out[f"layer{i}.{key}"] = value
    out.update(changes)
    return {k: v for k, v in out.items() if v is not None}


def test_damaged_files_are_value_errors_naming_the_file(tmp_path):
    good = tmp_path / "good.npz"
    small_model().save(good)
    data = good.read_bytes()
    cases = {
        "empty.npz": b"",
        "truncated.npz": data[: len(data) // 2],
        "text.npz": b"not a model at all\n",
        "flipped.npz": data[:200] + bytes(b ^ 0xFF for b in data[200:260]) + data[260:],
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ValueError, match=str(path).replace("\\", "\\\\")):
            nn.Sequential.load(path)
    with pytest.raises(FileNotFoundError):
        nn.Sequential.load(tmp_path / "missing.npz")
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ValueError, match="single array"):
        nn.Sequential.load(single)


@pytest.mark.parametrize("change, words", [
    (dict(architecture=np.array("{not json")), "not valid JSON"),
    (dict(architecture=np.array("[1, 2]")), "not a JSON object"),
    (dict(architecture=np.array(json.dumps({"format": "other", "version": 1}))), "unsupported model format"),
    (dict(architecture=np.array(json.dumps({"format": "fastconv.nn.Sequential", "version": 1}))),
     "no list of layers"),
    (dict(architecture=np.array(json.dumps({"format": "fastconv.nn.Sequential", "version": 1,
                                            "layers": [{"class": "Evil", "config": {}}]}))),
     "unknown layer class 'Evil'"),
    (dict(architecture=np.array(json.dumps({"format": "fastconv.nn.Sequential", "version": 1,
                                            "layers": [{"class": "ReLU", "config": {"bogus": 1}}]}))),
     r"layer 0 \(ReLU\): bad configuration"),
    ({"layer0.w": None}, r"layer 0 \(Conv2D\): parameter 'w' missing"),
    ({"layer0.w": np.zeros((2, 1, 3, 3), np.int64)}, "dtype int64, expected float32 or float64"),
    ({"layer3.w": np.zeros((32, 3), np.float16)}, "dtype float16"),
    ({"layer0.b": np.zeros(2, np.float64)}, "mixed dtypes"),
    ({"layer3.w": np.zeros((3, 32), np.float32)}, r"shape \(3, 32\), expected \(32, 3\)"),
    (dict(architecture=np.array(json.dumps({"format": "fastconv.nn.Sequential", "version": 1,
                                            "layers": []}))), "no list of layers"),
    (dict(architecture=np.array("[" * 100000 + "]" * 100000)), "not valid JSON"),
])
def test_malformed_models_are_refused_before_any_layer_is_built(tmp_path, change, words):
    path = tmp_path / "bad.npz"
    _write_npz(path, **_arrays(small_model(), **change))
    with pytest.raises(ValueError, match=words) as info:
        nn.Sequential.load(path)
    assert str(path) in str(info.value)


def test_a_tiny_file_naming_a_huge_layer_fails_fast_without_allocating(tmp_path):
    arch = {"format": "fastconv.nn.Sequential", "version": 1,
            "layers": [{"class": "Dense", "config": {"in_features": 100_000, "out_features": 100_000}}]}
    path = tmp_path / "huge.npz"
    _write_npz(path, architecture=np.array(json.dumps(arch)))
    assert os.path.getsize(path) < 2000
    tracemalloc.start()  # NumPy reports its buffers to tracemalloc
    try:
        with pytest.raises(ValueError, match=r"layer 0 \(Dense\): parameter 'w' missing"):
            nn.Sequential.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20  # the 40 GB of weights were never asked for


def _checkpoint(tmp_path, optimizer):
    """A checkpoint of small_model() after one step of `optimizer`, and its entries."""
    from fastconv.checkpoint import save_checkpoint

    model = small_model()
    x = np.random.default_rng(0).standard_normal((4, 1, 4, 4)).astype(np.float32)
    model.fit(x, np.array([0, 1, 2, 0]), epochs=1, batch_size=4, optimizer=optimizer, verbose=False)
    path = tmp_path / "ck.npz"
    save_checkpoint(path, model, optimizer, 1, np.random.default_rng(1), model.history)
    with np.load(path) as data:
        return path, {k: data[k] for k in data.files}


def _meta_changed(entries, **changes):
    meta = json.loads(str(entries["checkpoint"]))
    meta.update(changes)
    return dict(entries, checkpoint=np.array(json.dumps(meta)))


@pytest.mark.parametrize("change, words", [
    (dict(epoch=-3), "the completed epochs must be an int >= 0"),
    (dict(history={"loss": 5}), "the history must map names to lists of numbers"),
    (dict(rng={"bit_generator": "PCG64", "state": {"state": 2**300, "inc": 1}, "has_uint32": 0,
               "uinteger": 0}), "OverflowError"),
])
def test_a_damaged_checkpoint_entry_is_a_value_error_naming_the_file(tmp_path, change, words):
    """A hostile generator state raised OverflowError, a negative epoch or a history of numbers
    got through to fit (found by fuzzing)."""
    from fastconv.checkpoint import load_checkpoint

    _, entries = _checkpoint(tmp_path, nn.SGD(0.1, momentum=0.9))
    bad = tmp_path / "bad.npz"
    _write_npz(bad, **_meta_changed(entries, **change))
    with pytest.raises(ValueError, match=words) as info:
        load_checkpoint(bad)
    assert str(bad) in str(info.value)


@pytest.mark.parametrize("optimizer, key, value, words", [
    ("adam", "t", np.array(-5), r"t must be an int >= 0"),
    ("adam", "t", None, r"slots \['m', 'v'\], expected \['m', 't', 'v'\]"),
    ("sgd", "param", np.zeros(2, np.float32), r"slots \['buf', 'param'\], expected \['buf'\]"),
    ("sgd", "buf", np.zeros(3, np.float32), r"has shape \(3,\) dtype float32, expected"),
    ("sgd", "iterations", np.array(-1), "iterations must be an int >= 0"),
])
def test_an_optimiser_state_is_checked_whole_before_any_of_it_is_used(tmp_path, optimizer, key,
                                                                       value, words):
    """An Adam step count of -5 loaded silently (the next step wrote NaN), a slot with another
    name was dropped without a word (found by fuzzing); a refused state changes nothing."""
    from fastconv.checkpoint import load_checkpoint

    make = {"adam": lambda: nn.Adam(1e-2), "sgd": lambda: nn.SGD(0.1, momentum=0.9)}[optimizer]
    _, entries = _checkpoint(tmp_path, make())
    if key == "iterations":
        entries["optimizer.iterations"] = value
    else:
        slot = next(k for k in entries if k.startswith("optimizer.layer0.w."))
        target = slot.rsplit(".", 1)[0] + "." + key
        if value is None:
            del entries[target]
        else:
            entries[target] = value
    bad = tmp_path / "bad.npz"
    _write_npz(bad, **entries)
    model, state, *_ = load_checkpoint(bad)
    fresh = make()
    with pytest.raises(ValueError, match=words):
        fresh.load_state_dict(model, state)
    assert fresh.iterations == 0 and fresh._state == {}
