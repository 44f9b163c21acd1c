"""The PyTorch engine: builds a torch module from a Spec and trains or runs it.

Every engine offers the same small interface (see engines/__init__.py), so the training loop,
evaluation, inspection and serving never care which engine runs the numbers. Weights come in
and go out as NumPy arrays named "<layer>.<param>", so a run trained here loads in the NumPy
engine and back.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tegaki import spec as S
from tegaki.engines.inputs import normalise
from tegaki.errors import TegakiError


class Maxout(nn.Module):
    def __init__(self, pieces: int):
        super().__init__()
        self.pieces = pieces

    def forward(self, x):  # (N, C, ...) -> (N, C / k, ...): max over k consecutive channels
        n, c = x.shape[:2]
        return x.reshape(n, c // self.pieces, self.pieces, *x.shape[2:]).amax(dim=2)


class PaddedConv(nn.Module):
    """A conv with the spec's (top, bottom, left, right) padding, asymmetric when 'same' needs it."""

    def __init__(self, layer: S.Conv2d, in_shape):
        super().__init__()
        c, h, w = in_shape
        t, b, l, r = layer.pads(h, w)
        sym = t == b and l == r
        self.pad = None if sym else (l, r, t, b)
        self.conv = nn.Conv2d(c, layer.filters, layer.kernel2, layer.stride2,
                              padding=(t, l) if sym else 0, bias=layer.bias)

    def forward(self, x):
        if self.pad is not None:
            x = F.pad(x, self.pad)
        return self.conv(x)


class Add(nn.Module):
    def forward(self, *xs):  # equal shapes -> their sum
        y = xs[0]
        for x in xs[1:]:
            y = y + x
        return y


class Concat(nn.Module):
    def forward(self, *xs):  # (N, C_i, ...) -> (N, sum of C_i, ...)
        return torch.cat(xs, dim=1)


class GlobalAvgPool(nn.Module):
    def forward(self, x):  # (N, C, H, W) -> (N, C)
        return x.mean(dim=(2, 3))


def _batchnorm(layer: S.BatchNorm, in_shape) -> nn.Module:
    bn = nn.BatchNorm2d if len(in_shape) == 3 else nn.BatchNorm1d
    return bn(in_shape[0], eps=layer.eps, momentum=layer.momentum)


# one entry per layer kind: spec record type -> (record, input shape) -> torch module
MODULES: dict[type, Callable[..., nn.Module]] = {
    S.Conv2d: PaddedConv,
    S.MaxPool: lambda layer, s: nn.MaxPool2d(*layer.window()),  # (kernel, stride)
    S.AvgPool: lambda layer, s: nn.AvgPool2d(*layer.window()),
    S.Dense: lambda layer, s: nn.Linear(s[0], layer.units, bias=layer.bias),
    S.Flatten: lambda layer, s: nn.Flatten(),
    S.Dropout: lambda layer, s: nn.Dropout(layer.rate),
    S.BatchNorm: _batchnorm,
    S.Sigmoid: lambda layer, s: nn.Sigmoid(),
    S.Tanh: lambda layer, s: nn.Tanh(),
    S.ReLU: lambda layer, s: nn.ReLU(),
    S.LeakyReLU: lambda layer, s: nn.LeakyReLU(layer.slope),
    S.ELU: lambda layer, s: nn.ELU(layer.alpha),
    S.Maxout: lambda layer, s: Maxout(layer.pieces),
    S.Add: lambda layer, s: Add(),
    S.Concat: lambda layer, s: Concat(),
    S.GlobalAvgPool: lambda layer, s: GlobalAvgPool(),
    S.Softmax: lambda layer, s: nn.Identity(),  # the network returns logits; the loss and predictions apply softmax
}


def build_module(layer: S.Layer, in_shape) -> nn.Module:
    make = MODULES.get(type(layer))
    if make is None:
        raise TegakiError(f"the torch engine has no implementation of layer type {layer.type!r}")
    return make(layer, in_shape)


KEY = "layer_"  # a layer's key in TorchNet.layers: KEY + its spec name


class TorchNet(nn.Module):
    """The spec's layers in order; forward returns logits (the input of the final softmax).

    A layer takes the previous layer's output, or in a network with branches the outputs of the
    layers it names (spec.sources()); autograd adds up the gradients of an output used twice."""

    def __init__(self, spec: S.Spec):
        super().__init__()
        self.spec = spec
        self.names = [l.name for l in spec.layers]
        # keyed "layer_NAME": a spec name may be any identifier, and one such as "update", "train" or "to" is
        # already an attribute of ModuleDict, which refuses it as a key
        self.layers = nn.ModuleDict({KEY + l.name: build_module(l, s) for l, s in zip(spec.layers, spec.in_shapes())})
        self.wiring = None if not spec.branched else [(l.name, src) for l, src in zip(spec.layers, spec.sources())]

    def forward(self, x):
        if self.wiring is None:
            for m in self.layers.values():
                x = m(x)
            return x
        return self.forward_all(x)[self.wiring[-1][0]]

    def forward_all(self, x, upto: str | None = None) -> dict[str, torch.Tensor]:
        """Every layer's output by name (with `upto`, the layers up to that one: none after it is run)."""
        out, prev = {"input": x}, "input"
        for i, (name, m) in enumerate(zip(self.names, self.layers.values())):
            src = self.wiring[i][1] if self.wiring else (prev,)
            out[name] = m(*(out[n] for n in src))
            prev = name
            if name == upto:
                break
        del out["input"]
        return out


