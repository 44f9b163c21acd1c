"""Bad options, bad specs and the newcomer's path: each is one line and a non-zero status, before any
data is loaded where it can be; SIGTERM stops a run cleanly; the messages say what they mean."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

import tegaki as tg
from tegaki.data.idx import write_idx
from tegaki.errors import TegakiError
from tegaki.spec import MAX_PARAMS, TRAIN_KEYS, Spec, load_preset
from tegaki.train import TrainConfig

from conftest import digits_like
from test_spine_cli import fails

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bars(tmp_path_factory) -> Path:
    """A tiny learnable IDX dataset (1,200 train, 300 test) made here."""
    d = tmp_path_factory.mktemp("bars")
    x, y = digits_like(1500, seed=3)
    write_idx(d / "train-images-idx3-ubyte.gz", x[:1200])
    write_idx(d / "train-labels-idx1-ubyte.gz", y[:1200].astype(np.uint8))
    write_idx(d / "t10k-images-idx3-ubyte.gz", x[1200:])
    write_idx(d / "t10k-labels-idx1-ubyte.gz", y[1200:].astype(np.uint8))
    return d


@pytest.mark.parametrize("option, value, words", [
    ("--seed", "-1", ["--seed must be at least 0"]),
    ("--seed", "200000000000000", ["--seed must be at most"]),
    ("--split-seed", "-5", ["--split-seed must be at least 0"]),
    ("--weight-decay", "-1", ["--weight-decay must be a number in [0, 1]"]),
    ("--lr", "1e308", ["--lr must be a positive number up to"]),
    ("--lr", "nan", ["--lr must be a positive number"]),
    ("--label-smoothing", "nan", ["--label-smoothing"]),
    ("--augment-strength", "-1", ["--augment-strength"]),
    ("--batch-size", "0", ["--batch-size must be at least 1"]),
    ("--epochs", "1000000000", ["--epochs must be at most"]),
])
def test_bad_options_are_one_line_before_any_data(cli, tmp_path, monkeypatch, option, value, words):
    monkeypatch.setenv("TEGAKI_DATA_DIR", str(tmp_path / "nothing-here"))  # loading data would fail differently
    fails(cli("train", "--preset", "ffnn", option, value, "--out", tmp_path / "r"), *words)
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_missing_device_is_said_before_loading_data(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("TEGAKI_DATA_DIR", str(tmp_path / "nothing-here"))
    line = fails(cli("train", "--preset", "ffnn", "--device", "cuda", "--out", tmp_path / "r"), "--device cuda")
    assert "mnist" not in line.lower()


def test_valid_size_larger_than_the_training_set(cli, bars, tmp_path):
    fails(cli("train", "--preset", "ffnn", "--dataset", f"idx:{bars}", "--valid-size", "70000",
              "--out", tmp_path / "r"), "--valid-size 70,000 leaves nothing to train on", "1,200")
    assert not (tmp_path / "r").exists()


SPECS = [
    ('[[layers]]\ntype = "batchnorm"\neps = -1.0\n', "eps must be in (0, 1]"),
    ('[[layers]]\ntype = "batchnorm"\nmomentum = nan\n', "momentum must be a finite number"),
    ('[[layers]]\ntype = "flatten"\n[[layers]]\ntype = "dense"\nunits = 10\ninit_scale = nan\n',
     "init_scale must be a finite number"),
    ('[[layers]]\ntype = "flatten"\n[[layers]]\ntype = "dense"\nunits = 10\ninit_scale = -1.0\n',
     "init_scale must be >= 0"),
    ('[[layers]]\ntype = "flatten"\n[[layers]]\ntype = "dense"\nunits = 1000000000\n', "too large"),
    # 784 x 300,000 weights + 300,000 biases
    ('[[layers]]\ntype = "flatten"\n[[layers]]\ntype = "dense"\nunits = 300000\n', "235,500,000 parameters"),
    ('input = [1, 4294967296, 4294967296]\n[[layers]]\ntype = "flatten"\n', "each size must be at most"),
    ('[[layers]]\ntype = "conv2d"\nfilters = 100000\nkernel = 1\n[[layers]]\ntype = "conv2d"\nfilters = 2\n',
     "numbers per example"),
    ('[[layers]]\ntype = "flatten"\n[[layers]]\ntype = "dense"\nunits = 10\n[train]\nlr = "fast"\n',
     "training option lr must be float"),
]


@pytest.mark.parametrize("text, words", SPECS)
def test_bad_specs_are_one_line_in_summary(cli, tmp_path, text, words):
    f = tmp_path / "net.toml"
    f.write_text(text)
    fails(cli("summary", f), "net.toml", words)


@pytest.mark.parametrize("make, words", [
    (lambda: "[" * 5000 + "]" * 5000, "nested too deeply"),
    (lambda: '{"layers": [{"type": "dense", "units": ' + "9" * 5000 + "}]}", "unreadable JSON"),
    (lambda: '{"layers": [{"type": "conv2d", "padding": ' + "1" + "0" * 30 + "}]}", "padding 1" + "0" * 30 + " is too large"),
    (lambda: '{"layers": [{"type": "flatten"}], "name": "' + "x" * 5_000_000 + '"}', "too large for a spec file"),
])
def test_pathological_json_specs(cli, tmp_path, make, words):
    f = tmp_path / "net.json"
    f.write_text(make())
    fails(cli("summary", f), "net.json", words)


def test_spec_file_that_is_not_utf8(cli, tmp_path):
    f = tmp_path / "net.toml"
    f.write_bytes(b'name = "caf\xe9"\n[[layers]]\ntype = "flatten"\n')
    fails(cli("summary", f), "not UTF-8 text")


def test_size_limits_come_with_the_size_and_before_allocating():
    with pytest.raises(TegakiError, match=f"more than the {MAX_PARAMS:,}"):
        Spec.from_dict({"layers": [{"type": "flatten"}, {"type": "dense", "units": 1_000_000}]})


def test_train_keys_are_the_train_configs_fields():
    assert TRAIN_KEYS == {f.name: str(f.type) for f in fields(TrainConfig)}


def test_config_is_checked_when_made_and_augment_parsed_once():
    with pytest.raises(TegakiError, match=r"^momentum must be a number in \[0, 1\), got 1.5$"):
        TrainConfig(momentum=1.5)
    assert TrainConfig(augment="affine+elastic").augment_kinds == ("affine", "elastic")


def test_one_epoch_is_singular_and_the_table_is_explained(cli, bars, tmp_path):
    r = cli("train", "--preset", "ffnn", "--dataset", f"idx:{bars}", "--epochs", "1", "--valid-size", "200",
            "--out", tmp_path / "r")
    assert r.code == 0, r.err
    assert "; 1 epoch," in r.out and "1 epochs" not in r.out
    assert "train/valid: training loss over validation loss" in r.out
    r = cli("train", "--preset", "ffnn", "--dataset", f"idx:{bars}", "--epochs", "1", "--valid-size", "0",
            "--patience", "3", "--out", tmp_path / "n")
    assert r.code == 0, r.err  # no validation split: no word of one, and the best epoch is the training set's
    assert "train/valid:" not in r.out and "-: no validation split, so no validation figures" in r.out
    assert "*: the best training score so far" in r.out


def test_sigterm_stops_cleanly_and_resume_keeps_threads(bars, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "tegaki", "train", "--preset", "ffnn", "--dataset", f"idx:{bars}",
           "--epochs", "400", "--valid-size", "200", "--out", str(out), "--threads", "1"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.safetensors").exists() and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 143, (p.returncode, stderr)
    assert "Traceback" not in stderr and stderr.strip().splitlines() == ["tegaki: stopped by SIGTERM"], stderr
    assert "continue with: tegaki train --resume" in stdout
    # --resume accepts --threads (a resumed run keeps its settings, not the machine's)
    state = json.loads(__import__("safetensors").safe_open(str(out / "checkpoint.safetensors"), "np")
                       .metadata()["state"])
    done = state["epoch"]
    r = subprocess.run([sys.executable, "-m", "tegaki", "train", "--resume", str(out), "--epochs", str(done + 1),
                        "--threads", "1"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"resuming {out} after epoch {done}" in r.stdout
    assert json.loads((out / "metrics.json").read_text())["epochs"] == done + 1


def test_relative_data_dir_survives_a_chdir(cli, mnist_dir, tmp_path, monkeypatch):
    from tegaki.commands import common

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "mnist").symlink_to(mnist_dir)
    monkeypatch.setattr(common, "START_DIR", tmp_path)
    monkeypatch.chdir(ROOT)  # a test (or a notebook) changed directory after tegaki started
    monkeypatch.setenv("TEGAKI_DATA_DIR", "d")
    assert common.data_kwargs(type("A", (), {"data_dir": None})())["env_dir"] == tmp_path / "d"
    r = cli("data", "info", "mnist")
    assert r.code == 0, r.err


def test_evaluate_uses_the_folder_the_run_was_trained_from(cli, lenet_run, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    run = tmp_path / "copy"
    run.mkdir()
    for f in lenet_run.iterdir():
        (run / f.name).write_bytes(f.read_bytes())
    r = cli("evaluate", run, "--out", tmp_path / "ev")
    monkeypatch.setenv("TEGAKI_DATA_DIR", str(tmp_path / "nothing-here"))
    r = cli("evaluate", run, "--out", tmp_path / "ev")
    assert r.code == 0, r.err  # no download attempted: the recorded folder still holds the data
    assert "10,000 test images" in r.out


def test_bundled_is_a_name_and_its_outputs_stay_here(cli, tmp_path, monkeypatch):
    from tegaki.run import bundled_model_path

    package = bundled_model_path()
    before = sorted(p.name for p in package.iterdir())
    monkeypatch.chdir(tmp_path)
    r = cli("evaluate", "bundled")
    assert r.code == 0, r.err
    assert (tmp_path / "eval-bundled" / "evaluation.json").is_file()
    assert sorted(p.name for p in package.iterdir()) == before
    assert cli("summary", "bundled").code == 0


def test_sigterm_under_nproc_stops_every_process(bars, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    p = subprocess.Popen([sys.executable, "-m", "tegaki", "train", "--preset", "ffnn", "--dataset", f"idx:{bars}",
                          "--epochs", "400", "--valid-size", "200", "--out", str(out), "--nproc", "2",
                          "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         start_new_session=True)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.safetensors").exists() and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    try:
        stdout, stderr = p.communicate(timeout=60)
    finally:
        os.killpg(p.pid, signal.SIGKILL) if p.poll() is None else None
    assert p.returncode == 143, (p.returncode, stderr)
    assert stderr.strip().splitlines() == ["tegaki: stopped by SIGTERM"], stderr
    assert "continue with: tegaki train --resume" in stdout
    survivors = subprocess.run(["pgrep", "-s", str(p.pid)], capture_output=True, text=True).stdout.split()
    assert survivors == [], survivors  # no process of the launch is left behind


def test_launch_reports_the_first_failure_not_the_processes_it_stopped():
    from tegaki.distributed import _watch

    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]),
             subprocess.Popen([sys.executable, "-c", "import time, sys; time.sleep(0.5); sys.exit(2)"])]
    first: list[int] = []
    t = time.monotonic()
    _watch(procs, first)
    assert first == [2] and time.monotonic() - t < 10
    assert procs[0].returncode == -signal.SIGTERM  # stopped because rank 1 failed; the launch says 2, not 143


class _Tty:
    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s

    def flush(self):
        pass

    def isatty(self):
        return True


def test_progress_bar_in_a_terminal_only():
    from tegaki.train import Progress

    tty, lines = _Tty(), []
    p = Progress(lines.append, tty)
    for done in range(1, 5):
        p.bar(1, 3, done, 4, lambda: (0.5, 0.25))
    p.clear()
    assert "epoch 1/3" in tty.text and "4/4" in tty.text and "loss 0.5000" in tty.text
    import io

    quiet = io.StringIO()
    p = Progress(lines.append, quiet)
    p.bar(1, 3, 1, 4, lambda: (0.5, 0.25))
    p.clear()
    assert quiet.getvalue() == "" and lines == []  # a pipe or a file gets the table only


def test_depth_and_digit_limits_hold_whatever_the_interpreter_allows(tmp_path):
    """Another library may raise the recursion limit or lift int() digit limits; the refusals must not
    depend on either."""
    from tegaki.serve.requests import ApiError, parse_json

    f = tmp_path / "net.json"
    before_depth, before_digits = sys.getrecursionlimit(), sys.get_int_max_str_digits()
    sys.setrecursionlimit(100_000)
    sys.set_int_max_str_digits(0)
    try:
        for text, words in (("[" * 3000 + "]" * 3000, "nested too deeply"),
                            ('{"layers": [{"type": "dense", "units": ' + "9" * 5000 + "}]}", "5,000 digits")):
            f.write_text(text)
            with pytest.raises(TegakiError, match=words):
                Spec.from_file(f)
        for body, words in ((b'{"pixels": ' + b"[" * 1000 + b"]" * 1000 + b"}", "nested too deeply"),
                            (b'{"pixels": [' + b"9" * 5000 + b"]}", "digits")):
            with pytest.raises(ApiError, match=words) as e:
                parse_json(body)
            assert e.value.status == 400
    finally:
        sys.setrecursionlimit(before_depth)
        sys.set_int_max_str_digits(before_digits)


def test_evaluate_on_the_folder_a_run_trained_on_measures_only_its_held_out_images(cli, mnist, tmp_path):
    """A folder dataset without train/ and test/ is split by the run's seed: evaluating the run on that folder
    again must measure the images training held out (the run's own test figure), not the ones it learned."""
    from PIL import Image

    root = tmp_path / "私の数字"
    for i in range(200):  # 20 of each digit
        k = int(np.flatnonzero(mnist.train_labels == i % 10)[i // 10])
        (root / str(i % 10)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(mnist.train_images[k]).save(root / str(i % 10) / f"{i}.png")
    run = tmp_path / "run"
    r = cli("train", "--preset", "ffnn", "--epochs", "1", "--seed", "3", "--dataset", f"folder:{root}", "--out", run)
    assert r.code == 0, r.err
    trained = json.loads((run / "metrics.json").read_text())
    assert trained["test_size"] == 40
    r = cli("evaluate", run, "--out", tmp_path / "ev")
    assert r.code == 0, r.err
    assert "40 test images" in r.out and "the run was trained on this folder" in r.err
    assert f"accuracy {trained['test_accuracy']:.2%}" in r.out  # the same 40 digits as training's own figure
    other = tmp_path / "copy"  # another folder (the same images): every image is new to the model
    other.mkdir()
    for d in root.iterdir():
        (other / d.name).mkdir()
        for f in d.iterdir():
            (other / d.name / f.name).write_bytes(f.read_bytes())
    r = cli("evaluate", run, "--dataset", f"folder:{other}", "--out", tmp_path / "ev2")
    assert r.code == 0 and "200 test images" in r.out and "trained on this folder" not in r.err


def test_data_the_network_cannot_take_is_one_line_before_training(cli, tmp_path):
    """A grey dataset for a three-channel input, and images that are all one flat grey: one line, from the CLI
    and from Python, nothing written."""
    import tegaki as tg

    spec = tmp_path / "rgb.toml"
    spec.write_text('input = [3, 28, 28]\n[[layers]]\ntype = "flatten"\n[[layers]]\ntype = "dense"\nunits = 10\n')
    r = cli("train", "--spec", spec, "--epochs", "1", "--out", tmp_path / "r")
    fails(r, "mnist images have one (grey) channel, the network expects 3; give its input as [1, 28, 28]")
    assert not (tmp_path / "r").exists()
    x = np.random.default_rng(0).integers(0, 60, (50, 28, 28), dtype=np.uint8)
    i = tg.Input((3, 28, 28))
    with pytest.raises(TegakiError, match="one \\(grey\\) channel, the network expects 3"):
        tg.Model(i, tg.Dense(10)(tg.Flatten()(i))).fit(x, np.arange(50) % 10, epochs=1, verbose=0)
    with pytest.raises(TegakiError, match=r"every training image is the same flat grey \(0 everywhere\)"):
        tg.Sequential([tg.Flatten(), tg.Dense(10)]).fit(np.zeros((10, 28, 28), np.uint8), np.arange(10), epochs=1,
                                                         verbose=0)


def test_a_file_the_system_refuses_is_one_line_that_names_the_file_meant(tmp_path, cli, lenet_run):
    import errno

    import tegaki as tg
    from tegaki.errors import os_error_line

    e = OSError(errno.EROFS, "Read-only file system", "/data/run/.evaluation.json.27215.1a6ac506.tmp")
    assert os_error_line(e) == "Read-only file system: /data/run/evaluation.json; choose a folder you can write to"
    assert os_error_line(OSError(errno.ENOSPC, "No space left on device")) == \
        "No space left on device; free some disk space and try again"
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(TegakiError, match="^cannot save the model: Not a directory: .*a-file"):
        tg.load(lenet_run).save(blocker / "saved")
    assert blocker.read_text() == "not a folder"
    for bad in ("-1", "nan", "inf"):
        fails(cli("export", lenet_run, "--onnx", tmp_path / "m.onnx", "--tolerance", bad),
              "--tolerance must be a positive number")
    assert not (tmp_path / "m.onnx").exists()


def test_a_spec_name_cannot_place_a_run_outside_runs_or_reach_the_terminal(cli, tmp_path, monkeypatch):
    cwd = tmp_path / "work"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    evil = cwd / "evil.toml"
    evil.write_text('base = "ffnn"\nname = "../../../escaped"\n[train]\nepochs = 1\nvalid_size = 0\n')
    r = cli("train", "--spec", evil)
    assert r.code == 0, r.err
    made = [p for p in (cwd / "runs").iterdir()]
    assert len(made) == 1 and made[0].name.endswith("-escaped") and (made[0] / "model.json").is_file()
    assert not (tmp_path / "escaped").exists() and not any(p.name.endswith("escaped") for p in tmp_path.parent.iterdir())
    ctrl = cwd / "ctrl.toml"
    ctrl.write_text('base = "ffnn"\nname = "x\\u001b[2J\\u001b]0;PWNED\\u0007"\n')
    for args in (("summary", ctrl), ("train", "--spec", ctrl)):
        fails(cli(*args), "'name' holds control characters")


def test_evaluate_on_a_dataset_the_model_cannot_take_is_one_line(cli, lenet_run, mnist_small, tmp_path):
    """idx: folders of 100x100 images, or with no test images: one line each, not a reshape traceback or a
    0.00% accuracy."""
    from dataclasses import replace

    from conftest import write_idx_subset

    big = replace(mnist_small, train_images=np.zeros((20, 100, 100), np.uint8), test_images=np.zeros((20, 100, 100),
                  np.uint8))
    fails(cli("evaluate", lenet_run, "--dataset", f"idx:{write_idx_subset(tmp_path / 'big', big, 20, 20)}",
              "--out", tmp_path / "e1"), "images are 100x100, the model takes 28x28")
    fails(cli("evaluate", lenet_run, "--dataset", f"idx:{write_idx_subset(tmp_path / 'none', mnist_small, 20, 0)}",
              "--out", tmp_path / "e2"), "has no test images")
    assert not (tmp_path / "e1").exists() and not (tmp_path / "e2").exists()


def test_a_training_batch_too_large_for_memory_is_refused_with_the_batch_that_fits(cli, tmp_path):
    """A 1x1 conv padded by 1000 (12 maps of 2028x2028: 49.4 M numbers an example, under the spec's limit) would
    need 3 x 4 bytes x 49.4 M x 128 = 71 GiB for a batch; it is refused, naming the batch size that fits."""
    f = tmp_path / "big.toml"
    f.write_text('input = [1, 28, 28]\n[[layers]]\ntype = "conv2d"\nfilters = 12\nkernel = 1\npadding = 1000\n'
                 '[[layers]]\ntype = "globalavgpool"\n[[layers]]\ntype = "dense"\nunits = 10\n')
    acts = 784 + 12 * 2028 * 2028 + 12 + 10
    assert Spec.from_file(f).activations_per_example() == acts
    fails(cli("train", "--spec", f, "--batch-size", "128", "--out", tmp_path / "r"),
          f"needs about {128 * 12 * acts / 2**30:.0f} GiB to train", f"--batch-size {8 * 2**30 // (12 * acts)} or less")
    assert not (tmp_path / "r").exists()


def test_an_output_that_cannot_be_written_is_refused_before_the_work(cli, lenet_run, tmp_path, monkeypatch):
    """A read-only place for evaluate, inspect and report: one line before anything is measured or printed (was:
    the whole evaluation printed, then an error naming a temporary file). os.access stands in for a read-only
    mount, which root's tests cannot make."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: Path(p) != locked and real(p, mode, *a, **k))
    for args in (("evaluate", lenet_run, "--out", locked / "ev"), ("inspect", lenet_run, "--out", locked / "pics"),
                 ("report", lenet_run, "--out", locked / "r.html")):
        r = cli(*args)
        fails(r, f"{locked} is not writable here (read-only?); choose another folder with --out")
        assert r.out == "", (args, r.out)
    assert list(locked.iterdir()) == []
    (tmp_path / "a-file").write_text("x")
    fails(cli("evaluate", lenet_run, "--out", tmp_path / "a-file"), "is a file; give a folder")


def test_batch_norm_never_gets_a_last_batch_of_one(mnist):
    """129 images in batches of 128 left one image alone in the last batch, which a batch norm after a dense
    layer cannot normalise (PyTorch raised a ValueError): it joins the batch before. Too little data for any
    batch statistics is one line."""
    from tegaki.train import steps_per_epoch

    bn = tg.Sequential([tg.Flatten(), tg.Dense(16), tg.BatchNorm(), tg.ReLU(), tg.Dense(10), tg.Softmax()])
    plain = load_preset("ffnn")
    assert steps_per_epoch(bn.spec, 129, 128) == 1 and steps_per_epoch(plain, 129, 128) == 2
    assert steps_per_epoch(bn.spec, 130, 128) == 2 and steps_per_epoch(bn.spec, 1, 128) == 1
    for engine in ("torch", "numpy"):
        h = bn.fit(mnist.train_images[:129], mnist.train_labels[:129], epochs=1, batch_size=128, engine=engine,
                   verbose=0)
        assert len(h.rows) == 1 and np.isfinite(h.rows[0]["train_loss"])
    fresh = tg.Sequential([tg.Flatten(), tg.Dense(16), tg.BatchNorm(), tg.Dense(10), tg.Softmax()])
    with pytest.raises(TegakiError, match="^a network with batch norm needs at least 2 training images"):
        fresh.fit(mnist.train_images[:1], mnist.train_labels[:1], epochs=1, verbose=0)
    with pytest.raises(TegakiError, match="a batch of 1 has none; train with a batch size of 2 or more$"):
        fresh.fit(mnist.train_images[:50], mnist.train_labels[:50], epochs=1, batch_size=1, verbose=0)
