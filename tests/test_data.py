"""The strict IDX parser, the search order for the files, the verified download, and shards."""

import gzip
import hashlib
import http.server
import shutil
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from ecufl import data
from ecufl.data import DataError


def idx(magic, dims, body=None):
    n = int(np.prod(dims))
    body = bytes(n) if body is None else body
    return struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + body


def write(path: Path, payload: bytes, gz=False):
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def test_real_files_parse_and_check(mnist_dir):
    tr = data.load("train", mnist_dir)
    te = data.load("test", mnist_dir)
    assert tr.images.shape == (60000, 784) and tr.labels.shape == (60000,)
    assert te.images.shape == (10000, 784) and te.images.dtype == np.uint8
    assert set(np.unique(tr.labels)) == set(range(10))
    assert all(v == "ok" for v in data.check(mnist_dir).values())


@pytest.mark.parametrize("gz", [False, True])
def test_good_small_file(tmp_path, gz):
    p = write(tmp_path / "x", idx(0x803, (3, 28, 28), bytes(range(256)) * 9 + bytes(3 * 784 - 2304)), gz)
    arr = data.read_images(p)
    assert arr.shape == (3, 784) and arr[0, 255] == 255


@pytest.mark.parametrize("payload, message", [
    (b"\x00\x00", "too short"),
    (idx(0x801, (3,), b"\x01\x02\x03"), "wrong magic number 0x00000801, expected 0x00000803"),
    (idx(0x803, (3, 28, 28))[:-10], "truncated"),
    (idx(0x803, (3, 28, 28)) + b"xx", "2 trailing bytes"),
    (idx(0x803, (3, 28, 28))[:10], "truncated header"),
    (idx(0x803, (2, 27, 28)), "27x28, expected 28x28"),
])
def test_bad_image_files(tmp_path, payload, message):
    p = write(tmp_path / "bad-images", payload)
    with pytest.raises(DataError) as e:
        data.read_images(p)
    assert str(p) in str(e.value) and message in str(e.value)


def test_bad_labels_and_wrong_count(tmp_path):
    with pytest.raises(DataError, match="label 12 out of range"):
        data.read_labels(write(tmp_path / "l", idx(0x801, (2,), b"\x01\x0c")))
    d = tmp_path / "set"
    d.mkdir()
    write(d / "train-images-idx3-ubyte", idx(0x803, (3, 28, 28)))
    write(d / "train-labels-idx1-ubyte", idx(0x801, (2,), b"\x01\x02"))
    write(d / "t10k-images-idx3-ubyte", idx(0x803, (1, 28, 28)))
    write(d / "t10k-labels-idx1-ubyte", idx(0x801, (1,), b"\x01"))
    with pytest.raises(DataError, match="3 images but 2 labels"):
        data.load("train", d)


def test_random_bytes_and_broken_gzip(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(20):
        p = write(tmp_path / f"r{i}", rng.integers(0, 256, rng.integers(0, 3000), dtype=np.uint8).tobytes())
        with pytest.raises(DataError):
            data.read_images(p)
    p = write(tmp_path / "broken.gz", gzip.compress(idx(0x803, (1, 28, 28)))[:-6])
    with pytest.raises(DataError, match="not a valid gzip"):
        data.read_images(p)


def test_search_order(tmp_path, monkeypatch, mnist_dir):
    monkeypatch.setenv("ECUFL_DATA", str(mnist_dir))
    assert data.locate() == mnist_dir
    monkeypatch.setenv("ECUFL_DATA", str(tmp_path))
    with pytest.raises(DataError, match=f"ECUFL_DATA={tmp_path}: missing"):
        data.locate()
    with pytest.raises(DataError, match="--data-dir"):
        data.locate(tmp_path / "nowhere")
    assert data.locate(mnist_dir) == mnist_dir  # --data-dir wins over ECUFL_DATA
    monkeypatch.delenv("ECUFL_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="ecufl data fetch"):
        data.locate(download=False)
    shutil.copytree(mnist_dir, tmp_path / "cache" / "ecufl" / "mnist")
    assert data.locate(download=False) == tmp_path / "cache" / "ecufl" / "mnist"


@pytest.fixture
def mirror(tmp_path, mnist_dir):
    """A real HTTP mirror on loopback serving the .gz files, plus one serving corrupted ones."""
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    for name in data.FILES.values():
        shutil.copy(mnist_dir / f"{name}.gz", good / f"{name}.gz")
        (bad / f"{name}.gz").write_bytes(b"corrupted")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(tmp_path), **k)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()


def test_fetch_verifies_and_falls_back(tmp_path, mirror, monkeypatch, mnist_dir):
    # The shared copies were recompressed; accept their own sums for this test's mirror.
    sums = {f"{n}.gz": hashlib.sha256((mnist_dir / f"{n}.gz").read_bytes()).hexdigest() for n in data.FILES.values()}
    monkeypatch.setattr(data, "GZ_SHA256", sums)
    dest = tmp_path / "dl"
    with pytest.raises(DataError, match="sha256 mismatch"):
        data.fetch(dest, mirrors=[f"{mirror}/bad/"], timeout=5)
    assert not any(dest.iterdir())  # nothing unverified is kept
    out = data.fetch(dest, mirrors=[f"{mirror}/missing/", f"{mirror}/bad/", f"{mirror}/good/"], timeout=5)
    assert out == dest
    assert all(v == "ok" for v in data.check(dest).values())


def test_partition_iid_and_dirichlet(mnist_train):
    labels = mnist_train.labels
    a = data.partition(labels, 4, seed=1)
    assert sum(map(len, a)) == 60000 and len(np.unique(np.concatenate(a))) == 60000
    assert all(abs(len(s) - 15000) <= 1 for s in a)
    for x, y in zip(a, data.partition(labels, 4, seed=1)):
        assert np.array_equal(x, y)
    assert not np.array_equal(a[0], data.partition(labels, 4, seed=2)[0])
    skew = data.partition(labels, 10, seed=1, alpha=0.1)
    assert sum(map(len, skew)) == 60000
    top_share = [np.bincount(labels[s], minlength=10).max() / len(s) for s in skew]
    assert np.mean(top_share) > 0.5  # label skew: one class dominates a shard
    iid_share = [np.bincount(labels[s], minlength=10).max() / len(s) for s in data.partition(labels, 10, seed=1)]
    assert np.mean(iid_share) < 0.15
    with pytest.raises(ValueError, match="alpha"):
        data.partition(labels, 4, 1, alpha=0)
    with pytest.raises(ValueError, match="cannot fill"):
        data.partition(labels[:3], 4, 1)
