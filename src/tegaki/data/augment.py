"""Data augmentation on whole batches: random affine warps, elastic distortions, stroke thickness.

    aug = Augmenter.parse("affine+elastic", background=-mean / std)
    aug.seed(seed, epoch)          # the same seed gives the same distortions
    x = aug(x)                     # (N, C, H, W) float -> same shape; the labels do not change

Everything is done with a handful of tensor operations on the whole batch (no per-image Python
loop): one `grid_sample` applies the affine warp and the elastic displacement together (a single
interpolation), and stroke thickness is a grey-level dilation or erosion (a 3x3 maximum) blended
in by a random per-image amount. Inputs may be torch tensors on any device, or NumPy arrays (the
NumPy engine's batches), which are converted to torch and back. torch is imported only by the
functions that use it, so parsing `--augment` (and validating a config) does not load it.

Kinds (join with "+"): affine | elastic | thickness. Their ranges at strength 1:
  affine     rotation +-12 degrees, zoom 1 +- 0.12 per axis, shear +-0.2, translation +-2.5 pixels
  elastic    Simard et al. (2003): a uniform(-1, 1) displacement field per pixel, smoothed by a
             Gaussian of sigma 4 pixels and scaled by alpha 30 pixels
  thickness  a blend factor t in [-0.5, 1]: t > 0 thickens the strokes toward a 3x3 dilation, t < 0
             thins them toward a 3x3 erosion
`strength` scales every range; at strength 0 every transform is the identity.

The images are normalised ((x/255 - mean) / std), so the blank background is not 0: `background`
is its value, and the warp fills the area it brings in from outside the image with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tegaki.errors import TegakiError

if TYPE_CHECKING:  # for the annotations only; the functions import torch when they run
    import torch

KINDS = ("affine", "elastic", "thickness")


def parse_kinds(text: str | None) -> tuple[str, ...]:
    """"affine+elastic" -> ("affine", "elastic"); "" / "none" / None -> ()."""
    if text is None or str(text).strip().lower() in ("", "none", "off"):
        return ()
    kinds = tuple(k.strip().lower() for k in str(text).split("+"))
    bad = [k for k in kinds if k not in KINDS]
    if bad or len(set(kinds)) != len(kinds):
        raise TegakiError(f"unknown augmentation {text!r}; use one or more of {', '.join(KINDS)} joined by '+' "
                          "(for example affine+elastic), or none")
    return kinds


@dataclass
class Ranges:
    rotate: float = 12.0  # degrees, uniform in +-
    zoom: float = 0.12  # per-axis scale factor in 1 +- zoom
    shear: float = 0.2  # shear factor in +-
    translate: float = 2.5  # pixels, uniform in +-
    elastic_alpha: float = 30.0  # pixels: the size of the smoothed displacement field
    elastic_sigma: float = 4.0  # pixels: the Gaussian that smooths it
    thicken: float = 1.0  # largest blend factor toward the 3x3 dilation
    thin: float = 0.5  # largest blend factor toward the 3x3 erosion (a full erosion erases thin strokes)


def gaussian_kernel(sigma: float, device=None) -> torch.Tensor:
    import torch

    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=torch.float32, device=device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()  # (2r+1,)


def blur_matrix(n: int, sigma: float, device=None) -> torch.Tensor:
    """(n, n) matrix G with G @ v = v convolved with a Gaussian (zero padding outside)."""
    import torch

    k = gaussian_kernel(sigma, device)
    r = (len(k) - 1) // 2
    i = torch.arange(n, device=device)
    off = i.view(1, -1) - i.view(-1, 1) + r  # (n, n): kernel tap linking output row to input column
    return torch.where((off >= 0) & (off <= 2 * r), k[off.clamp(0, 2 * r)], torch.zeros((), device=device))


def smooth(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (N, K, H, W) fields (zero padding), as two small matrix products."""
    h, w = field.shape[-2:]
    gy = blur_matrix(h, sigma, field.device)  # (H, H)
    gx = blur_matrix(w, sigma, field.device)  # (W, W)
    return gy @ field @ gx.T  # (N, K, H, W)


def affine_matrices(rot: torch.Tensor, zoom: torch.Tensor, shear: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) maps from output pixel offsets (from the centre) to input pixel offsets.

    rot (N,) radians; zoom (N, 2) per-axis factors (> 1 magnifies); shear (N,); shift (N, 2) pixels.
    """
    import torch

    c, s = torch.cos(rot), torch.sin(rot)
    one, zero = torch.ones_like(rot), torch.zeros_like(rot)
    r = torch.stack([torch.stack([c, -s], 1), torch.stack([s, c], 1)], 1)  # (N, 2, 2)
    sh = torch.stack([torch.stack([one, shear], 1), torch.stack([zero, one], 1)], 1)  # (N, 2, 2)
    inv_zoom = torch.diag_embed(1.0 / zoom)  # (N, 2, 2): sampling closer together magnifies
    a = r @ sh @ inv_zoom  # (N, 2, 2)
    return torch.cat([a, -shift.unsqueeze(2)], 2)  # (N, 2, 3): content moves by +shift


def warp(x: torch.Tensor, theta_px: torch.Tensor, displacement: torch.Tensor | None = None,
         background: float = 0.0) -> torch.Tensor:
    """Resample a batch through per-image affine maps (in pixels) plus a displacement field.

    x (N, C, H, W); theta_px (N, 2, 3) from `affine_matrices`; displacement (N, 2, H, W) in pixels
    (x then y offset of where each output pixel samples); bilinear; outside is `background`.
    """
    import torch
    import torch.nn.functional as F

    n, _, h, w = x.shape
    # pixel offsets -> grid_sample's normalised coordinates (-1..1 across the image, per axis)
    d = torch.tensor([2.0 / w, 2.0 / h], dtype=x.dtype, device=x.device)
    theta = theta_px.to(x.dtype) * d.view(1, 2, 1)  # rows scaled to normalised output units
    theta[:, :, :2] = theta[:, :, :2] / d.view(1, 1, 2)  # columns take normalised input units
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)  # (N, H, W, 2)
    if displacement is not None:
        grid = grid + displacement.to(x.dtype).permute(0, 2, 3, 1) * d  # (N, H, W, 2)
    out = F.grid_sample(x - background, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + background


def _max3(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Max over each element and its two neighbours along `dim` (edges: only the neighbours inside)."""
    import torch

    n = x.shape[dim]
    left = torch.cat([x.narrow(dim, 0, 1), x.narrow(dim, 0, n - 1)], dim)  # shifted by one, edge repeated
    right = torch.cat([x.narrow(dim, 1, n - 1), x.narrow(dim, n - 1, 1)], dim)
    return torch.maximum(x, torch.maximum(left, right))


