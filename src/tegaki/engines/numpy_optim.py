"""The NumPy engine's optimisers, each a few lines that follow torch.optim step by step.

An optimiser holds the parameter arrays (updated in place) and whatever state it keeps per
parameter; `step(grads)` applies one update. The arithmetic copies PyTorch's in the same order,
so both engines take the same step from the same weights and gradients:

    sgd        p -= lr * (g + wd p)
    momentum   Nesterov:  b = mu b + g;  p -= lr * (g + mu b)          (torch SGD nesterov=True)
    adam       m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
               p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    adamw      p *= 1 - lr wd, then adam without the wd term in g
    adadelta   s = rho s + (1-rho) g^2;  d = sqrt(a + eps) / sqrt(s + eps) * g;
               a = rho a + (1-rho) d^2;  p -= lr d
(g already includes wd p where the optimiser couples weight decay with the gradient.)
"""

from __future__ import annotations

import numpy as np

from tegaki.errors import TegakiError

OTHER_STATE = ("this checkpoint's optimiser state was written by another engine or optimiser; "
               "resume it with the engine it was trained with")


class Optimizer:
    state_keys: tuple[str, ...] = ()  # per-parameter arrays, named as torch.optim names them

    def __init__(self, params: list[np.ndarray], lr: float, weight_decay: float = 0.0):
        self.params = params
        self.lr = lr
        self.weight_decay = weight_decay
        self.t = 0  # steps taken
        self.state = [{k: np.zeros_like(p) for k in self.state_keys} for p in params]

    def _grad(self, p, g):
        return g + self.weight_decay * p if self.weight_decay else g  # L2 penalty wd/2 |p|^2

    def step(self, grads: list[np.ndarray]) -> None:
        self.t += 1
        for p, g, st in zip(self.params, grads, self.state):
            self.update(p, g, st)

    def update(self, p, g, st) -> None:
        raise NotImplementedError

    def hyper(self) -> dict:
        return {"lr": self.lr, "weight_decay": self.weight_decay}

    def state_dict(self) -> tuple[dict[str, np.ndarray], dict]:
        """The state as arrays "opt.<param index>.<name>" (for safetensors) and plain numbers (for
        JSON), laid out like torch.optim's state_dict."""
        arrays = {f"opt.{i}.{k}": v.copy() for i, st in enumerate(self.state) for k, v in st.items()}
        meta = {"optimizer": type(self).__name__, "step": self.t,
                "param_groups": [{**self.hyper(), "params": list(range(len(self.params)))}],
                "state": {str(i): {"step": float(self.t)} for i in range(len(self.params))}}
        return arrays, meta

    def load_state_dict(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Continue from a state_dict(): the same arrays (copied in place), step count and learning rate."""
        if meta.get("optimizer") != type(self).__name__:
            raise TegakiError(OTHER_STATE)
        for i, st in enumerate(self.state):
            for k, v in st.items():
                v[...] = arrays[f"opt.{i}.{k}"]
        self.t = int(meta["step"])
        self.lr = float(meta["param_groups"][0]["lr"])


class SGD(Optimizer):
    def update(self, p, g, st):
        p -= self.lr * self._grad(p, g)


class Nesterov(Optimizer):
    state_keys = ("momentum_buffer",)

    def __init__(self, params, lr, momentum=0.9, weight_decay=0.0):
        super().__init__(params, lr, weight_decay)
        self.momentum = momentum

    def update(self, p, g, st):
        g = self._grad(p, g)
        b = st["momentum_buffer"]
        if self.t == 1:
            b[...] = g  # torch starts the buffer at the first gradient
        else:
            b *= self.momentum
            b += g
        p -= self.lr * (g + self.momentum * b)  # look ahead along the velocity

    def hyper(self):
        return {**super().hyper(), "momentum": self.momentum, "nesterov": True}


class Adam(Optimizer):
    state_keys = ("exp_avg", "exp_avg_sq")
    decoupled = False

    def __init__(self, params, lr, weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, lr, weight_decay)
        self.betas, self.eps = betas, eps

    def update(self, p, g, st):
        b1, b2 = self.betas
        if self.decoupled:
            p *= 1 - self.lr * self.weight_decay  # AdamW: shrink the weights, apart from the gradient
        else:
            g = self._grad(p, g)
        m, v = st["exp_avg"], st["exp_avg_sq"]
        m += (1 - b1) * (g - m)  # m = b1 m + (1 - b1) g
        v *= b2
        v += (1 - b2) * g * g
        step_size = self.lr / (1 - b1 ** self.t)  # bias corrections: m and v start at zero
        denom = np.sqrt(v) / np.sqrt(1 - b2 ** self.t) + self.eps
        p -= step_size * (m / denom)

    def hyper(self):
        return {**super().hyper(), "betas": list(self.betas), "eps": self.eps}


class AdamW(Adam):
    decoupled = True


class Adadelta(Optimizer):
    state_keys = ("square_avg", "acc_delta")

    def __init__(self, params, lr=1.0, weight_decay=0.0, rho=0.9, eps=1e-6):
        super().__init__(params, lr, weight_decay)
        self.rho, self.eps = rho, eps

    def update(self, p, g, st):
        g = self._grad(p, g)
        s, a = st["square_avg"], st["acc_delta"]
        s *= self.rho
        s += (1 - self.rho) * g * g
        d = np.sqrt(a + self.eps) / np.sqrt(s + self.eps) * g  # the step, in the units of p
        a *= self.rho
        a += (1 - self.rho) * d * d
        p -= self.lr * d

    def hyper(self):
        return {**super().hyper(), "rho": self.rho, "eps": self.eps}


def make_optimizer(name: str, params: list[np.ndarray], lr: float, momentum: float = 0.9,
                   weight_decay: float = 0.0) -> Optimizer:
    """The same choices, and the same defaults, as the torch engine's `configure`."""
    if name == "sgd":
        return SGD(params, lr, weight_decay)
    if name == "momentum":
        return Nesterov(params, lr, momentum, weight_decay)
    if name == "adam":
        return Adam(params, lr, weight_decay)
    if name == "adamw":
        return AdamW(params, lr, weight_decay or 0.01)
    if name == "adadelta":
        return Adadelta(params, lr, weight_decay)
    raise TegakiError(f"unknown optimizer {name!r}; choose sgd, momentum, adam, adamw or adadelta")
