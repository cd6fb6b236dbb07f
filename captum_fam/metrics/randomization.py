"""Model-parameter randomisation (Adebayo et al., 2018) with rank correlation and SSIM in torch."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["RandomizationResult", "randomization_check", "spearman", "ssim"]


@dataclass
class RandomizationResult:
    """Similarity of maps before and after cascading randomisation.

    Attributes:
        layers (list[str]): The randomised modules, in order (top first); row ``l`` of the
                    tensors is the model with ``layers[: l + 1]`` all re-initialised.
        spearman (Tensor): ``(L, N)`` Spearman rank correlation of each example's map with
                    its original map. A map that depends on the model falls towards 0; one
                    that stays near 1 does not depend on the weights it claims to explain.
        ssim (Tensor or None): ``(L, N)`` SSIM of min-max normalised maps, when requested.
    """

    layers: list[str]
    spearman: Tensor
    ssim: Tensor | None


def spearman(a: Tensor, b: Tensor) -> Tensor:
    r"""Spearman rank correlation of each row pair of ``a`` and ``b`` (ties get average ranks).

    Args:
        a (Tensor): ``(N, ...)`` values, flattened per example.
        b (Tensor): Same shape as ``a``.

    Returns:
        *Tensor* ``(N,)`` in ``[-1, 1]``. A constant row has no ranking, so its correlation is
        defined as 0.

    Examples::

        >>> spearman(torch.tensor([[1., 2., 3.]]), torch.tensor([[1., 5., 9.]]))
        tensor([1.])
    """
    if not isinstance(a, Tensor) or not isinstance(b, Tensor) or a.shape != b.shape:
        raise ValueError("spearman needs two tensors of the same shape (N, ...)")
    if a.dim() < 2:
        raise ValueError(f"spearman needs a batch (N, ...) of at least 2 dims; got {a.dim()}")
    ra, rb = _ranks(a.flatten(1).double()), _ranks(b.flatten(1).double())
    ra, rb = ra - ra.mean(dim=1, keepdim=True), rb - rb.mean(dim=1, keepdim=True)
    denom = (ra.norm(dim=1) * rb.norm(dim=1)).float()
    rho = (ra * rb).sum(dim=1).float() / denom.clamp_min(1e-12)
    return torch.where(denom > 0, rho.clamp(-1, 1), 0.0)


def _ranks(x: Tensor) -> Tensor:
    """Average ranks (1-based) along dim 1, ties sharing the mean of their positions."""
    n = x.shape[1]
    values, order = x.sort(dim=1, stable=True)
    position = torch.arange(n, device=x.device).expand_as(values)
    starts_group = torch.ones_like(values, dtype=torch.bool)
    starts_group[:, 1:] = values[:, 1:] != values[:, :-1]
    ends_group = torch.ones_like(starts_group)
    ends_group[:, :-1] = starts_group[:, 1:]
    first = torch.where(starts_group, position, 0).cummax(dim=1).values
    last = torch.where(ends_group, position, n - 1).flip(1).cummin(dim=1).values.flip(1)
    average = (first + last).double() / 2 + 1
    return torch.empty_like(average).scatter_(1, order, average)


def ssim(a: Tensor, b: Tensor, window: int = 7, sigma: float = 1.5) -> Tensor:
    r"""Structural similarity of map pairs, each min-max normalised to ``[0, 1]`` first.

    Gaussian window (Wang et al., 2004, constants for a data range of 1), reflect padding;
    the window is cut to the maps' size for small layer maps.

    Args:
        a (Tensor): ``(N, 1, h, w)`` or ``(N, h, w)`` maps.
        b (Tensor): Same shape as ``a``.
        window (int, optional): Window side (odd). Default: 7
        sigma (float, optional): Window standard deviation. Default: 1.5

    Returns:
        *Tensor* ``(N,)`` of mean SSIM values (1 for identical structure).

    Examples::

        >>> ssim(maps, maps)
        tensor([1., 1.])
    """
    if not isinstance(a, Tensor) or not isinstance(b, Tensor) or a.shape != b.shape:
        raise ValueError("ssim needs two tensors of the same shape")
    x, y = _unit(_as_maps(a)), _unit(_as_maps(b))
    radius = max(0, min(window // 2, min(x.shape[-2:]) - 1))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (g[:, None] * g[None, :]) / g.sum() ** 2

    def smooth(t: Tensor) -> Tensor:
        t = F.pad(t, (radius,) * 4, mode="reflect") if radius else t
        return F.conv2d(t, kernel.view(1, 1, *kernel.shape))

    c1, c2 = 0.01**2, 0.03**2
    mx, my = smooth(x), smooth(y)
    vx, vy = smooth(x * x) - mx**2, smooth(y * y) - my**2
    cov = smooth(x * y) - mx * my
    value = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return value.flatten(1).mean(dim=1)


def _as_maps(t: Tensor) -> Tensor:
    if t.dim() == 3:
        t = t.unsqueeze(1)
    if t.dim() != 4:
        raise ValueError(f"maps must be (N, 1, h, w) or (N, h, w); got {tuple(t.shape)}")
    return t.sum(dim=1, keepdim=True).float()


def _unit(t: Tensor) -> Tensor:
    low = t.flatten(1).amin(dim=1).view(-1, 1, 1, 1)
    high = t.flatten(1).amax(dim=1).view(-1, 1, 1, 1)
    return (t - low) / (high - low).clamp_min(1e-12)


def randomization_check(
    explain_fn: Callable[[nn.Module], Tensor],
    model: nn.Module,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    compute_ssim: bool = False,
) -> RandomizationResult:
    r"""Cascading model-parameter randomisation (Adebayo et al., "Sanity checks", 2018).

    The explanation is recomputed with a deep copy of the model whose modules are
    re-initialised one after the other from the top (output side) down, cumulatively, and
    each result is compared with the original maps. ``explain_fn`` receives the model to use
    and must compute everything from it, the references included: for a similarity model the
    reference embeddings change with the weights, so they are re-embedded, e.g.
    ``lambda m: FeatureActivationMap(m, m.block4).attribute(x, reference=refs)``.

    Re-initialisation: every sub-module of a randomised module that has
    ``reset_parameters`` gets it (PyTorch's default initialisation; batch norms also reset
    their running statistics), under ``torch.manual_seed(seed + step)``; any other parameter
    is redrawn from a normal distribution with its own standard deviation. The given model
    is never modified.

    Args:
        explain_fn (Callable): ``explain_fn(model) -> (N, ...)`` maps, deterministic for a
                    given model (seed any noise inside it).
        model (torch.nn.Module): The model explained.
        layers (Sequence[str], optional): Names (as in ``model.named_modules()``) of the
                    modules to randomise, top first. Default: every module that owns
                    parameters directly, in reverse registration order.
        seed (int, optional): Seed of the re-initialisation. Default: 0
        compute_ssim (bool, optional): Also compute :func:`ssim`. Default: False

    Returns:
        :class:`RandomizationResult` with ``layers``, ``spearman (L, N)`` and ``ssim``.

    Examples::

        >>> result = randomization_check(
        ...     lambda m: FeatureActivationMap(m, m.block4).attribute(x, reference=refs),
        ...     model, layers=["block4", "block3", "block2", "block1"])
        >>> result.spearman.mean(dim=1)      # one value per cascade step
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if not callable(explain_fn):
        raise TypeError(f"explain_fn must be callable; got {type(explain_fn).__name__}")
    modules = dict(model.named_modules())
    if layers is None:
        layers = [n for n, m in modules.items() if any(True for _ in m.parameters(False))][::-1]
    else:
        layers = list(layers)
        unknown = [name for name in layers if name not in modules]
        if unknown:
            raise ValueError(f"layers {unknown} are not modules of the model; expected names "
                             "from model.named_modules()")  # fmt: skip
    if not layers:
        raise ValueError("layers is empty: the model has no parameters to randomise")

    original = _maps_of(explain_fn, model)
    randomised = copy.deepcopy(model)
    copies = dict(randomised.named_modules())
    rhos, ssims = [], []
    for step, name in enumerate(layers):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + step)
            _reinitialise(copies[name])
        maps = _maps_of(explain_fn, randomised)
        if maps.shape != original.shape:
            raise ValueError(f"explain_fn returned maps of shape {tuple(maps.shape)} for the "
                             f"randomised model; expected {tuple(original.shape)}")  # fmt: skip
        rhos.append(spearman(original, maps))
        if compute_ssim:
            ssims.append(ssim(original, maps))
    return RandomizationResult(
        layers=list(layers),
        spearman=torch.stack(rhos),
        ssim=torch.stack(ssims) if compute_ssim else None,
    )


def _maps_of(explain_fn: Callable[[nn.Module], Tensor], model: nn.Module) -> Tensor:
    maps = explain_fn(model)
    if not isinstance(maps, Tensor) or maps.dim() < 2:
        raise TypeError("explain_fn must return a Tensor of maps (N, ...)")
    if not bool(torch.isfinite(maps).all()):
        raise ValueError("explain_fn returned NaN or Inf values")
    return maps.detach().cpu().float()


@torch.no_grad()
def _reinitialise(module: nn.Module) -> None:
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()
            continue
        for parameter in sub.parameters(recurse=False):
            std = float(parameter.std()) if parameter.numel() > 1 else 0.0
            parameter.normal_(0.0, std if math.isfinite(std) and std > 0 else 0.02)