def thicken(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per-image stroke thickness: t (N,) in [-1, 1]; > 0 blends toward a 3x3 dilation, < 0 erosion."""
    dil = _max3(_max3(x, 2), 3)  # (N, C, H, W): brightest of the 3x3 neighbourhood
    ero = -_max3(_max3(-x, 2), 3)  # darkest
    t = t.to(x.dtype).view(-1, 1, 1, 1)
    return x + t.clamp(min=0) * (dil - x) + (-t).clamp(min=0) * (ero - x)


class Augmenter:
    """Random distortions of whole batches, seeded; see the module docstring."""

    def __init__(self, kinds: tuple[str, ...], background: float = 0.0, strength: float = 1.0,
                 ranges: Ranges | None = None):
        if not (strength >= 0 and math.isfinite(strength)):
            raise TegakiError(f"augmentation strength must be a number >= 0, got {strength}")
        self.kinds = tuple(kinds)
        self.background = float(background)
        self.strength = float(strength)
        self.r = ranges or Ranges()
        self.gen: torch.Generator | None = None
        self._seed = 0

    @classmethod
    def parse(cls, text: str | None, background: float = 0.0, strength: float = 1.0) -> "Augmenter | None":
        kinds = parse_kinds(text)
        return cls(kinds, background, strength) if kinds else None

    def seed(self, *seed: int) -> None:
        self._seed = int(np.random.SeedSequence(list(seed)).generate_state(1, np.uint64)[0] >> 1)
        if self.gen is not None:
            self.gen.manual_seed(self._seed)

    def _rand(self, shape, device, lo=-1.0, hi=1.0) -> torch.Tensor:
        import torch

        if self.gen is None or self.gen.device != torch.device(device):
            self.gen = torch.Generator(device=device)
            self.gen.manual_seed(self._seed)
        return torch.rand(shape, generator=self.gen, device=device) * (hi - lo) + lo

    def params(self, n: int, h: int, w: int, device) -> dict:
        """The random draws for a batch of n images (all tensors on `device`)."""
        import torch

        s, r, p = self.strength, self.r, {}
        if "thickness" in self.kinds:
            t = self._rand((n,), device)  # (N,) uniform(-1, 1)
            p["thickness"] = torch.where(t > 0, t * r.thicken, t * r.thin) * s
        if "affine" in self.kinds:
            p["rot"] = self._rand((n,), device) * math.radians(s * r.rotate)
            p["zoom"] = 1.0 + self._rand((n, 2), device) * (s * r.zoom)
            p["shear"] = self._rand((n,), device) * (s * r.shear)
            p["shift"] = self._rand((n, 2), device) * (s * r.translate)
        if "elastic" in self.kinds:
            noise = self._rand((n, 2, h, w), device)  # (N, 2, H, W) uniform(-1, 1)
            p["displacement"] = smooth(noise, r.elastic_sigma) * (s * r.elastic_alpha)
        return p

    def apply(self, x: torch.Tensor, p: dict) -> torch.Tensor:
        import torch

        n = x.shape[0]
        if "thickness" in p:
            x = thicken(x, p["thickness"])
        if "rot" in p or "displacement" in p:
            z = torch.zeros(n, device=x.device)
            theta = affine_matrices(p.get("rot", z), p.get("zoom", torch.ones(n, 2, device=x.device)),
                                    p.get("shear", z), p.get("shift", torch.zeros(n, 2, device=x.device)))
            x = warp(x, theta, p.get("displacement"), self.background)
        return x

    def __call__(self, x):
        import torch

        if isinstance(x, np.ndarray):  # the NumPy engine's batches: through torch and back
            return self(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()
        if x.dim() != 4:
            raise TegakiError(f"augmentation needs image batches (N, C, H, W), got shape {tuple(x.shape)}; "
                              "it does not apply to vector inputs")
        n, _, h, w = x.shape
        with torch.no_grad():
            return self.apply(x, self.params(n, h, w, x.device)).contiguous(memory_format=_fmt(x))

    def describe(self) -> str:
        return f"{'+'.join(self.kinds)} (strength {self.strength:g})"


def _fmt(x: torch.Tensor):
    import torch

    return torch.channels_last if (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
                                   and not x.is_contiguous()) else torch.contiguous_format
