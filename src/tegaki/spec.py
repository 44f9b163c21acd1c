"""Networks as data: an ordered list of small layer records, with shape inference.

A spec says what a network is, independent of any engine:

    spec = Spec(input_shape=(1, 28, 28), layers=[
        Conv2d(20, 5), MaxPool(2), Tanh(),
        Conv2d(50, 5), MaxPool(2), Tanh(),
        Flatten(), Dense(500), Tanh(), Dense(10), Softmax(),
    ])
    print(spec.summary())

Activations are layers of their own, so a learner sees them. Shapes are (C, H, W) for images
and (F,) for vectors, batch excluded. Weight layouts follow PyTorch: conv (out, in, kh, kw),
dense (out, in); flattening is in (C, H, W) order. Weights are named "<layer name>.<param>".

Branches: layers still run in order, each taking the previous layer's output, unless it names
its inputs: `inputs = ["conv2", "relu3"]` takes the outputs of earlier layers ("input" is the
network's input). `add` sums equal shapes (a residual connection), `concat` joins maps along the
channels, `globalavgpool` averages each channel to one number. A list without names means what
it always meant. In Python, calling a layer on a symbol (`tg.Conv2d(9, 3)(x)`) records the same
wiring for tegaki.functional.Model.

A spec is written in TOML or JSON (see src/tegaki/presets/) and serialises back to JSON.
The presets carry a training recipe in `train` (optimiser, learning rate, batch size ...).
`base = "deep"` starts a spec from a preset: the spec's own `train` options replace the base's one
by one, and any other key it gives (`layers` included, as a whole list) replaces the base's. A run
saves the spec with its base filled in, so a run folder never depends on a preset file.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from tegaki.errors import TegakiError
from tegaki.numerics import bounded_int, json_depth

Shape = tuple[int, ...]

MAX_INT = 1_000_000  # the largest whole number a spec may hold (units, filters, kernel, padding, input sizes)
MAX_PARAMS = 100_000_000  # learned numbers of one network: 400 MB as float32
MAX_ACTIVATIONS = 50_000_000  # numbers every layer outputs for ONE example, added up (200 MB as float32)
INFERENCE_BYTES = 2**30  # what one inference batch's activations may take (float32): batches shrink to fit
TRAINING_BYTES = 8 * 2**30  # what one training batch's activations, kept for backpropagation, may take
MAX_DEPTH = 64  # brackets a spec file may nest (a spec needs 4)
MAX_SPEC_BYTES = 4_000_000  # a spec file or model.json larger than this is not a spec
# the `train` table's options and their types (tegaki.train.TrainConfig's fields; a test keeps the two equal)
TRAIN_KEYS = {
    "epochs": "int", "batch_size": "int", "lr": "float", "optimizer": "str", "momentum": "float",
    "weight_decay": "float", "schedule": "str", "label_smoothing": "float", "patience": "int | None",
    "monitor": "str", "valid_size": "int", "seed": "int", "device": "str", "engine": "str", "dataset": "str",
    "augment": "str | None", "augment_strength": "float", "precision": "str", "compile": "bool",
    "split_seed": "int | None", "ema": "float", "teachers": "list | None", "distill_weight": "float",
    "distill_temperature": "float", "bn_refresh": "bool",
}


class SpecError(TegakiError):
    pass


def _pair(v, what: str) -> tuple[int, int]:
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(i, int) for i in v):
        return (int(v[0]), int(v[1]))
    raise SpecError(f"{what} must be an integer or a pair of integers, got {v!r}")


@dataclass
class Layer:
    """Base record. `name` is filled in by the Spec (conv1, pool1, dense1, relu1 ...)."""

    type: ClassVar[str] = ""
    prefix: ClassVar[str] = ""
    has_params: ClassVar[bool] = False
    name: str = field(default="", kw_only=True)
    inputs: tuple[str, ...] | None = field(default=None, kw_only=True)  # None: the previous layer's output

    def out_shape(self, s: Shape) -> Shape:
        return s

    def join(self, shapes: list[Shape], names: list[str]) -> Shape:
        """The output shape for the shapes of its inputs (named `names`): one input, unless the layer joins."""
        if len(shapes) != 1:
            raise SpecError(f"{self.name} ({self.type}) takes one input but is given {len(shapes)}: "
                            f"{' and '.join(names)}; join them first with an add or concat layer")
        return self.out_shape(shapes[0])

    def __call__(self, x) -> "Symbol":
        """The functional form: this layer applied to a symbol (or a list of symbols, for add and concat)."""
        return Symbol.apply(self, x)

    def params(self, s: Shape) -> dict[str, Shape]:
        """Learned tensors (name -> shape) for input shape `s`."""
        return {}

    def buffers(self, s: Shape) -> dict[str, Shape]:
        """Tensors that are state but not learned (batchnorm running statistics)."""
        return {}

    def to_dict(self) -> dict:
        d = {"type": self.type}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "name" or v != f.default:
                d[f.name] = list(v) if isinstance(v, tuple) else v
        return d

    def describe(self) -> str:
        args = [f"{f.name}={getattr(self, f.name)!r}" for f in fields(self)
                if f.name != "name" and getattr(self, f.name) != f.default]
        return f"{self.type}({', '.join(args)})"


def _need_image(layer: Layer, s: Shape) -> None:
    if len(s) != 3:
        raise SpecError(f"{layer.name} ({layer.type}) needs an image input (C, H, W) but gets {s}; "
                        "remove the flatten before it or move the layer")


def _need_vector(layer: Layer, s: Shape) -> None:
    if len(s) != 1:
        raise SpecError(f"{layer.name} ({layer.type}) is fed an image of shape {s}; add a flatten layer before it")


INITS = ("default", "xavier", "he", "uniform", "normal", "zeros")


@dataclass
class Conv2d(Layer):
    type: ClassVar[str] = "conv2d"
    prefix: ClassVar[str] = "conv"
    has_params: ClassVar[bool] = True
    filters: int = 32
    kernel: int | tuple[int, int] = 3
    stride: int | tuple[int, int] = 1
    padding: str | int = "valid"  # "valid", "same" or a number of pixels on every side
    bias: bool = True
    init: str = "default"
    init_scale: float = 1.0

    @property
    def kernel2(self) -> tuple[int, int]:
        """The kernel as a (height, width) pair."""
        return _pair(self.kernel, f"{self.name} kernel")

    @property
    def stride2(self) -> tuple[int, int]:
        """The stride as a (vertical, horizontal) pair."""
        return _pair(self.stride, f"{self.name} stride")

    def pads(self, h: int, w: int) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) zero padding for an h x w input."""
        (kh, kw), (sh, sw) = self.kernel2, self.stride2
        if self.padding == "valid":
            return (0, 0, 0, 0)
        if self.padding == "same":  # output ceil(in / stride), extra pixel at the bottom/right
            th = max((math.ceil(h / sh) - 1) * sh + kh - h, 0)
            tw = max((math.ceil(w / sw) - 1) * sw + kw - w, 0)
            return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
        if isinstance(self.padding, int) and not isinstance(self.padding, bool) and self.padding >= 0:
            p = self.padding
            return (p, p, p, p)
        raise SpecError(f"{self.name}: padding must be 'valid', 'same' or a non-negative integer, got {self.padding!r}")

    def out_shape(self, s: Shape) -> Shape:
        _need_image(self, s)
        c, h, w = s
        (kh, kw), (sh, sw) = self.kernel2, self.stride2
        if self.filters < 1 or kh < 1 or kw < 1 or sh < 1 or sw < 1:
            raise SpecError(f"{self.name}: filters, kernel and stride must be positive")
        t, b, l, r = self.pads(h, w)
        if kh > h + t + b or kw > w + l + r:
            raise SpecError(f"{self.name}: kernel {kh}x{kw} is larger than its {h}x{w} input; "
                            "use a smaller kernel, padding='same' or fewer pooling layers before it")
        return (self.filters, (h + t + b - kh) // sh + 1, (w + l + r - kw) // sw + 1)

    def params(self, s: Shape) -> dict[str, Shape]:
        p = {"weight": (self.filters, s[0], *self.kernel2)}
        if self.bias:
            p["bias"] = (self.filters,)
        return p


@dataclass
class _Pool(Layer):
    prefix: ClassVar[str] = "pool"
    size: int | tuple[int, int] = 2
    stride: int | tuple[int, int] | None = None  # defaults to the size

    def window(self) -> tuple[tuple[int, int], tuple[int, int]]:
        k = _pair(self.size, f"{self.name} size")
        s = k if self.stride is None else _pair(self.stride, f"{self.name} stride")
        return k, s

    def out_shape(self, s: Shape) -> Shape:
        _need_image(self, s)
        c, h, w = s
        (kh, kw), (sh, sw) = self.window()
        if kh < 1 or kw < 1 or sh < 1 or sw < 1:
            raise SpecError(f"{self.name}: size and stride must be positive")
        if kh > h or kw > w:
            raise SpecError(f"{self.name}: pool window {kh}x{kw} is larger than its {h}x{w} input")
        return (c, (h - kh) // sh + 1, (w - kw) // sw + 1)


@dataclass
class MaxPool(_Pool):
    type: ClassVar[str] = "maxpool"


@dataclass
class AvgPool(_Pool):
    type: ClassVar[str] = "avgpool"


@dataclass
class Dense(Layer):
    type: ClassVar[str] = "dense"
    prefix: ClassVar[str] = "dense"
    has_params: ClassVar[bool] = True
    units: int = 10
    bias: bool = True
    init: str = "default"
    init_scale: float = 1.0

    def out_shape(self, s: Shape) -> Shape:
        _need_vector(self, s)
        if self.units < 1:
            raise SpecError(f"{self.name}: units must be positive, got {self.units}")
        return (self.units,)

    def params(self, s: Shape) -> dict[str, Shape]:
        p = {"weight": (self.units, s[0])}
        if self.bias:
            p["bias"] = (self.units,)
        return p


@dataclass
class Flatten(Layer):
    type: ClassVar[str] = "flatten"
    prefix: ClassVar[str] = "flatten"

    def out_shape(self, s: Shape) -> Shape:
        return (math.prod(s),)  # exact (Python integers), however large


@dataclass
class Dropout(Layer):
    type: ClassVar[str] = "dropout"
    prefix: ClassVar[str] = "dropout"
    rate: float = 0.5

    def out_shape(self, s: Shape) -> Shape:
        if not 0.0 <= self.rate < 1.0:
            raise SpecError(f"{self.name}: dropout rate must be in [0, 1), got {self.rate}")
        return s


@dataclass
class BatchNorm(Layer):
    """Per channel (images) or per feature (vectors); running statistics for evaluation."""

    type: ClassVar[str] = "batchnorm"
    prefix: ClassVar[str] = "bn"
    has_params: ClassVar[bool] = True
    momentum: float = 0.1
    eps: float = 1e-5

    def out_shape(self, s: Shape) -> Shape:
        if not 0.0 <= self.momentum <= 1.0:
            raise SpecError(f"{self.name}: batchnorm momentum must be in [0, 1], got {self.momentum}")
        if not 0.0 < self.eps <= 1.0:
            raise SpecError(f"{self.name}: batchnorm eps must be in (0, 1], got {self.eps}")
        return s

    def params(self, s: Shape) -> dict[str, Shape]:
        return {"weight": (s[0],), "bias": (s[0],)}

    def buffers(self, s: Shape) -> dict[str, Shape]:
        return {"running_mean": (s[0],), "running_var": (s[0],)}


@dataclass
class Activation(Layer):
    prefix: ClassVar[str] = "act"


@dataclass
class Sigmoid(Activation):
    type: ClassVar[str] = "sigmoid"


@dataclass
class Tanh(Activation):
    type: ClassVar[str] = "tanh"


@dataclass
class ReLU(Activation):
    type: ClassVar[str] = "relu"


@dataclass
class LeakyReLU(Activation):
    type: ClassVar[str] = "leaky_relu"
    slope: float = 0.01


@dataclass
class ELU(Activation):
    type: ClassVar[str] = "elu"
    alpha: float = 1.0


@dataclass
class Maxout(Activation):
    """Max over groups of `pieces` consecutive channels (or features): C -> C / pieces."""

    type: ClassVar[str] = "maxout"
    pieces: int = 2

    def out_shape(self, s: Shape) -> Shape:
        if self.pieces < 1 or s[0] % self.pieces:
            raise SpecError(f"{self.name}: {s[0]} channels cannot be split into groups of {self.pieces}")
        return (s[0] // self.pieces, *s[1:])


@dataclass
class Softmax(Activation):
    """Only as the last layer: engines return its input (logits); predictions apply it."""

    type: ClassVar[str] = "softmax"

    def out_shape(self, s: Shape) -> Shape:
        _need_vector(self, s)
        return s


def _need_two(layer: Layer, names: list[str]) -> None:
    if len(names) < 2:
        raise SpecError(f"{layer.name} ({layer.type}) joins two or more layers but is given only "
                        f"{' '.join(names)}; give it two or more (in a spec: inputs = [\"a\", \"b\"]; in Python: "
                        f"tg.{type(layer).__name__}()([a, b]))")


@dataclass
class Add(Layer):
    """The element-wise sum of two or more outputs of the same shape: a residual connection."""

    type: ClassVar[str] = "add"
    prefix: ClassVar[str] = "add"

    def join(self, shapes: list[Shape], names: list[str]) -> Shape:
        _need_two(self, names)
        for s, n in zip(shapes[1:], names[1:]):
            if s != shapes[0]:
                raise SpecError(f"{self.name} (add) cannot add {names[0]}'s output {shapes[0]} and {n}'s output "
                                f"{s}: added shapes must be equal; change the filters, stride or pooling of one")
        return shapes[0]


@dataclass
class Concat(Layer):
    """Two or more outputs side by side along the channels (images of equal height and width) or features."""

    type: ClassVar[str] = "concat"
    prefix: ClassVar[str] = "concat"

    def join(self, shapes: list[Shape], names: list[str]) -> Shape:
        _need_two(self, names)
        a = shapes[0]
        for s, n in zip(shapes[1:], names[1:]):
            if len(s) != len(a) or s[1:] != a[1:]:
                what = "heights and widths" if len(s) == len(a) else "kinds (an image and a vector)"
                raise SpecError(f"{self.name} (concat) cannot concatenate {names[0]}'s output {a} and {n}'s output "
                                f"{s}: their {what} differ; concat joins along the channels only")
        return (sum(s[0] for s in shapes), *a[1:])


@dataclass
class GlobalAvgPool(Layer):
    """The mean of each channel over the whole map: (C, H, W) -> (C,)."""

    type: ClassVar[str] = "globalavgpool"
    prefix: ClassVar[str] = "gap"

    def out_shape(self, s: Shape) -> Shape:
        _need_image(self, s)
        return (s[0],)


@dataclass(eq=False)
class Symbol:
    """A tensor of the functional form: the network's input (layer None) or a layer applied to symbols.
    tegaki.functional.Model turns the symbols an output depends on into a Spec."""

    layer: Layer | None
    parents: tuple["Symbol", ...] = ()
    shape: Shape | None = None  # the input's shape, for the input symbol
    order: int = field(default_factory=itertools.count().__next__)  # creation order: inputs come first

    @classmethod
    def apply(cls, layer: Layer, x) -> "Symbol":
        xs = tuple(x) if isinstance(x, (list, tuple)) else (x,)
        if not xs or not all(isinstance(s, Symbol) for s in xs):
            raise SpecError(f"{layer.type} layer: call it on tg.Input(...) or on another layer's result "
                            f"(a list of them for add and concat), got {_short(x)}")
        return cls(layer, xs)


LAYERS: dict[str, type[Layer]] = {c.type: c for c in (
    Conv2d, MaxPool, AvgPool, Dense, Flatten, Dropout, BatchNorm,
    Sigmoid, Tanh, ReLU, LeakyReLU, ELU, Maxout, Softmax, Add, Concat, GlobalAvgPool)}
ALIASES = {"conv": "conv2d", "linear": "dense", "fc": "dense", "max_pool": "maxpool", "avg_pool": "avgpool",
           "pool": "maxpool", "batch_norm": "batchnorm", "bn": "batchnorm", "logistic": "sigmoid",
           "leakyrelu": "leaky_relu", "concatenate": "concat", "global_avg_pool": "globalavgpool",
           "gap": "globalavgpool"}


def type_ok(value, annotation: str) -> bool:
    """Does `value` (from TOML or JSON) fit a field annotated like "int | tuple[int, int] | None"?

    An annotation with a part not understood here is not checked (True)."""
    alts = [a.strip() for a in annotation.split("|")]
    if not set(alts) <= {"None", "bool", "int", "float", "str", "tuple[int, int]"}:
        return True
    for alt in alts:
        if alt == "None" and value is None:
            return True
        if alt == "bool" and isinstance(value, bool):
            return True
        if isinstance(value, bool):
            continue  # true/false is not a number
        if alt == "int" and isinstance(value, int):
            return True
        if alt == "float" and isinstance(value, (int, float)):
            return True
        if alt == "str" and isinstance(value, str):
            return True
        if alt == "tuple[int, int]" and isinstance(value, (list, tuple)) and len(value) == 2 and all(
                isinstance(i, int) and not isinstance(i, bool) for i in value):
            return True
    return False


def _type_words(annotation: str) -> str:
    return annotation.replace("tuple[int, int]", "a pair of integers").replace(" | ", " or ").replace("None", "null")


_NAME_OK = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def layer_from_dict(d: dict, where: str = "layer") -> Layer:
    if not isinstance(d, dict) or "type" not in d:
        raise SpecError(f"{where}: each layer needs a 'type', got {d!r}")
    t = str(d["type"]).lower()
    t = ALIASES.get(t, t)
    if t not in LAYERS:
        raise SpecError(f"{where}: unknown layer type {d['type']!r}; known: {', '.join(LAYERS)}")
    cls = LAYERS[t]
    known = {f.name for f in fields(cls)}
    extra = set(d) - known - {"type"}
    if extra:
        raise SpecError(f"{where} ({t}): unknown option(s) {', '.join(sorted(extra))}; "
                        f"known: {', '.join(sorted(known))}")
    for f in fields(cls):
        if f.name in d and not type_ok(d[f.name], str(f.type)):
            raise SpecError(f"{where} ({t}): {f.name} must be {_type_words(str(f.type))}, "
                            f"got {d[f.name]!r}")
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k != "type"}
    try:
        layer = cls(**kw)
    except TypeError as e:
        raise SpecError(f"{where} ({t}): {e}") from None
    if getattr(layer, "init", "default") not in INITS:
        raise SpecError(f"{where} ({t}): unknown init {layer.init!r}; choose one of {', '.join(INITS)}")
    return layer


def _check_fields(layer: Layer) -> None:
    """Each option of a layer has its declared type, whole numbers are at most MAX_INT, reals are finite."""
    ins = layer.inputs
    if isinstance(ins, str):
        ins = layer.inputs = (ins,)
    if ins is not None:
        if not (isinstance(ins, (list, tuple)) and ins and all(isinstance(n, str) for n in ins)):
            raise SpecError(f"{layer.type} layer: inputs must be a non-empty list of layer names, got {_short(ins)}")
        layer.inputs = tuple(ins)
    for f in fields(layer):
        if f.name in ("name", "inputs"):
            continue
        v = getattr(layer, f.name)
        if not type_ok(v, str(f.type)):
            raise SpecError(f"{layer.type} layer: {f.name} must be {_type_words(str(f.type))}, got {_short(v)}")
        for x in (v if isinstance(v, (tuple, list)) else (v,)):
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                continue
            if isinstance(x, int) and abs(x) > MAX_INT:
                raise SpecError(f"{layer.type} layer: {f.name} {_short(x)} is too large (at most {MAX_INT:,})")
            if isinstance(x, float) and not (math.isfinite(x) and abs(x) <= MAX_INT):
                raise SpecError(f"{layer.type} layer: {f.name} must be a finite number up to {MAX_INT:,}, got {x}")
    if getattr(layer, "init_scale", 1.0) < 0:
        raise SpecError(f"{layer.type} layer: init_scale must be >= 0, got {layer.init_scale}")


def _check_train(train: dict, name: str) -> None:
    """The `train` table: known options of the right types (ranges are checked by TrainConfig)."""
    bad = sorted(set(train) - set(TRAIN_KEYS))
    if bad:
        raise SpecError(f"spec {name!r}: unknown training option(s) {', '.join(_short(k)[1:-1] for k in bad)}; "
                        f"known: {', '.join(sorted(TRAIN_KEYS))}")
    for k, v in train.items():
        if not type_ok(v, TRAIN_KEYS[k]):
            raise SpecError(f"spec {name!r}: training option {k} must be "
                            f"{TRAIN_KEYS[k].replace(' | ', ' or ')}, got {_short(v)}")
        if isinstance(v, float) and not math.isfinite(v):
            raise SpecError(f"spec {name!r}: training option {k} must be a finite number, got {v}")


def _short(v, n: int = 40) -> str:
    """repr(v), cut to n characters (a 5,000-digit number or a long string stays one short line)."""
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10**n:
        return f"a {len(str(abs(v)))}-digit number"
    r = repr(v)
    return r if len(r) <= n else r[:n - 3] + "..."


def parse_text(text: str, fmt: str, where: str, what: str | None = None):
    """JSON or TOML text -> Python objects; every way it can be broken is one SpecError
    ("<where>: malformed JSON (...)", or "<where>: corrupt <what> (...)" when `what` is given)."""
    def fail(reason: str):
        return SpecError(f"{where}: corrupt {what} ({reason})" if what else f"{where}: {reason}")

    if json_depth(text) > MAX_DEPTH:  # TOML nests with brackets too (inline tables and arrays)
        raise fail("nested too deeply")
    try:
        return json.loads(text, parse_int=bounded_int) if fmt == "json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise fail(f"malformed {fmt.upper()} ({e})" if not what else f"malformed {fmt.upper()}: {e}") from None
    except RecursionError:
        raise fail("nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more than 4,300 digits
        raise fail(f"unreadable {fmt.upper()}: {str(e).splitlines()[0][:80]}") from None


def read_text_file(path: Path, what: str = "file", limit: int = MAX_SPEC_BYTES) -> str:
    """A UTF-8 text file of at most `limit` bytes, or one TegakiError saying what is wrong."""
    try:
        size = path.stat().st_size
        if size > limit:
            raise SpecError(f"{path}: {size:,} bytes is too large for a {what} (at most {limit:,})")
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: not UTF-8 text (byte {e.start}); save the {what} as UTF-8") from None
    except OSError as e:
        raise SpecError(f"{path}: cannot read the {what} ({e.strerror or type(e).__name__})") from None


def name_layers(layers: list[Layer]) -> None:
    """Give every unnamed layer its name (conv1, pool1, relu1, relu2 ...); names are unique."""
    counts: dict[str, int] = {}
    seen = set()
    given = {layer.name for layer in layers if layer.name}  # a name a layer was given is skipped, as Keras does
    for layer in layers:
        if layer.name and (not _NAME_OK.match(layer.name) or layer.name == "input"):
            raise SpecError(f"layer name {layer.name!r}: use letters, digits and underscores only "
                            "('input' names the network's input)")
        if not layer.name:
            p = layer.prefix if not isinstance(layer, Activation) else layer.type
            counts[p] = counts.get(p, 0) + 1
            while f"{p}{counts[p]}" in given:
                counts[p] += 1
            layer.name = f"{p}{counts[p]}"
        if layer.name in seen:
            raise SpecError(f"two layers are named {layer.name!r}; layer names must be unique")
        seen.add(layer.name)


@dataclass
class Spec:
    input_shape: Shape = (1, 28, 28)
    layers: list[Layer] = field(default_factory=list)
    name: str = "custom"
    description: str = ""
    normalize: str = "standard"  # "standard": (x/255 - mean)/std of the training set; "unit": x/255
    train: dict[str, Any] = field(default_factory=dict)  # the recipe: defaults for `tegaki train`

    def __post_init__(self):
        self.input_shape = tuple(int(i) for i in self.input_shape)
        if len(self.input_shape) not in (1, 3) or min(self.input_shape) < 1:
            raise SpecError(f"input shape must be (C, H, W) or (F,), got {self.input_shape}")
        if max(self.input_shape) > MAX_INT:
            raise SpecError(f"input shape {self.input_shape}: each size must be at most {MAX_INT:,}")
        if not self.layers:
            raise SpecError(f"spec {self.name!r} has no layers")
        if self.normalize not in ("standard", "unit"):
            raise SpecError(f"normalize must be 'standard' or 'unit', got {self.normalize!r}")
        for layer in self.layers:
            if not isinstance(layer, Layer):
                raise SpecError(f"spec {self.name!r}: {layer!r} is not a layer")
            _check_fields(layer)
        name_layers(self.layers)
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Softmax) and i != len(self.layers) - 1:
                raise SpecError(f"{layer.name}: softmax must be the last layer")
        self._check_wiring()
        self.shapes()  # raises on any shape error
        self.check_size()
        _check_train(self.train, self.name)

    def check_size(self) -> None:
        """Refuse, before anything is allocated, a network too large to build here."""
        n = self.num_params() + sum(math.prod(v) for v in self.buffer_shapes().values())
        if n > MAX_PARAMS:
            raise SpecError(f"spec {self.name!r} has {n:,} parameters, more than the {MAX_PARAMS:,} tegaki builds "
                            f"({n * 4 / 2**30:.1f} GiB as float32); use fewer units or filters")
        acts = self.activations_per_example()
        if acts > MAX_ACTIVATIONS:
            raise SpecError(f"spec {self.name!r}: its layers output {acts:,} numbers per example, more than the "
                            f"{MAX_ACTIVATIONS:,} tegaki allows; use a smaller input, fewer filters or more pooling")

    def takes_images(self, size: tuple[int, ...]) -> bool:
        """Whether images of `size` (height, width) fit the input: the same height and width, or as many pixels
        as a flat input has features."""
        size = tuple(size)
        return size == tuple(self.input_shape[-2:]) or (len(self.input_shape) == 1 and
                                                          math.prod(size) == self.input_shape[0])

    def activations_per_example(self) -> int:
        """The numbers the input and every layer's output hold for one example, added up."""
        return sum(math.prod(s) for s in self.shapes()) + math.prod(self.input_shape)

    def inference_batch_cap(self) -> int:
        """The most examples one inference batch may hold, so that its activations fit INFERENCE_BYTES (a
        network with huge feature maps runs in smaller batches rather than asking for many gigabytes)."""
        return max(1, INFERENCE_BYTES // (4 * self.activations_per_example()))

    # wiring ------------------------------------------------------------------------
    def sources(self) -> list[tuple[str, ...]]:
        """The names each layer takes its input(s) from, in order ("input": the network's input)."""
        index = {l.name: i for i, l in enumerate(self.layers)}
        out = []
        for i, layer in enumerate(self.layers):
            src = layer.inputs or (self.layers[i - 1].name if i else "input",)
            for n in src:
                j = -1 if n == "input" else index.get(n)
                if j is None:
                    raise SpecError(f"{layer.name} takes its input from {n!r}, which is not a layer of this spec; "
                                    f"name 'input' or a layer before {layer.name}")
                if j == i:
                    raise SpecError(f"{layer.name} takes its input from itself, a cycle; name an earlier layer")
                if j > i:
                    raise SpecError(f"{layer.name} takes its input from {n}, which comes after it (a cycle); layers "
                                    f"run in order, so a layer can only take an earlier layer's output: "
                                    f"move {n} before {layer.name}")
            out.append(tuple(src))
        return out

    def _check_wiring(self) -> None:
        """Every name resolves to an earlier layer; every output but the last is used; `inputs` equal to
        the default (the previous layer alone) are dropped, so the same network has one spec."""
        srcs = self.sources()
        for i, (layer, src) in enumerate(zip(self.layers, srcs)):
            if src == (self.layers[i - 1].name if i else "input",):
                layer.inputs = None
        used = {n for src in srcs for n in src}
        for i, layer in enumerate(self.layers[:-1]):
            if layer.name not in used:
                nxt = self.layers[i + 1]
                raise SpecError(f"{layer.name}'s output goes to no layer ({nxt.name}, the next, takes "
                                f"{' and '.join(srcs[i + 1])}); name {layer.name} in a later layer's inputs or remove it")

    @property
    def branched(self) -> bool:
        """Whether some layer takes another input than the previous layer's output."""
        return any(l.inputs is not None for l in self.layers)

    # shape inference ---------------------------------------------------------------
    def shape_map(self) -> dict[str, Shape]:
        """"input" and every layer's name -> its output shape (batch excluded)."""
        out = {"input": self.input_shape}
        for layer, src in zip(self.layers, self.sources()):
            out[layer.name] = tuple(int(i) for i in layer.join([out[n] for n in src], list(src)))
        return out

    def shapes(self) -> list[Shape]:
        """Output shape of every layer (batch excluded), in order."""
        m = self.shape_map()
        return [m[l.name] for l in self.layers]

    def in_shapes(self) -> list[Shape]:
        """The shape of each layer's (first) input."""
        m = self.shape_map()
        return [m[src[0]] for src in self.sources()]

    @property
    def output_shape(self) -> Shape:
        return self.shapes()[-1]

    @property
    def num_classes(self) -> int:
        s = self.output_shape
        if len(s) != 1:
            raise SpecError(f"the network's output must be a vector of class scores, got shape {s}; "
                            "end with flatten and dense")
        return s[0]

    def param_shapes(self) -> dict[str, Shape]:
        """Every learned tensor, "<layer>.<param>" -> shape."""
        return {f"{l.name}.{k}": v for l, s in zip(self.layers, self.in_shapes()) for k, v in l.params(s).items()}

    def buffer_shapes(self) -> dict[str, Shape]:
        return {f"{l.name}.{k}": v for l, s in zip(self.layers, self.in_shapes()) for k, v in l.buffers(s).items()}

    def layer_params(self) -> list[int]:
        """The number of parameters of each layer, in order."""
        return [sum(math.prod(p) for p in l.params(s).values()) for l, s in zip(self.layers, self.in_shapes())]

    def num_params(self) -> int:
        return sum(math.prod(s) for s in self.param_shapes().values())

    def forward_flops(self) -> int:
        """Floating-point operations of one image's forward pass: 2 per multiply-add of the conv and
        dense layers (the rest is small beside them)."""
        total = 0
        for layer, s_in, s_out in zip(self.layers, self.in_shapes(), self.shapes()):
            if layer.type == "conv2d":
                kh, kw = layer.kernel2
                total += 2 * s_in[0] * kh * kw * math.prod(s_out)
            elif layer.type == "dense":
                total += 2 * math.prod(s_in) * layer.units
        return total

    def layer(self, name: str) -> Layer:
        for l in self.layers:
            if l.name == name:
                return l
        raise TegakiError(f"no layer named {name!r}; layers: {', '.join(l.name for l in self.layers)}")

    # weights ---------------------------------------------------------------------
    def init_weights(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Initial weights (float32), the same for every engine given the seed."""
        rng = np.random.default_rng(seed)
        w: dict[str, np.ndarray] = {}
        for layer, s in zip(self.layers, self.in_shapes()):
            ps = layer.params(s)
            if isinstance(layer, BatchNorm):
                w[f"{layer.name}.weight"] = np.ones(ps["weight"], np.float32)
                w[f"{layer.name}.bias"] = np.zeros(ps["bias"], np.float32)
                w[f"{layer.name}.running_mean"] = np.zeros(ps["weight"], np.float32)
                w[f"{layer.name}.running_var"] = np.ones(ps["weight"], np.float32)
                continue
            if "weight" not in ps:
                continue
            shape = ps["weight"]
            fan_in = int(np.prod(shape[1:]))
            fan_out = shape[0] * int(np.prod(shape[2:]))
            kind, scale = layer.init, layer.init_scale
            if kind == "default":  # PyTorch's: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias
                b = 1.0 / math.sqrt(fan_in)
                wt, bias = rng.uniform(-b, b, shape), rng.uniform(-b, b, shape[:1])
            elif kind == "xavier":  # Glorot & Bengio (2010): U(-sqrt(6/(in+out)), +)
                b = scale * math.sqrt(6.0 / (fan_in + fan_out))
                wt, bias = rng.uniform(-b, b, shape), np.zeros(shape[:1])
            elif kind == "he":  # He et al. (2015): N(0, 2/fan_in)
                wt, bias = rng.normal(0.0, scale * math.sqrt(2.0 / fan_in), shape), np.zeros(shape[:1])
            elif kind == "uniform":  # U(-scale, scale) for weights and biases
                wt, bias = rng.uniform(-scale, scale, shape), rng.uniform(-scale, scale, shape[:1])
            elif kind == "normal":
                wt, bias = rng.normal(0.0, scale, shape), np.zeros(shape[:1])
            else:  # zeros
                wt, bias = np.zeros(shape), np.zeros(shape[:1])
            w[f"{layer.name}.weight"] = wt.astype(np.float32)
            if "bias" in ps:
                w[f"{layer.name}.bias"] = bias.astype(np.float32)
        return w

    def check_weights(self, weights: dict[str, np.ndarray], where: str = "weights") -> None:
        want = {**self.param_shapes(), **self.buffer_shapes()}
        missing = sorted(set(want) - set(weights))
        extra = sorted(set(weights) - set(want))
        if missing or extra:
            raise TegakiError(f"{where} do not fit the spec: missing {missing[:4]}, unexpected {extra[:4]}; they are "
                              "another network's weights: keep each model.safetensors with its own model.json")
        for k, s in want.items():
            if tuple(weights[k].shape) != tuple(s):
                raise TegakiError(f"{where}: {k} has shape {tuple(weights[k].shape)}, the spec needs {tuple(s)}")

    # text ------------------------------------------------------------------------
    def summary(self) -> str:
        """Keras' table: each layer's output shape and parameter count, and for a network with
        branches a "Connected to" column naming each layer's inputs."""
        wired = self.branched
        rows = [("Layer (type)", "Output shape", "Param #", "Connected to")]
        rows.append(("input", str((None, *self.input_shape)), "0", ""))
        for layer, s, n, src in zip(self.layers, self.shapes(), self.layer_params(), self.sources()):
            rows.append((f"{layer.name} ({layer.type})", str((None, *s)), f"{n:,}", ", ".join(src)))
        if not wired:
            rows = [r[:3] for r in rows]
        w = [max(len(r[i]) for r in rows) + 2 for i in range(len(rows[0]))]
        line = "=" * sum(w)
        out = [f'Model: "{self.name}"', line]

        def fmt(r):
            text = f"{r[0]:<{w[0]}}{r[1]:<{w[1]}}{r[2]:>{w[2]}}"
            return text + f"  {r[3]}".rstrip() if wired else text

        out.append(fmt(rows[0]))
        out.append(line)
        out.extend(fmt(r) for r in rows[1:])
        out.append(line)
        total = self.num_params()
        buffers = sum(math.prod(s) for s in self.buffer_shapes().values())
        out.append(f"Total params: {total:,} ({total * 4 / 1024:.1f} KB as float32)")
        if buffers:
            out.append(f"Non-trainable state (batchnorm statistics): {buffers:,}")
        return "\n".join(out)

    # serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "input": list(self.input_shape),
                "normalize": self.normalize, "train": dict(self.train),
                "layers": [l.to_dict() for l in self.layers]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict, where: str = "spec") -> "Spec":
        try:
            return cls._from_dict(d, where)
        except RecursionError:  # a value nested thousands deep, from Python rather than a file
            raise SpecError(f"{where}: a value is nested too deeply to be part of a spec") from None

    @classmethod
    def _from_dict(cls, d: dict, where: str) -> "Spec":
        if not isinstance(d, dict):
            raise SpecError(f"{where}: a spec is a table/object with 'input' and 'layers'")
        d = with_base(d, where)
        known = {"name", "description", "input", "normalize", "train", "layers", "base"}
        extra = set(d) - known
        if extra:
            raise SpecError(f"{where}: unknown key(s) {', '.join(sorted(extra))}; known: {', '.join(sorted(known))}")
        layers = d.get("layers")
        if not isinstance(layers, list) or not layers:
            raise SpecError(f"{where}: 'layers' must be a non-empty list of layers")
        train = d.get("train", {})
        if not isinstance(train, dict):
            raise SpecError(f"{where}: 'train' must be a table of training options")
        shape = d.get("input", [1, 28, 28])
        if not (isinstance(shape, (list, tuple)) and len(shape) in (1, 3) and all(
                isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in shape)):
            raise SpecError(f"{where}: 'input' must be [channels, height, width] or [features] of positive "
                            f"integers, got {shape!r}")
        for key in ("name", "description", "normalize"):
            if key in d and not isinstance(d[key], str):
                raise SpecError(f"{where}: '{key}' must be a string, got {d[key]!r}")
            # printed by summary and train, and part of a run folder's name: no terminal control codes
            if key in d and not all(c.isprintable() or (key == "description" and c in "\n\t") for c in d[key]):
                raise SpecError(f"{where}: '{key}' holds control characters ({_short(d[key])}); use plain text")
        if len(d.get("name", "")) > 100:
            raise SpecError(f"{where}: 'name' is {len(d['name'])} characters long; keep it under 100")
        try:
            return cls(input_shape=tuple(shape),
                       layers=[layer_from_dict(l, f"{where}: layer {i + 1}") for i, l in enumerate(layers)],
                       name=str(d.get("name", "custom")), description=str(d.get("description", "")),
                       normalize=str(d.get("normalize", "standard")), train=train)
        except SpecError as e:  # name the file (or preset) the mistake is in
            msg = str(e)
            raise SpecError(msg if msg.startswith(where) else f"{where}: {msg}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> "Spec":
        path = Path(path)
        if not path.is_file():
            raise SpecError(f"{path}: no such spec file")
        text = read_text_file(path, "spec file")
        d = parse_text(text, "json" if path.suffix == ".json" else "toml", str(path))
        if not isinstance(d, dict):
            raise SpecError(f"{path}: a spec is an object with 'input' and 'layers', got a {type(d).__name__}")
        d.setdefault("name", path.stem)
        return cls.from_dict(d, where=str(path))


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("tegaki.presets").iterdir() if p.name.endswith(".toml"))


def _preset_dict(name: str, where: str = "") -> dict:
    """A preset's file as it is written (its `base` not yet filled in)."""
    if name not in preset_names():
        raise SpecError(f"{where}unknown preset {_short(name)}; choose one of {', '.join(preset_names())}")
    return tomllib.loads(resources.files("tegaki.presets").joinpath(f"{name}.toml").read_text(encoding="utf-8"))


def with_base(d: dict, where: str, chain: tuple[str, ...] = ()) -> dict:
    """The spec `d` with its `base` preset filled in (recursively): `train` options override the
    base's one by one, every other key given (`layers` as a whole list) replaces the base's, and the
    base's name is not inherited. Without a description of its own, a spec that changes something keeps
    the base's, prefixed with what it changed. A spec without `base` comes back unchanged."""
    if "base" not in d:
        return d
    base = d["base"]
    if not isinstance(base, str):
        raise SpecError(f"{where}: 'base' must be a preset name, got {_short(base)}")
    if base in chain:
        raise SpecError(f"{where}: presets based on each other in a circle: {' -> '.join((*chain, base))}")
    parent = _preset_dict(base, f"{where}: base: ")
    merged = {k: v for k, v in with_base(parent, where, (*chain, base)).items() if k != "name"}
    for key, value in d.items():
        if key == "train" and isinstance(value, dict) and isinstance(merged.get("train"), dict):
            merged["train"] = {**merged["train"], **value}
        elif key != "base":
            merged[key] = value
    changed = [*(d["train"] if isinstance(d.get("train"), dict) else ()), *(k for k in d if k not in
                                                                           ("base", "name", "train", "description"))]
    if changed and "description" not in d and isinstance(merged.get("description"), str):
        # the base's words would describe a network or recipe this spec is not: say what differs
        merged["description"] = f"{base} with {', '.join(changed)} changed: {merged['description']}"
    return merged


def load_preset(name: str) -> Spec:
    """A named network with its training recipe (src/tegaki/presets/NAME.toml): see preset_names()."""
    d = _preset_dict(name)
    d.setdefault("name", name)
    return Spec.from_dict(d, where=f"preset {name}")


def resolve_spec(ref: str) -> Spec:
    """A preset name, a spec file (.toml/.json) or a run folder."""
    p = Path(ref)
    if p.is_dir():
        if (p / "model.json").is_file():
            try:
                meta = parse_text(read_text_file(p / "model.json", "run description"), "json", str(p / "model.json"),
                                  "run description; retrain the run")
                d = meta["spec"]
            except (KeyError, TypeError) as e:
                raise TegakiError(f"{p / 'model.json'}: corrupt run description ({type(e).__name__}); "
                                  "retrain the run") from None
            return Spec.from_dict(d, where=str(p / "model.json"))
        raise TegakiError(f"{p}: not a run folder (no model.json)")
    if p.suffix in (".toml", ".json") or p.is_file():
        return Spec.from_file(p)
    return load_preset(ref)
