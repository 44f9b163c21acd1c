"""Benchmark: inference speed of a trained run in every engine, on this machine.

    python bench/inference.py RUN                  # e.g. a run of `tegaki train --preset fast`
    python bench/inference.py                      # the bundled model, if installed
    python bench/inference.py RUN --threads 1 --repeats 9 --latency-calls 3000

For each engine (PyTorch eager, PyTorch compiled with torch.compile, ONNX Runtime, and the
NumPy engine when it is installed) it measures
  - batch throughput: the whole MNIST test set (10,000 images, already normalised float32)
    through the engine in batches of --batch, images per second, median of --repeats passes;
  - single-image latency: one 28x28 image per call, the model call only (a torch module call,
    an ONNX Runtime session run, a NumPy forward), median and 90th percentile of
    --latency-calls calls after a warm-up;
  - the test accuracy it computes, so a fast but wrong engine shows;
  - images per CPU-second (the process's CPU time, all threads): on a busy machine, with
    --threads 1, this estimates the throughput of one idle core.
The header records the machine (CPU, cores, threads, load average before and after: other
processes make every figure slower and noisier) and the library versions.

Targets (issue 6): >= 20,000 images/s for the batch and a median latency <= 0.5 ms on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from _machine import cpu_name, load_average  # noqa: E402  (bench/_machine.py)


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds of `repeats` calls (after one warm-up call). The CPU time of
    this process is steadier than the wall time when other processes share the machine."""
    fn()
    ts, cs = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        ts.append(time.perf_counter() - t)
        cs.append(time.process_time() - c)
    return statistics.median(ts), statistics.median(cs)


def latencies(fn, calls: int) -> tuple[float, float]:
    """(median, 90th percentile) milliseconds of single calls."""
    for _ in range(min(200, calls)):
        fn()
    ts = []
    for _ in range(calls):
        t = time.perf_counter_ns()
        fn()
        ts.append(time.perf_counter_ns() - t)
    ts.sort()
    return statistics.median(ts) / 1e6, ts[int(0.9 * (len(ts) - 1))] / 1e6


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", nargs="?", help="a run folder (default: the bundled model)")
    p.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files (default: tegaki's lookup)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for torch and ONNX Runtime")
    p.add_argument("--batch", type=int, default=2000, help="images per call for the throughput figure")
    p.add_argument("--repeats", type=int, default=7, help="passes over the test set per engine (median)")
    p.add_argument("--latency-calls", type=int, default=2000, help="single-image calls per engine")
    p.add_argument("--engines", default="eager,compiled,onnx,numpy", help="comma-separated subset")
    args = p.parse_args(argv)

    import torch

    from tegaki.data.sources import default_cache_dir, load_dataset
    from tegaki.engines.torch_engine import TorchEngine
    from tegaki.predict import Predictor

    torch.set_num_threads(args.threads)
    load_before = load_average()
    pred = Predictor.load(args.run)
    env = os.environ.get("TEGAKI_DATA_DIR") or (str(ROOT.parent / "shared" / "data")
                                                 if (ROOT.parent / "shared" / "data" / "mnist").is_dir() else None)
    ds = load_dataset("mnist", data_dir=args.data_dir, env_dir=env, cache_dir=default_cache_dir(os.environ))
    x = np.ascontiguousarray(pred.prepare(ds.test_images))  # (10000, 1, 28, 28) float32
    labels = ds.test_labels
    one = np.ascontiguousarray(x[:1])  # (1, 1, 28, 28)
    spec, weights = pred.run.spec, pred.run.weights
    n = len(x)
    rows = []

    def add(name, batch_fn, single_fn, note=""):
        logits = batch_fn()
        acc = float((np.asarray(logits).argmax(1) == labels).mean())
        sec, cpu = timed(batch_fn, args.repeats)
        med, p90 = latencies(single_fn, args.latency_calls)
        rows.append((name, n / sec, n / cpu, med, p90, acc, note))
        print(f"  {name}: {n / sec:,.0f} images/s, latency {med:.3f} ms", file=sys.stderr, flush=True)

    want = set(args.engines.split(","))
    xt, onet = torch.from_numpy(x), torch.from_numpy(one)

    def torch_calls(net):
        """(the whole test set in batches, one image) through a torch module, without autograd."""
        def batch():
            with torch.inference_mode():
                return torch.cat([net(xt[i:i + args.batch]) for i in range(0, n, args.batch)]).numpy()

        def single():
            with torch.inference_mode():
                return net(onet)

        return batch, single

    if "eager" in want:
        net = TorchEngine(spec, weights, device="cpu").net.eval()
        add("torch eager", *torch_calls(net), "channels-last fp32")
    if "compiled" in want:
        net = TorchEngine(spec, weights, device="cpu").net.eval()
        t = time.perf_counter()
        cnet = torch.compile(net, dynamic=False)
        with torch.inference_mode():
            cnet(xt[:args.batch])
            cnet(onet)
            if n % args.batch:
                cnet(xt[n - n % args.batch:])
        compile_s = time.perf_counter() - t
        add("torch compiled", *torch_calls(cnet), f"inductor, {compile_s:.0f} s to compile")
    if "onnx" in want:
        from tegaki.export import session, to_onnx

        sess = session(to_onnx(spec, weights).SerializeToString(), threads=args.threads)

        def ort_batch():
            return np.concatenate([sess.run(["logits"], {"input": x[i:i + args.batch]})[0]
                                   for i in range(0, n, args.batch)])

        def ort_one():
            return sess.run(["logits"], {"input": one})

        import onnxruntime

        add("ONNX Runtime", ort_batch, ort_one, f"onnxruntime {onnxruntime.__version__}")
    if "numpy" in want:
        try:
            from tegaki.engines.numpy_engine import NumpyEngine  # noqa: F401
        except ImportError:
            print("  (no NumPy engine in this version: skipped)", file=sys.stderr)
        else:
            from tegaki.engines import make_engine

            ne = make_engine("numpy", spec, weights)
            add("NumPy engine", lambda: ne.logits(x, batch_size=args.batch) if _takes_batch(ne) else ne.logits(x),
                lambda: ne.logits(one), f"numpy {np.__version__}")
    load_after = load_average()

    print(f"\nInference: {spec.name} ({spec.num_params():,} parameters) from {pred.run.path}")
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, {args.threads} threads; load average "
          f"{load_before} before, {load_after} after")
    print(f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}")
    print(f"batch: the {n:,} MNIST test images in batches of {args.batch}, median of {args.repeats}; "
          f"latency: 1 image per call, {args.latency_calls} calls\n")
    print("| engine | images/s (batch) | images per CPU-second | latency median ms | latency p90 ms | test accuracy "
          "| notes |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, ips, ipc, med, p90, acc, note in rows:
        print(f"| {name} | {ips:,.0f} | {ipc:,.0f} | {med:.3f} | {p90:.3f} | {acc:.2%} | {note} |")
    print("\nimages per CPU-second: the images divided by this process's CPU time (all its threads); with"
          " --threads 1\non a busy machine it estimates what one idle core would do.")
    return 0


def _takes_batch(engine) -> bool:
    import inspect

    return "batch_size" in inspect.signature(engine.logits).parameters


if __name__ == "__main__":
    raise SystemExit(main())
