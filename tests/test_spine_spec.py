"""Specs: shape inference against hand-computed shapes, errors, serialisation, parameter counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import write_idx_subset
from tegaki import spec as S
from tegaki.engines.torch_engine import KEY, TorchNet
from tegaki.errors import TegakiError
from tegaki.spec import Spec, SpecError, load_preset, preset_names, resolve_spec

SPINE_PRESETS = ["ffnn", "lenet", "nolearn", "keras-lecture"]


def shapes(input_shape, *layers):
    return Spec(input_shape=input_shape, layers=list(layers)).shapes()


def test_conv_valid_same_stride_and_odd_sizes():
    # valid: out = (in - k) // s + 1
    assert shapes((1, 28, 28), S.Conv2d(20, 5)) == [(20, 24, 24)]
    assert shapes((3, 27, 31), S.Conv2d(4, (3, 5))) == [(4, 25, 27)]
    assert shapes((1, 28, 28), S.Conv2d(8, 5, stride=2)) == [(8, 12, 12)]  # (28-5)//2+1
    assert shapes((1, 27, 27), S.Conv2d(8, 4, stride=2)) == [(8, 12, 12)]  # (27-4)//2+1
    # same: out = ceil(in / s)
    assert shapes((1, 28, 28), S.Conv2d(9, 3, padding="same")) == [(9, 28, 28)]
    assert shapes((1, 27, 27), S.Conv2d(9, 4, padding="same")) == [(9, 27, 27)]
    assert shapes((1, 28, 28), S.Conv2d(9, 3, stride=2, padding="same")) == [(9, 14, 14)]
    assert shapes((1, 27, 25), S.Conv2d(9, 3, stride=2, padding="same")) == [(9, 14, 13)]
    # explicit padding
    assert shapes((1, 28, 28), S.Conv2d(2, 5, padding=2)) == [(2, 28, 28)]


def test_same_padding_splits_the_extra_pixel_like_tensorflow():
    c = S.Conv2d(1, 4, padding="same")
    assert c.pads(27, 27) == (1, 2, 1, 2)  # total 3: 1 before, 2 after
    c = S.Conv2d(1, 3, stride=2, padding="same")
    assert c.pads(28, 28) == (0, 1, 0, 1)  # (14-1)*2+3-28 = 1


def test_pools_flatten_and_the_presets():
    assert shapes((20, 24, 24), S.MaxPool(2)) == [(20, 12, 12)]
    assert shapes((3, 25, 25), S.AvgPool(3, stride=2)) == [(3, 12, 12)]  # (25-3)//2+1
    assert shapes((5, 7, 9), S.MaxPool(2)) == [(5, 3, 4)]  # floor
    assert shapes((50, 4, 4), S.Flatten(), S.Dense(500)) == [(800,), (500,)]
    assert load_preset("lenet").shapes()[:7] == [(20, 24, 24), (20, 12, 12), (20, 12, 12), (50, 8, 8),
                                                 (50, 4, 4), (50, 4, 4), (800,)]
    assert load_preset("keras-lecture").shapes()[:4] == [(9, 28, 28), (9, 28, 28), (9, 14, 14), (1764,)]
    assert load_preset("nolearn").shapes()[:7] == [(32, 24, 24), (32, 24, 24), (32, 12, 12), (32, 8, 8),
                                                   (32, 8, 8), (32, 4, 4), (32, 4, 4)]
    assert load_preset("ffnn").shapes() == [(784,), (100,), (100,), (10,), (10,)]


def test_maxout_batchnorm_and_activations_keep_or_divide_shapes():
    assert shapes((8, 5, 5), S.Maxout(2), S.BatchNorm(), S.ReLU(), S.ELU(), S.LeakyReLU()) == [(4, 5, 5)] * 5
    with pytest.raises(SpecError, match="cannot be split into groups of 3"):
        shapes((8, 5, 5), S.Maxout(3))


@pytest.mark.parametrize("layers, message", [
    ([S.Conv2d(4, 7)], "kernel 7x7 is larger than its 5x5 input"),
    ([S.MaxPool(2), S.MaxPool(2), S.MaxPool(2)], "pool window 2x2 is larger than its 1x1 input"),
    ([S.Dense(10)], "is fed an image of shape (1, 5, 5); add a flatten layer"),
    ([S.Flatten(), S.Conv2d(2, 3)], "needs an image input"),
    ([S.Flatten(), S.Softmax(), S.Dense(3)], "softmax must be the last layer"),
    ([S.Conv2d(0, 3)], "must be positive"),
    ([S.Dropout(1.5)], "dropout rate must be in [0, 1)"),
    ([S.Conv2d(2, 3, padding="full")], "padding must be 'valid', 'same'"),
])
def test_shape_errors_are_clear(layers, message):
    with pytest.raises(SpecError) as e:
        Spec(input_shape=(1, 5, 5), layers=layers)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("d, message", [
    ({"layers": [{"type": "convolution"}]}, "unknown layer type 'convolution'"),
    ({"layers": [{"type": "dense", "neurons": 3}]}, "unknown option(s) neurons"),
    ({"layers": [{"units": 3}]}, "each layer needs a 'type'"),
    ({"layers": [{"type": "conv2d", "filters": "many"}]}, "filters must be int, got 'many'"),
    ({"layers": [{"type": "conv2d", "kernel": [3, 3, 3]}]}, "kernel must be int or a pair of integers"),
    ({"layers": [{"type": "dense", "units": True}]}, "units must be int"),
    ({"layers": [{"type": "dense", "init": "magic"}]}, "unknown init 'magic'"),
    ({"layers": []}, "'layers' must be a non-empty list"),
    ({"input": [28, 28], "layers": [{"type": "flatten"}]}, "'input' must be [channels, height, width]"),
    ({"input": "mnist", "layers": [{"type": "flatten"}]}, "'input' must be"),
    ({"layers": [{"type": "flatten"}], "optimiser": "adam"}, "unknown key(s) optimiser"),
    ({"layers": [{"type": "flatten", "name": "a.b"}]}, "letters, digits and underscores"),
    ({"layers": [{"type": "flatten", "name": "x"}, {"type": "relu", "name": "x"}]}, "two layers are named 'x'"),
])
def test_bad_specs(d, message):
    with pytest.raises(SpecError) as e:
        Spec.from_dict(d)
    assert message in str(e.value)


def test_malformed_files(tmp_path):
    (tmp_path / "a.toml").write_text("input = [1, 28, 28\n[[layers]]\n")
    (tmp_path / "b.json").write_text('{"layers": [')
    (tmp_path / "c.json").write_text("[1, 2]")
    for name, message in (("a.toml", "malformed TOML"), ("b.json", "malformed JSON"), ("c.json", "got a list"),
                          ("missing.toml", "no such spec file")):
        with pytest.raises(SpecError) as e:
            Spec.from_file(tmp_path / name)
        assert message in str(e.value) and str(tmp_path / name) in str(e.value)


def test_python_spec_fields_are_type_checked_too():
    with pytest.raises(SpecError, match="units must be int, got 'x'"):
        Spec(layers=[S.Flatten(), S.Dense(units="x")])


@pytest.mark.parametrize("name", SPINE_PRESETS)
def test_json_and_toml_round_trip(name, tmp_path):
    spec = load_preset(name)
    again = Spec.from_dict(json.loads(spec.to_json()))
    assert again.to_dict() == spec.to_dict()
    assert again.shapes() == spec.shapes() and again.num_params() == spec.num_params()
    p = tmp_path / "s.json"
    p.write_text(spec.to_json())
    assert Spec.from_file(p).to_dict() == spec.to_dict()
    # a TOML file written by hand with the same content reads the same
    toml = [f'name = "{spec.name}"', f"input = {list(spec.input_shape)}", f'normalize = "{spec.normalize}"']
    for layer in spec.layers:
        toml.append("[[layers]]")
        toml += [f"{k} = {json.dumps(v)}" for k, v in layer.to_dict().items()]
    (tmp_path / "s.toml").write_text("\n".join(toml) + "\n")
    assert Spec.from_file(tmp_path / "s.toml").layers == spec.layers


def test_tuple_options_round_trip():
    spec = Spec(input_shape=(1, 27, 25), layers=[S.Conv2d(3, (3, 5), stride=(2, 1), padding="same"),
                                                  S.AvgPool((2, 3)), S.Flatten(), S.Dense(4)])
    again = Spec.from_dict(json.loads(spec.to_json()))
    assert again.layers == spec.layers and again.shapes() == spec.shapes()


@pytest.mark.parametrize("name", SPINE_PRESETS + ["bn"])
def test_parameter_counts_match_torch(name):
    if name == "bn":
        spec = Spec(input_shape=(1, 28, 28), layers=[
            S.Conv2d(6, (3, 5), stride=2, padding="same", bias=False), S.BatchNorm(), S.Maxout(2), S.AvgPool(2),
            S.Flatten(), S.Dense(16), S.BatchNorm(), S.ELU(), S.Dense(10), S.Softmax()])
    else:
        spec = load_preset(name)
    net = TorchNet(spec)
    assert spec.num_params() == sum(p.numel() for p in net.parameters())
    # the summary's total and each row
    text = spec.summary()
    assert f"Total params: {spec.num_params():,}" in text
    for layer in spec.layers:
        torch_count = sum(p.numel() for p in net.layers[KEY + layer.name].parameters())
        row = next(line for line in text.splitlines() if line.startswith(f"{layer.name} ({layer.type})"))
        assert row.split()[-1] == f"{torch_count:,}"
    # and the torch module's output has the inferred shape
    with torch.no_grad():
        out = net.forward_all(torch.zeros(2, *spec.input_shape))
    for layer, s in zip(spec.layers, spec.shapes()):
        assert tuple(out[layer.name].shape[1:]) == s, layer.name


def test_summary_reads_like_keras():
    text = load_preset("lenet").summary()
    lines = text.splitlines()
    assert lines[0] == 'Model: "lenet"'
    assert "Layer (type)" in lines[2] and "Output shape" in lines[2] and "Param #" in lines[2]
    assert any(line.startswith("conv1 (conv2d)") and "(None, 20, 24, 24)" in line and line.endswith("520")
               for line in lines)
    assert "Total params: 431,080" in text


def test_init_weights_seeded_and_recipe_shaped():
    spec = load_preset("ffnn")
    a, b = spec.init_weights(1), spec.init_weights(1)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["dense1.weight"], spec.init_weights(2)["dense1.weight"])
    w = a["dense1.weight"]
    assert w.shape == (100, 784) and w.dtype == np.float32 and -1 <= w.min() < -0.99 and 0.99 < w.max() <= 1
    lenet = load_preset("lenet").init_weights(0)
    assert not lenet["dense2.weight"].any()  # the tutorial's zero-initialised logistic regression
    bound = np.sqrt(6 / (25 + 20 * 25))  # Glorot: fan_in 1*5*5, fan_out 20*5*5
    assert np.abs(lenet["conv1.weight"]).max() <= bound


def test_presets_are_listed_and_resolved(tmp_path):
    assert set(SPINE_PRESETS) <= set(preset_names())
    for name in SPINE_PRESETS:
        assert load_preset(name).train, name  # every preset carries its recipe
    with pytest.raises(SpecError, match="unknown preset 'lenet5'; choose one of"):
        resolve_spec("lenet5")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.json").write_text("{not json")
    with pytest.raises(TegakiError, match="corrupt run description"):
        resolve_spec(str(tmp_path / "run"))


# `base = "<preset>"`: a spec that starts from a preset ---------------------------------------------------
def test_base_fills_in_the_preset_and_overrides_train_options_one_by_one(tmp_path):
    deep = load_preset("deep")
    f = tmp_path / "mine.toml"
    f.write_text('base = "deep"\n[train]\nepochs = 3\naugment = "affine+thickness"\n')
    mine = Spec.from_file(f)
    assert mine.name == "mine"  # the base's name is not inherited; its description says what this one changed
    assert mine.description == f"deep with epochs, augment changed: {deep.description}"
    assert Spec.from_dict({"base": "deep"}).description == deep.description  # nothing changed: the same words
    assert mine.layers == deep.layers and mine.input_shape == deep.input_shape
    assert mine.train == {**deep.train, "epochs": 3, "augment": "affine+thickness"}
    assert deep.train["epochs"] == 30 and deep.train["augment"] == "affine"  # the preset itself is untouched
    # what a run saves is the filled-in spec: no `base`, and it reads back the same without the preset
    d = mine.to_dict()
    assert "base" not in d and Spec.from_dict(json.loads(json.dumps(d))).to_dict() == d


def test_base_layers_replace_the_preset_layers_as_a_whole():
    mine = Spec.from_dict({"base": "lenet", "input": [1, 12, 12], "description": "tiny",
                           "layers": [{"type": "flatten"}, {"type": "dense", "units": 10}, {"type": "softmax"}]})
    assert [l.type for l in mine.layers] == ["flatten", "dense", "softmax"]
    assert mine.num_params() == 144 * 10 + 10 and mine.description == "tiny"
    assert mine.train == load_preset("lenet").train


def test_presets_built_on_a_base_equal_their_parent_with_the_change():
    """deep-skip-thick.toml holds only `base = "deep-skip"` and one training option; best-residual.toml only
    `base = "deep-skip-thick"` and the batch-norm refresh."""
    thick, skip = load_preset("deep-skip-thick"), load_preset("deep-skip")
    assert thick.layers == skip.layers and thick.train == {**skip.train, "augment": "affine+thickness"}
    res = load_preset("best-residual")
    assert res.layers == thick.layers and res.train == {**thick.train, "bn_refresh": True}
    for name in ("deep-skip", "deep7", "deep-res"):  # deep's recipe, their own layers
        assert load_preset(name).train == load_preset("deep").train
    assert load_preset("deep").train == load_preset("best").train


def test_rejected_candidates_in_docs_specs_are_what_their_comments_say():
    """docs/specs keeps issue 15's rejected candidates: deep-skip-thick widened (48 -> 64, 96 -> 128 filters), and
    deep-skip-thick with a second, pre-activation residual block at full resolution."""
    folder = Path(__file__).parents[1] / "docs" / "specs"
    thick = load_preset("deep-skip-thick")
    wide, two = (Spec.from_file(folder / f) for f in ("wide-skip-thick.toml", "deep-skip2-thick.toml"))
    for cand in (wide, two):
        assert cand.train == {**thick.train, "valid_size": 10000}  # the recipe the validation runs used
    assert (wide.num_params(), two.num_params()) == (788_426, 564_650)
    assert [type(a) for a in wide.layers] == [type(b) for b in thick.layers]
    assert [getattr(a, "filters", None) for a in wide.layers] == \
        [{48: 64, 96: 128}.get(getattr(b, "filters", None)) for b in thick.layers]
    def kinds(layers):  # what each layer is, without the names the loader gives them
        return [(type(a).__name__, *(getattr(a, f, None) for f in ("filters", "kernel", "padding", "size", "units")))
                for a in layers]

    assert kinds(two.layers[:5] + two.layers[9:]) == kinds(thick.layers)  # deep-skip-thick's, and between them:
    assert kinds(two.layers[5:9]) == [("BatchNorm",) + (None,) * 5, ("ReLU",) + (None,) * 5,
                                      ("Conv2d", 48, 3, "same", None, None), ("Add",) + (None,) * 5]
    assert two.layers[4].inputs == ("r1", "c2") and two.layers[8].inputs == ("a1", "c3")


@pytest.mark.parametrize("base, message", [
    ("deeep", "mine.toml: base: unknown preset 'deeep'; choose one of best, best-residual, bundled, deep"),
    (3, "mine.toml: 'base' must be a preset name, got 3"),
])
def test_bad_base_is_one_line_from_python_and_the_cli(tmp_path, cli, base, message):
    f = tmp_path / "mine.toml"
    f.write_text(f"base = {json.dumps(base)}\n")
    with pytest.raises(SpecError) as e:
        Spec.from_file(f)
    assert message in str(e.value)
    for args in (("summary", f), ("train", "--spec", f, "--out", tmp_path / "run")):
        r = cli(*args)
        assert r.code != 0 and message in r.err and len(r.err.strip().splitlines()) == 1, r.err
        assert "Traceback" not in r.err
    assert not (tmp_path / "run").exists()  # nothing half-written


def test_presets_based_on_each_other_in_a_circle_are_refused(monkeypatch):
    files = {"a": {"base": "b"}, "b": {"base": "a", "layers": [{"type": "flatten"}]}, "c": {"base": "c"}}
    monkeypatch.setattr(S, "_preset_dict", lambda name, where="": dict(files[name]))
    with pytest.raises(SpecError, match=r"^spec: presets based on each other in a circle: b -> a -> b$"):
        Spec.from_dict({"base": "b"})
    with pytest.raises(SpecError, match=r"^spec: presets based on each other in a circle: c -> c$"):
        Spec.from_dict({"base": "c"})


def test_a_spec_with_a_base_trains_end_to_end(cli, tmp_path, mnist):
    d = write_idx_subset(tmp_path / "sub", mnist, 2000, 300)
    f = tmp_path / "quick.toml"
    f.write_text('base = "fast"\n[train]\nepochs = 1\nvalid_size = 200\n')
    r = cli("train", "--spec", f, "--dataset", f"idx:{d}", "--out", tmp_path / "run")
    assert r.code == 0, r.err
    saved = json.loads((tmp_path / "run" / "model.json").read_text())
    assert "base" not in saved["spec"] and saved["spec"]["layers"] == load_preset("fast").to_dict()["layers"]
    assert saved["config"]["epochs"] == 1 and saved["config"]["valid_size"] == 200
    rows = (tmp_path / "run" / "history.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,") and len(rows) == 2  # one epoch, as the file said


def test_the_readme_base_example_reads_as_it_says(tmp_path):
    import re

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```toml\n(.*?)```", readme, re.S) if 'base = "deep"' in b)
    (tmp_path / "deep_thick.toml").write_text(block)
    mine, deep = Spec.from_file(tmp_path / "deep_thick.toml"), load_preset("deep")
    assert mine.layers == deep.layers
    assert mine.train == {**deep.train, "augment": "affine+thickness", "epochs": 10}
