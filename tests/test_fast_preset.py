"""The fast preset, the torch engine's speed options, ensembles and test-time augmentation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import write_idx_subset
from tegaki.cli import DEFAULT_PRESET
from tegaki.data.augment import Augmenter
from tegaki.engines.torch_engine import TorchEngine, bf16_native
from tegaki.ensemble import VIEWS, average_proba, tta_views
from tegaki.errors import TegakiError
from tegaki.predict import Predictor
from tegaki.spec import load_preset
from tegaki.train import TrainConfig, train


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory, mnist_small):
    """The fast preset's recipe on 18,000 real MNIST digits (2 epochs)."""
    out = tmp_path_factory.mktemp("fast") / "run"
    spec = load_preset("fast")
    cfg = TrainConfig.for_spec(spec, valid_size=2000, device="cpu")
    result = train(spec, mnist_small, cfg, out, log=lambda m: None)
    return out, result.metrics


def test_fast_is_the_default_and_learns(fast_run):
    assert DEFAULT_PRESET == "fast"
    out, m = fast_run
    assert m["test_accuracy"] >= 0.975, m  # 99% needs the full 60,000 digits; see bench/time_to_99.py
    assert m["valid_accuracy"] >= 0.97
    assert m["precision"] == ("bf16" if bf16_native(torch.device("cpu")) else "fp32")
    assert m["epochs"] == 2 and m["train_seconds"] > 0 and m["setup_seconds"] >= 0


def test_distortions_keep_the_labels(fast_run, mnist):
    """The fast model (trained without augmentation) still reads distorted test digits."""
    pred = Predictor.load(fast_run[0])
    images, labels = mnist.test_images[:2000], mnist.test_labels[:2000]
    x = torch.from_numpy(pred.prepare(images))
    clean = (pred.engine.logits(x).argmax(1) == labels).mean()
    bg = -pred.norm["mean"] / pred.norm["std"]
    for kinds, floor in ((("affine",), 0.85), (("elastic",), 0.9), (("thickness",), 0.9)):
        aug = Augmenter(kinds, background=bg, strength=0.5)
        aug.seed(0)
        acc = (pred.engine.logits(aug(x)).argmax(1) == labels).mean()
        assert floor < acc <= clean + 0.005, (kinds, clean, acc)


def test_precision_options_and_errors():
    spec = load_preset("fast")
    e = TorchEngine(spec, device="cpu")
    assert e.tune("fp32") == "fp32"
    assert e.tune("bf16") == "bf16"
    e.configure("momentum", 0.1)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    e.train_step(x, y)  # a mixed-precision step keeps float32 weights
    assert all(v.dtype == np.float32 for v in e.get_weights().values())
    with pytest.raises(TegakiError, match="precision"):
        e.tune("fp8")
    with pytest.raises(TegakiError, match="torch engine"):
        TrainConfig.for_spec(spec, engine="numpy", precision="bf16")


def test_channels_last_engine_matches_a_plain_torch_forward():
    spec = load_preset("fast")
    w = spec.init_weights(0)
    e = TorchEngine(spec, w, device="cpu")
    x = np.random.default_rng(0).standard_normal((5, 1, 28, 28)).astype(np.float32)
    import torch.nn.functional as F

    t = {k: torch.from_numpy(v) for k, v in w.items()}
    h = F.relu(F.batch_norm(F.conv2d(torch.from_numpy(x), t["conv1.weight"], t["conv1.bias"], stride=2),
                            t["bn1.running_mean"], t["bn1.running_var"], t["bn1.weight"], t["bn1.bias"]))
    h = F.max_pool2d(F.conv2d(h, t["conv2.weight"], t["conv2.bias"]), 2)
    h = F.relu(F.batch_norm(h, t["bn2.running_mean"], t["bn2.running_var"], t["bn2.weight"], t["bn2.bias"]))
    ref = F.linear(h.flatten(1), t["dense1.weight"], t["dense1.bias"]).numpy()
    np.testing.assert_allclose(e.logits(x), ref, atol=1e-5)


def test_tta_views_and_averaging():
    x = np.random.default_rng(1).standard_normal((3, 1, 28, 28)).astype(np.float32)
    views = tta_views(x, background=-0.5)
    assert len(views) == len(VIEWS) and views[0] is x or np.array_equal(views[0], x)
    i = VIEWS.index((0, 1, 0))  # one pixel to the right
    np.testing.assert_allclose(views[i][..., 1:], x[..., :-1], atol=1e-4)
    np.testing.assert_allclose(views[i][..., 0], -0.5, atol=1e-5)
    e = TorchEngine(load_preset("fast"), device="cpu")
    p1 = average_proba([e], x)
    np.testing.assert_allclose(average_proba([e, e], x), p1, atol=1e-12)
    np.testing.assert_allclose(p1.sum(1), 1.0, atol=1e-9)