def _key(torch_key: str) -> str | None:
    # "layers.layer_conv1.conv.weight" -> "conv1.weight"; batchnorm's counter is not kept
    parts = torch_key.split(".")
    if parts[-1] == "num_batches_tracked":
        return None
    return f"{parts[1][len(KEY):]}.{parts[-1]}"


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise TegakiError("--device cuda: no CUDA GPU is available to PyTorch here; use --device cpu or auto")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise TegakiError("--device mps: Apple's Metal backend is not available here; use --device cpu or auto")
    if device not in ("cpu", "cuda", "mps"):
        raise TegakiError(f"unknown device {device!r}; choose auto, cpu, cuda or mps")
    return torch.device(device)


def bf16_native(device: torch.device) -> bool:
    """Whether this device computes in bfloat16 natively (AVX512-BF16/AMX CPUs, Ampere+ GPUs)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


PRECISIONS = ("fp32", "bf16", "auto")


class TorchEngine:
    name = "torch"
    trainable = True
    has_gradients = True
    has_activations = True

    def __init__(self, spec: S.Spec, weights: dict[str, np.ndarray] | None = None, device: str = "cpu"):
        self.spec = spec
        self.batch_cap = spec.inference_batch_cap()  # inference batches shrink for networks with huge maps
        self.device = pick_device(device)
        # images are kept and computed channels-last (N, H, W, C in memory): oneDNN's fast conv layout
        conv = any(isinstance(l, S.Conv2d) for l in spec.layers)
        self.memory_format = torch.channels_last if conv else torch.contiguous_format
        self.net = TorchNet(spec).to(self.device, memory_format=self.memory_format)
        self.train_net = self.net  # what train_step runs: the net, or its DistributedDataParallel wrapper
        self.set_weights(weights if weights is not None else spec.init_weights(0))
        self.net.eval()
        self.opt = None
        self._stats = None
        self.amp_dtype = None  # training forward in this dtype under autocast (None: float32)
        self.precision = "fp32"
        self.step_fn = self._step

    def tune(self, precision: str = "fp32", compile: bool = False) -> str:
        """Speed options for training: "bf16" mixed precision (autocast; weights, optimiser and
        evaluation stay float32), "auto" = bf16 where the device does it natively; `compile`
        runs the training step through torch.compile. Returns the precision in use."""
        if precision not in PRECISIONS:
            raise TegakiError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        use_bf16 = precision == "bf16" or (precision == "auto" and bf16_native(self.device))
        self.amp_dtype = torch.bfloat16 if use_bf16 else None
        self.step_fn = torch.compile(self._step) if compile else self._step
        self.precision = "bf16" if use_bf16 else "fp32"
        return self.precision

    # weights -----------------------------------------------------------------------------
    def get_weights(self) -> dict[str, np.ndarray]:
        out = {}
        for k, v in self.net.state_dict().items():
            name = _key(k)
            if name is not None:
                out[name] = v.detach().cpu().numpy().copy()
        return out

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self.spec.check_weights(weights)
        sd = {}
        for k, v in self.net.state_dict().items():
            name = _key(k)
            sd[k] = v if name is None else torch.as_tensor(np.asarray(weights[name]), dtype=v.dtype)
        self.net.load_state_dict(sd)

    # data ----------------------------------------------------------------------------------
    def prepare(self, images: np.ndarray, labels: np.ndarray | None, norm: dict, targets: np.ndarray | None = None):
        """uint8 (N, H, W) images -> normalised float32 (N, C, H, W) tensors resident on the device; with
        `targets`, the teachers' (N, classes) probabilities, learnt beside the labels (distillation)."""
        x = torch.from_numpy(normalise(images, norm, self.spec.input_shape)).to(self.device)
        if x.dim() == 4:
            x = x.contiguous(memory_format=self.memory_format)
        y = None if labels is None else torch.from_numpy(np.asarray(labels, np.int64)).to(self.device)
        if targets is None:
            return x, y
        return x, y, torch.from_numpy(np.asarray(targets, np.float32)).to(self.device)

    def take(self, data, idx: np.ndarray):
        i = torch.from_numpy(idx).to(self.device)
        return tuple(t.index_select(0, i) for t in data)

    # inference -------------------------------------------------------------------------------
    def _eval(self) -> None:
        if self.net.training:  # eval() walks every module: about 70 us a call, most of a small batch
            self.net.eval()

    def _tensor(self, x) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return x.to(self.device)
        return torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)

    @torch.inference_mode()
    def logits(self, x, batch_size: int = 2000) -> np.ndarray:
        self._eval()
        batch_size = min(batch_size, self.batch_cap)
        out = [self.net(self._tensor(x[i:i + batch_size])).float().cpu().numpy() for i in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self.spec.num_classes), np.float32)

    @torch.inference_mode()
    def activations(self, x, only: str | None = None) -> dict[str, np.ndarray]:
        self._eval()
        out = self.net.forward_all(self._tensor(x), upto=only)
        if only is not None:
            out = {only: out[only]}
        return {k: v.float().cpu().contiguous().numpy() for k, v in out.items()}

    def input_gradient(self, x: np.ndarray, target: np.ndarray) -> np.ndarray:
        """d logit[target] / d input, per example (for saliency maps)."""
        self._eval()
        xt = self._tensor(x).clone().requires_grad_(True)
        out = self.net(xt)
        sel = out.gather(1, torch.as_tensor(np.asarray(target), device=self.device).view(-1, 1)).sum()
        (g,) = torch.autograd.grad(sel, xt)
        return g.cpu().contiguous().numpy()

    @torch.inference_mode()
    def evaluate(self, data, batch_size: int = 2000) -> tuple[float, float, np.ndarray]:
        """(mean cross-entropy, accuracy, logits) over prepared data."""
        self._eval()
        x, y = data[:2]
        batch_size = min(batch_size, self.batch_cap)
        logits = torch.cat([self.net(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
        loss = F.cross_entropy(logits, y).item()
        acc = (logits.argmax(1) == y).float().mean().item()
        return loss, acc, logits.float().cpu().numpy()

    # training ---------------------------------------------------------------------------------
    def configure(self, optimizer: str, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                  label_smoothing: float = 0.0, distill_weight: float = 0.0, distill_temperature: float = 1.0) -> None:
        params = list(self.net.parameters())
        if optimizer == "sgd":
            self.opt = torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
        elif optimizer == "momentum":
            self.opt = torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)
        elif optimizer == "adam":
            self.opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        elif optimizer == "adamw":
            self.opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay or 0.01)
        elif optimizer == "adadelta":
            self.opt = torch.optim.Adadelta(params, lr=lr, weight_decay=weight_decay)
        else:
            raise TegakiError(f"unknown optimizer {optimizer!r}; choose sgd, momentum, adam, adamw or adadelta")
        self.label_smoothing = label_smoothing
        self.distill = (distill_weight, distill_temperature)  # for batches that carry teachers' targets
        self.reset_stats()

    def set_lr(self, lr: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = lr

    def seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def reset_stats(self) -> None:
        self._stats = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss sum, correct, count

    def read_stats(self) -> tuple[float, float]:
        s = self._stats.tolist()
        return s[0] / max(s[2], 1), s[1] / max(s[2], 1)

    def _step(self, x, y, targets=None):
        amp = self.amp_dtype is not None
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=amp):
            logits = self.train_net(x)  # (B, classes)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        if targets is not None:  # distillation (numpy_layers.distill_loss writes the same loss out)
            w, t = self.distill
            soft = F.kl_div(F.log_softmax(logits.float() / t, dim=1), targets, reduction="batchmean")
            loss = (1 - w) * loss + w * t * t * soft
        loss.backward()
        return loss.detach(), (logits.detach().argmax(1) == y).sum()

    def train_step(self, x, y, targets=None) -> None:
        self.net.train()
        self.opt.zero_grad(set_to_none=True)
        loss, correct = self.step_fn(x, y, targets)
        self.opt.step()
        with torch.no_grad():  # accumulated on the device: no synchronisation per step
            n = y.shape[0]
            self._stats[0] += loss.double() * n
            self._stats[1] += correct
            self._stats[2] += n

    def optimizer_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """The optimiser's state as arrays (for safetensors) and plain numbers (for JSON)."""
        sd = self.opt.state_dict()
        arrays, meta = {}, {"param_groups": sd["param_groups"], "state": {}}
        for pid, st in sd["state"].items():
            meta["state"][str(pid)] = {}
            for k, v in st.items():
                if isinstance(v, torch.Tensor) and v.dim() > 0:
                    arrays[f"opt.{pid}.{k}"] = v.cpu().numpy()
                else:
                    meta["state"][str(pid)][k] = float(v)
        return arrays, meta

    def load_optimizer_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        state = {}
        for pid, st in meta["state"].items():
            d = {k: torch.tensor(v) for k, v in st.items()}
            for k in list(arrays):
                if k.startswith(f"opt.{pid}."):
                    d[k.split(".", 2)[2]] = torch.as_tensor(arrays[k]).to(self.device)
            state[int(pid)] = d
        self.opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
