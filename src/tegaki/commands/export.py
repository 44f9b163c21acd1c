"""`tegaki export RUN --onnx FILE`: the run's network as an ONNX model, checked and verified.

The file is checked with onnx.checker and its ONNX Runtime outputs are compared with PyTorch's
before it is written (atomically); a mismatch above the tolerance writes nothing.
"""

from __future__ import annotations

from tegaki.errors import TegakiError


def cmd_export(args) -> int:
    from tegaki.export import export_run

    if not args.onnx:
        raise TegakiError("say what to export: tegaki export RUN --onnx model.onnx")
    r = export_run(args.run, args.onnx, tolerance=args.tolerance)
    print(f"wrote {r['path']} ({r['bytes'] / 1024:.1f} KB, ONNX opset {r['opset']}): input 'input' {r['inputs']} "
          "float32 = (pixels / 255 - mean) / std, outputs 'logits' and 'probabilities'")
    print(f"onnx.checker: ok; ONNX Runtime vs PyTorch on {r['samples']} inputs: max difference {r['max_abs_diff']:.1e}")
    print("the normalisation and class names are in the model's metadata (tegaki.normalize, tegaki.classes)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("export", help="write a run's network as an ONNX model (checked against PyTorch)")
    p.add_argument("run", help="a run folder")
    p.add_argument("--onnx", metavar="FILE", help="the .onnx file to write")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest allowed difference between ONNX Runtime and PyTorch logits (default 1e-4)")
    p.set_defaults(func=cmd_export)