def test_error_overlap_by_hand():
    from tegaki.ensemble import error_overlap, overlap_text

    y = np.array([0, 1, 2, 3, 4])
    a = np.array([0, 1, 2, 0, 0])  # wrong on 3, 4
    b = np.array([0, 0, 2, 0, 4])  # wrong on 1, 3
    c = np.array([0, 1, 2, 3, 4])  # never wrong
    ov = error_overlap([a, b, c], y)
    assert ov["mistakes"] == [2, 2, 0] and ov["wrong_by_all"] == 0
    assert ov["pairs"][0] == {"pair": [1, 2], "shared": 1, "jaccard": 1 / 3}  # image 3 of images 1, 3, 4
    assert ov["pairs"][1] == {"pair": [1, 3], "shared": 0, "jaccard": 0.0}
    assert ov["pairs"][2] == {"pair": [2, 3], "shared": 0, "jaccard": 0.0}
    assert error_overlap([c, c], y)["pairs"][0]["jaccard"] == 1.0  # no mistakes at all: the same (none)
    assert "members 1 and 2: 1 shared (Jaccard 0.33)" in overlap_text({"test": {"overlap": ov}})


def test_ensemble_cli(cli, tmp_path, mnist):
    d = write_idx_subset(tmp_path / "sub", mnist, 3000, 500)
    r = cli("train", "--dataset", f"idx:{d}", "--valid-size", "500", "--epochs", "1", "--ensemble", "2", "--tta",
            "--out", tmp_path / "ens")
    assert r.code == 0, r.err
    res = json.loads((tmp_path / "ens" / "ensemble.json").read_text())
    assert res["seeds"] == [0, 1] and set(res) >= {"valid", "test", "members"}
    assert set(res["test"]) == {"single", "ensemble", "single_tta", "ensemble_tta", "overlap"}
    ov = res["test"]["overlap"]  # each member's mistakes, as counted from its own accuracy
    assert ov["mistakes"] == [round((1 - a) * 500) for a in res["test"]["single"]]
    assert ov["pairs"][0]["shared"] <= min(ov["mistakes"]) and "shared (Jaccard" in r.out
    m = [json.loads((tmp_path / "ens" / f"member-{i}" / "model.json").read_text())["config"] for i in (1, 2)]
    assert m[0]["split_seed"] == m[1]["split_seed"] == 0 and m[0]["seed"] != m[1]["seed"]
    assert "ensemble of 2 + TTA" in r.out
    # a run trained on its own (here or on another machine) with the same --split-seed joins the ensemble:
    # measuring the same members again gives the same figures, and the new one shares their validation set
    r3 = cli("train", "--dataset", f"idx:{d}", "--valid-size", "500", "--epochs", "1", "--seed", "5",
             "--split-seed", "0", "--out", tmp_path / "m3")
    assert r3.code == 0, r3.err
    assert json.loads((tmp_path / "m3" / "model.json").read_text())["config"]["split_seed"] == 0
    from tegaki.data.sources import load_dataset
    from tegaki.ensemble import measure_ensemble

    ds = load_dataset(f"idx:{d}")
    members = [tmp_path / "ens" / "member-1", tmp_path / "ens" / "member-2"]
    again = measure_ensemble(members, ds, 0, 500, tta=True)
    assert again["test"] == res["test"] and again["valid"] == res["valid"]
    three = measure_ensemble(members + [tmp_path / "m3"], ds, 0, 500)
    m3 = json.loads((tmp_path / "m3" / "metrics.json").read_text())
    assert three["seeds"] == [0, 1, 5]
    assert three["valid"]["single"][2] == pytest.approx(m3["valid_accuracy"], abs=1e-6)
    # the same from the command line
    r4 = cli("ensemble", *members, tmp_path / "m3", "--out", tmp_path / "three.json")
    assert r4.code == 0, r4.err
    assert json.loads((tmp_path / "three.json").read_text()) == json.loads(json.dumps(three))
    assert "ensemble of 3" in r4.out and "different splits" not in r4.out
    one = cli("ensemble", tmp_path / "m3")
    assert one.code == 2 and "two or more runs" in one.err
    twice = cli("ensemble", tmp_path / "m3", tmp_path / "m3" / ".")  # one run named twice is one run
    assert twice.code == 2 and "two or more different runs" in twice.err and "named more than once" in twice.out
    dup = cli("ensemble", *members, members[0], "--out", tmp_path / "dup.json")
    assert dup.code == 0 and "1 run(s) named more than once; each is counted once" in dup.out
    assert "ensemble of 2" in dup.out
    r5 = cli("train", "--dataset", f"idx:{d}", "--valid-size", "500", "--epochs", "1", "--seed", "6",
             "--out", tmp_path / "m4")  # its own split (seed 6)
    mixed = cli("ensemble", tmp_path / "m3", tmp_path / "m4")
    assert r5.code == 0 and mixed.code == 0 and "different splits" in mixed.out, mixed.err
    assert "valid" not in mixed.out.splitlines()[2]  # the table's header: test only
    # runs trained on the whole training set have no split to differ on: test only, and no note
    for seed, out in (("7", "w1"), ("8", "w2")):
        assert cli("train", "--dataset", f"idx:{d}", "--valid-size", "0", "--epochs", "1", "--seed", seed,
                   "--out", tmp_path / out).code == 0
    whole = cli("ensemble", tmp_path / "w1", tmp_path / "w2")
    assert whole.code == 0 and "different splits" not in whole.out, whole.err
    assert "valid" not in whole.out.splitlines()[2] and "ensemble of 2" in whole.out
    bad = cli("train", "--ensemble", "0", "--out", tmp_path / "x")
    assert bad.code == 2 and "--ensemble" in bad.err and not (tmp_path / "x").exists()
