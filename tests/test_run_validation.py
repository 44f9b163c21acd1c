"""Run folders that load but hold bad values: each is one TegakiError when the run is loaded (and one line
from the CLI), so nothing later meets a NaN weight, a zero standard deviation or a wrong class list."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from tegaki import spec as S
from tegaki.errors import TegakiError
from tegaki.predict import Predictor
from tegaki.run import load_run, load_weights, make_meta, save_run

from test_spine_cli import fails

SPEC = S.Spec(layers=[S.Flatten(), S.Dense(10), S.Softmax()], name="tiny")


def make_run(folder: Path, classes=None, norm=None, weights=None) -> Path:
    w = weights if weights is not None else SPEC.init_weights(0)
    meta = make_meta(SPEC, classes or [str(i) for i in range(10)], norm or {"mean": 0.13, "std": 0.31},
                     {"dataset": "mnist"}, 0, {"dataset": "mnist"})
    save_run(folder, SPEC, w, meta, [{"epoch": 1, "train_loss": 0.5, "valid_loss": 0.4}],
             {"test_accuracy": 0.9, "epochs": 1})
    return folder


def edit_json(path: Path, change) -> None:
    d = json.loads(path.read_text())
    change(d)
    path.write_text(json.dumps(d))


def test_a_good_run_loads(tmp_path):
    run = load_run(make_run(tmp_path / "r"))
    assert run.classes == [str(i) for i in range(10)] and run.metrics["test_accuracy"] == 0.9


@pytest.mark.parametrize("value, words", [
    (np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"), (1e38, r"as large as 1e\+38"),
])
def test_bad_weight_values(tmp_path, value, words):
    w = SPEC.init_weights(0)
    w["dense1.weight"][3, 7] = value
    with pytest.raises(TegakiError, match=words):
        load_run(make_run(tmp_path / "r", weights=w))


@pytest.mark.parametrize("norm", [{"mean": 0.1, "std": 0.0}, {"mean": 0.1, "std": -1.0},
                                  {"mean": float("nan"), "std": 0.3}, {"mean": 0.1, "std": "wide"}, {"mean": 0.1}])
def test_bad_normalisation(tmp_path, norm):
    folder = make_run(tmp_path / "r")
    edit_json(folder / "model.json", lambda d: d["preprocessing"].update(normalize=norm))
    with pytest.raises(TegakiError, match="normalisation|corrupt run description"):
        load_run(folder)


@pytest.mark.parametrize("classes, words", [
    ([str(i) for i in range(9)], "9 class names for a network with 10 outputs"),
    (list(range(10)), "must be a list of strings"),
    ("0123456789", "must be a list of strings"),
    ([""] + [str(i) for i in range(9)], "printable"),
    (["a\x00b"] + [str(i) for i in range(9)], "printable"),
    (["x" * 101] + [str(i) for i in range(9)], "printable"),
    (["1"] + [str(i) for i in range(1, 10)], "repeat"),
])
def test_bad_class_names(tmp_path, classes, words):
    folder = make_run(tmp_path / "r")
    edit_json(folder / "model.json", lambda d: d.update(classes=classes))
    with pytest.raises(TegakiError, match=words):
        load_run(folder)


def test_names_with_path_characters_load(tmp_path):
    """Names are text; where files go is the server's business (it maps names to safe folder names)."""
    names = ["../../x", "/abs", "..", ".", "a b", "$x^$", "ü", "7", "8", "9"]
    folder = make_run(tmp_path / "r", classes=names)
    assert load_run(folder).classes == names


def test_bf16_weights_are_widened_exactly(tmp_path):
    import torch
    from safetensors.torch import save_file as save_torch

    folder = make_run(tmp_path / "r")
    w = load_weights(folder / "model.safetensors")
    save_torch({k: torch.from_numpy(v).to(torch.bfloat16) for k, v in w.items()}, str(folder / "model.safetensors"))
    run = load_run(folder)
    want = torch.from_numpy(w["dense1.weight"]).to(torch.bfloat16).float().numpy()
    assert run.weights["dense1.weight"].dtype == np.float32
    np.testing.assert_array_equal(run.weights["dense1.weight"], want)
    assert Predictor(run).predict_proba(np.zeros((2, 28, 28), np.uint8)).shape == (2, 10)


