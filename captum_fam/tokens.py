"""Token layouts: reading transformer layers as channels-first ``(N, C, *S)`` activations.

A vision transformer's block outputs ``(N, T, C)`` tokens: maybe a few prefix tokens (class,
register or distillation tokens) followed by ``h * w`` patch tokens in row-major order. Swin-style
stages output channels-last grids ``(N, h, w, C)``. A text encoder's block outputs ``(N, T, C)``
token states, one per position of the sentence. :class:`TokenLayout` turns each into the
channels-first activations FAM combines: ``(N, C, h, w)`` for images, ``(N, C, T)`` for text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

__all__ = ["TOKEN_LAYOUTS", "TokenLayout", "resolve_token_layout"]

_MAX_PREFIX_TOKENS = 16


@dataclass(frozen=True)
class TokenLayout:
    r"""How a layer's tokens sit on the image grid.

    Every field left as None is inferred from the layer's output and the input image size, as
    ``token_layout="auto"`` does. ``token_layout="sequence"`` is ``TokenLayout(sequence=True)``.

    Args:
        prefix_tokens (int, optional): Tokens before the patch tokens (class, registers), dropped
                    from the map. Default: inferred (the smallest count that leaves a grid of
                    the image's aspect ratio).
        grid (tuple[int, int], optional): ``(h, w)`` of the patch grid. Default: inferred from
                    the token count and the input's aspect ratio, or from ``patch_size``.
        patch_size (int, optional): Pixels per patch side, to derive the grid from the input
                    size. Default: the model's ``patch_size`` attribute when it has one.
        channels_last (bool, optional): For 4-D outputs: ``(N, h, w, C)`` (Swin) rather than
                    ``(N, C, h, w)``. Default: inferred, channels-last when the middle two
                    dimensions, and not the last two, form a grid of the image's shape.
        sequence (bool, optional): Read ``(N, T, C)`` tokens as a sequence ``(N, C, T)``: every
                    token keeps its position, special tokens (``[CLS]``, ``[SEP]``, padding)
                    included; maps come back as ``(N, 1, T)``. The other fields do not apply.
                    Default: False

    Examples::

        >>> fam = FeatureActivationMap(vit, vit.encoder.layers[-2], token_layout="auto")
        >>> fam = FeatureActivationMap(
        ...     dino, dino.blocks[-1], token_layout=TokenLayout(prefix_tokens=5))   # 4 registers
        >>> fam = FeatureActivationMap(bert, bert.encoder.layer[-1], token_layout="sequence")
    """

    prefix_tokens: int | None = None
    grid: tuple[int, int] | None = None
    patch_size: int | None = None
    channels_last: bool | None = None
    sequence: bool = False

    def __post_init__(self) -> None:
        if self.sequence and (
            self.prefix_tokens is not None
            or self.grid is not None
            or self.patch_size is not None
            or self.channels_last is not None
        ):
            raise ValueError(
                "TokenLayout(sequence=True) keeps every token in its position: prefix_tokens, "
                "grid, patch_size and channels_last do not apply"
            )

    def to_grid(self, output: Tensor, image_size: tuple[int, int]) -> tuple[Tensor, int]:
        """Channels-first activations from a token or grid output, and the prefix tokens dropped.

        ``(N, C, h, w)`` for patch tokens and grids, ``(N, C, T)`` for a sequence.
        """
        if self.sequence:
            if output.dim() != 3:
                raise ValueError(
                    "token_layout 'sequence' reads (N, T, C) token states; the layer gave shape "
                    f"{tuple(output.shape)}"
                )
            return output.transpose(1, 2), 0
        if output.dim() == 3:
            prefix, (h, w) = self._token_grid(output.shape[1], image_size)
            patches = output[:, prefix:, :]
            return patches.transpose(1, 2).reshape(output.shape[0], -1, h, w), prefix
        if output.dim() == 4:
            channels_last = self.channels_last
            if channels_last is None:
                channels_last = _is_grid(output.shape[1:3], image_size) and not _is_grid(
                    output.shape[2:4], image_size
                )
            return (output.permute(0, 3, 1, 2) if channels_last else output), 0
        raise ValueError(
            f"a token layout reads (N, T, C) tokens or (N, h, w, C) grids; the layer gave "
            f"shape {tuple(output.shape)}"
        )

    def position_sum(self, output: Tensor, image_size: tuple[int, int]) -> Tensor:
        """``(N, C)``: the sum over every token or grid position, prefix tokens included.

        Pulling channel weights back through a head sums the head's gradient over positions;
        a class-token head puts its whole gradient on the prefix token, so it must count.
        """
        if output.dim() == 3:
            return output.sum(dim=1)
        return self.to_grid(output, image_size)[0].flatten(2).sum(dim=2)

    def _token_grid(self, tokens: int, image_size: tuple[int, int]) -> tuple[int, tuple[int, int]]:
        height, width = image_size
        if self.grid is not None:
            h, w = self.grid
            prefix = tokens - h * w if self.prefix_tokens is None else self.prefix_tokens
            if prefix < 0 or prefix + h * w != tokens:
                raise ValueError(
                    f"token_layout grid {self.grid} with {self.prefix_tokens} prefix tokens "
                    f"does not fit the layer's {tokens} tokens"
                )
            return prefix, (h, w)
        if self.patch_size is not None:
            h, w = height // self.patch_size, width // self.patch_size
            prefix = tokens - h * w
            if prefix < 0 or (self.prefix_tokens is not None and prefix != self.prefix_tokens):
                raise ValueError(
                    f"{tokens} tokens do not hold a {h}x{w} grid of {self.patch_size}-pixel "
                    f"patches for a {height}x{width} input; give token_layout=TokenLayout("
                    "grid=(h, w), prefix_tokens=...)"
                )
            return prefix, (h, w)
        prefixes = (
            [self.prefix_tokens]
            if self.prefix_tokens is not None
            else range(min(tokens, _MAX_PREFIX_TOKENS + 1))
        )
        for prefix in prefixes:
            grid = _grid_for(tokens - prefix, height, width)
            if grid is not None:
                return prefix, grid
        raise ValueError(
            f"cannot lay {tokens} tokens on a grid with the {height}x{width} input's aspect "
            "ratio; give token_layout=TokenLayout(grid=(h, w), prefix_tokens=...)"
        )


def _grid_for(count: int, height: int, width: int) -> tuple[int, int] | None:
    """The (h, w) with h * w == count and h / w == height / width, if any."""
    if count <= 0:
        return None
    h = round(math.sqrt(count * height / width))
    for candidate in (h - 1, h, h + 1):
        if candidate > 0 and count % candidate == 0:
            w = count // candidate
            # Patch embeddings floor the size: allow a stride that leaves a partial patch.
            if _is_grid((candidate, w), (height, width)):
                return candidate, w
    return None


def _is_grid(shape: tuple[int, ...] | object, image_size: tuple[int, int]) -> bool:
    """Whether (h, w) is the image's grid at one integer stride (floor division allowed)."""
    h, w = (int(s) for s in shape)  # type: ignore[union-attr]
    height, width = image_size
    if h <= 0 or w <= 0 or h > height or w > width:
        return False
    stride = height // h
    return stride >= 1 and height // stride == h and width // stride == w


TOKEN_LAYOUTS = ("auto", "sequence")
"""The named token layouts: a patch grid inferred from the image, and a token sequence."""


def resolve_token_layout(token_layout: str | TokenLayout | None) -> TokenLayout | None:
    """None (channels-first layers), ``"auto"``, ``"sequence"``, or a :class:`TokenLayout`."""
    if token_layout is None or isinstance(token_layout, TokenLayout):
        return token_layout
    if token_layout == "auto":
        return TokenLayout()
    if token_layout == "sequence":
        return TokenLayout(sequence=True)
    raise ValueError(
        f"token_layout must be None, 'auto', 'sequence' or a TokenLayout; got {token_layout!r}"
    )