def test_integer_weights_are_refused(tmp_path):
    folder = make_run(tmp_path / "r")
    w = load_weights(folder / "model.safetensors")
    save_file({k: v.astype(np.int32) for k, v in w.items()}, str(folder / "model.safetensors"))
    with pytest.raises(TegakiError, match="not floating point"):
        load_run(folder)


def test_a_file_larger_than_its_header_is_refused_unread(tmp_path):
    folder = make_run(tmp_path / "r")
    with open(folder / "model.safetensors", "ab") as f:
        f.write(b"\0" * 100)
    with pytest.raises(TegakiError, match="header declares"):
        load_run(folder)
    # a 3 GiB sparse file behind a symlink: refused from its first bytes, in well under a second
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.write((64).to_bytes(8, "little") + b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}   ')
        f.truncate(3 * 2**30)
    (folder / "model.safetensors").unlink()
    os.symlink(big, folder / "model.safetensors")
    t = time.perf_counter()
    with pytest.raises(TegakiError, match="header declares"):
        load_run(folder)
    assert time.perf_counter() - t < 1.0


def test_a_run_of_another_format_is_refused(tmp_path):
    folder = make_run(tmp_path / "r")
    edit_json(folder / "model.json", lambda d: d.update(format="tegaki-run/9"))
    with pytest.raises(TegakiError, match="format 'tegaki-run/9' is not one this tegaki reads \\(tegaki-run/1\\)"):
        load_run(folder)


def test_weights_of_another_network_say_so(tmp_path):
    folder = make_run(tmp_path / "r")
    other = S.Spec(layers=[S.Flatten(), S.Dense(7), S.ReLU(), S.Dense(10), S.Softmax()]).init_weights(0)
    save_file(other, str(folder / "model.safetensors"))
    with pytest.raises(TegakiError, match=r"do not fit the spec: missing \[\], unexpected \['dense2.bias', "
                                          r"'dense2.weight'\]; they are another network's weights"):
        load_run(folder)


@pytest.mark.parametrize("header", [b"[]", b"null", b'"abc"', b'{"w": [1, 2]}'])
def test_a_header_that_is_json_but_not_an_object_of_tensors_is_refused(tmp_path, header):
    folder = make_run(tmp_path / "r")
    (folder / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(TegakiError, match="not a valid safetensors file .its header is not a JSON object of tensors"):
        load_run(folder)


@pytest.mark.parametrize("name", ["model.json", "metrics.json"])
def test_bad_utf8_in_json(tmp_path, name):
    folder = make_run(tmp_path / "r")
    (folder / name).write_bytes(b'{"x": "caf\xe9"}')
    with pytest.raises(TegakiError, match="not UTF-8"):
        load_run(folder)


def test_metrics_and_history_are_read_leniently(tmp_path, cli):
    folder = make_run(tmp_path / "r")
    (folder / "metrics.json").write_text(json.dumps({"test_accuracy": "99%", "epochs": 1, "note": "mine"}))
    (folder / "history.csv").write_text("epoch,train_loss,valid_loss\n1,abc,0.4\nx,0.3,0.2\n2,0.2,inf\n")
    run = load_run(folder)
    assert run.metrics == {"epochs": 1, "note": "mine"}
    assert run.history() == [{"epoch": 1.0, "train_loss": None, "valid_loss": 0.4},
                             {"epoch": 2.0, "train_loss": 0.2, "valid_loss": None}]
    assert cli("summary", folder).code == 0


def test_cli_says_it_in_one_line(cli, tmp_path):
    w = SPEC.init_weights(0)
    w["dense1.bias"][0] = np.nan
    folder = make_run(tmp_path / "r", weights=w)
    fails(cli("evaluate", folder), "dense1.bias", "NaN")
    img = tmp_path / "d.png"
    from PIL import Image

    Image.fromarray(np.zeros((28, 28), np.uint8)).save(img)
    assert cli("predict", img, "--model", folder).code == 2


def test_a_standard_deviation_no_training_measures_is_refused():
    from tegaki.run import check_norm

    check_norm({"mean": 0.13, "std": 1e-6}, "x")  # the smallest that training's 6 decimals give
    for std in (1e-30, 0.0, -1.0, 1e7):
        with pytest.raises(TegakiError, match="standard deviation from 1e-6 to 1e6"):
            check_norm({"mean": 0.13, "std": std}, "model.json")
