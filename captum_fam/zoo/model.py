"""The shipped embedding CNNs of the shapes world and their verified loaders.

Two models share one trunk (four convolutional blocks and global average pooling):
:class:`ShapesEmbeddingNet` compares the pooled last block itself, :class:`ShapesProjectionNet`
puts a projection head between the pooled block and the compared embedding, as most real
embedding models do (face networks, CLIP, retrieval networks).
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor, nn

from captum_fam.zoo.weights import check_weights_file

__all__ = [
    "HEAD_WEIGHTS_PATH",
    "HEAD_WEIGHTS_SHA256",
    "WEIGHTS_PATH",
    "WEIGHTS_SHA256",
    "ShapesEmbeddingNet",
    "ShapesProjectionNet",
    "load_shapes_head_model",
    "load_shapes_model",
]

WEIGHTS_PATH = Path(__file__).with_name("shapes_cnn.pt")
"""Location of the shipped weights (a ``state_dict`` saved with ``torch.save``)."""

WEIGHTS_SHA256 = "3a3788c4b4a6d941fecbe183d12e29e131998651695a8bdd81336927d12e1331"
"""SHA-256 of :data:`WEIGHTS_PATH`; :func:`load_shapes_model` refuses any other file."""

HEAD_WEIGHTS_PATH = Path(__file__).with_name("shapes_head_cnn.pt")
"""Location of the shipped weights of :class:`ShapesProjectionNet` (a ``state_dict``)."""

HEAD_WEIGHTS_SHA256 = "b98f5c2f4a6a2fcaf7958fc4d029fe00979d76280a3e6c16e4a3795e6dcebf78"
"""SHA-256 of :data:`HEAD_WEIGHTS_PATH`; :func:`load_shapes_head_model` refuses any other file."""

# Images in [0, 1] are standardised inside the model, so users feed make_shapes output directly.
_MEAN = 0.5
_STD = 0.25


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class ShapesEmbeddingNet(nn.Module):
    r"""A small embedding CNN: four convolutional blocks, then global average pooling.

    There is no classifier: the output is the ``(N, C)`` global average of the last block's
    non-negative activations, and classes are compared by cosine similarity of embeddings
    (prototypes, retrieval). The last block runs at stride 8, so a 64 px image gives an 8x8
    activation map, and its receptive field stays small enough to localise single shapes.

    Args:
        width (int, optional): Channels of the first block; the blocks use
                    ``width, 2*width, 4*width`` then ``embedding_dim``.
                    Default: 16
        embedding_dim (int, optional): Channels of the last block, i.e. the embedding width.
                    Default: 128

    Inputs are RGB images with values in ``[0, 1]``; standardisation happens inside.

    Examples::

        >>> import torch
        >>> from captum_fam.zoo import ShapesEmbeddingNet
        >>> net = ShapesEmbeddingNet().eval()
        >>> net(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 128])
        >>> net.block4(net.features_until_block3(torch.rand(2, 3, 64, 64))).shape
        torch.Size([2, 128, 8, 8])
    """

    def __init__(self, width: int = 16, embedding_dim: int = 128) -> None:
        super().__init__()
        self.block1 = nn.Sequential(*_conv(3, width), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(*_conv(width, 2 * width), nn.MaxPool2d(2))
        self.block3 = nn.Sequential(
            *_conv(2 * width, 4 * width), *_conv(4 * width, 4 * width), nn.MaxPool2d(2)
        )
        self.block4 = nn.Sequential(
            *_conv(4 * width, embedding_dim), *_conv(embedding_dim, embedding_dim)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.embedding_dim = embedding_dim

    def features_until_block3(self, x: Tensor) -> Tensor:
        """Standardises ``x`` and runs the first three blocks (the input of ``block4``)."""
        x = (x - _MEAN) / _STD
        return self.block3(self.block2(self.block1(x)))

    def activation_map(self, x: Tensor) -> Tensor:
        """Returns the last block's ``(N, C, H/8, W/8)`` non-negative activation map."""
        return self.block4(self.features_until_block3(x))

    def forward(self, x: Tensor) -> Tensor:
        """Returns the ``(N, C)`` embedding: the spatial mean of :meth:`activation_map`."""
        return self.pool(self.activation_map(x)).flatten(1)


class ShapesProjectionNet(ShapesEmbeddingNet):
    r"""The trunk of :class:`ShapesEmbeddingNet`, then a linear projection head.

    The compared embedding is the head's output, not the pooled last block: the pooled
    ``(N, 128)`` non-negative channels are projected to ``(N, 64)`` by a bias-free linear
    layer (as CLIP projects its pooled features), and embeddings are compared by cosine
    similarity. The head is linear, so FAM with ``embedding="output"`` maps the output
    similarity back to ``block4``'s channels exactly, while ``embedding="layer"`` compares the
    pooled channels, a space the model never compares in.

    Args:
        width (int, optional): Channels of the first block, as in :class:`ShapesEmbeddingNet`.
                    Default: 16
        layer_channels (int, optional): Channels of the last block (the pooled width).
                    Default: 128
        embedding_dim (int, optional): Width of the head's output, the compared embedding.
                    Default: 64

    Inputs are RGB images with values in ``[0, 1]``; standardisation happens inside.

    Examples::

        >>> import torch
        >>> from captum_fam.zoo import ShapesProjectionNet
        >>> net = ShapesProjectionNet().eval()
        >>> net(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 64])
        >>> net.pooled(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 128])
    """

    def __init__(self, width: int = 16, layer_channels: int = 128, embedding_dim: int = 64) -> None:
        super().__init__(width, layer_channels)
        self.head = nn.Linear(layer_channels, embedding_dim, bias=False)
        self.layer_channels = layer_channels
        self.embedding_dim = embedding_dim

    def pooled(self, x: Tensor) -> Tensor:
        """Returns the ``(N, C)`` spatial mean of :meth:`activation_map` (the head's input)."""
        return super().forward(x)

    def forward(self, x: Tensor) -> Tensor:
        """Returns the ``(N, D)`` embedding: the head applied to :meth:`pooled`."""
        return self.head(self.pooled(x))


_Net = TypeVar("_Net", bound=ShapesEmbeddingNet)


def _load_verified(
    model: _Net, file: Path, sha256: str | None, device: torch.device | str | None
) -> _Net:
    """Loads ``file`` into ``model`` after checking its SHA-256; returns it in eval mode."""
    check_weights_file(file, sha256, "shapes model")
    state = torch.load(file, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    model.eval()
    if device is not None:
        model.to(device)
    return model


def load_shapes_model(
    device: torch.device | str | None = None,
    *,
    path: str | Path | None = None,
    sha256: str | None = WEIGHTS_SHA256,
) -> tuple[ShapesEmbeddingNet, nn.Module]:
    r"""Loads the shipped shapes embedding CNN, offline, after checking its SHA-256.

    Args:
        device (torch.device or str, optional): Where to put the model. ``None`` keeps it on CPU.
                    Default: None
        path (str or Path, optional): Weights file to load instead of the shipped one.
                    Default: None (the file shipped in the package)
        sha256 (str, optional): Expected SHA-256 hex digest of the file; ``None`` skips the
                    check (only for weights you trained yourself).
                    Default: the digest of the shipped file

    Returns:
        tuple[ShapesEmbeddingNet, nn.Module]: ``(model, layer)``: the model in eval mode, whose
        forward maps ``(N, 3, H, W)`` images in ``[0, 1]`` to ``(N, 128)`` embeddings, and
        ``layer`` = ``model.block4``, its last convolutional block (``(N, 128, H/8, W/8)``
        non-negative output), the layer to explain with FAM.

    Raises:
        FileNotFoundError: If the weights file is missing.
        RuntimeError: If the file's SHA-256 differs from ``sha256``.

    Examples::

        >>> from captum_fam.zoo import load_shapes_model, make_shapes
        >>> model, layer = load_shapes_model()
        >>> model(make_shapes(4, seed=0).images).shape
        torch.Size([4, 128])
    """
    file = Path(path) if path is not None else WEIGHTS_PATH
    model = _load_verified(ShapesEmbeddingNet(), file, sha256, device)
    return model, model.block4


def load_shapes_head_model(
    device: torch.device | str | None = None,
    *,
    path: str | Path | None = None,
    sha256: str | None = HEAD_WEIGHTS_SHA256,
) -> tuple[ShapesProjectionNet, nn.Module]:
    r"""Loads the shipped shapes CNN with a projection head, offline, after checking its SHA-256.

    Its compared embedding is the head's output, not the pooled layer, so explain it with
    ``FeatureActivationMap(model, layer, embedding="output")`` and build references with that
    object's :meth:`~captum_fam.FeatureActivationMap.embed`.

    Args:
        device (torch.device or str, optional): Where to put the model. ``None`` keeps it on CPU.
                    Default: None
        path (str or Path, optional): Weights file to load instead of the shipped one.
                    Default: None (the file shipped in the package)
        sha256 (str, optional): Expected SHA-256 hex digest of the file; ``None`` skips the
                    check (only for weights you trained yourself).
                    Default: the digest of the shipped file

    Returns:
        tuple[ShapesProjectionNet, nn.Module]: ``(model, layer)``: the model in eval mode, whose
        forward maps ``(N, 3, H, W)`` images in ``[0, 1]`` to ``(N, 64)`` embeddings, and
        ``layer`` = ``model.block4``, its last convolutional block (``(N, 128, H/8, W/8)``
        non-negative output), the layer to explain with FAM.

    Raises:
        FileNotFoundError: If the weights file is missing.
        RuntimeError: If the file's SHA-256 differs from ``sha256``.

    Examples::

        >>> from captum_fam import FeatureActivationMap
        >>> from captum_fam.zoo import load_shapes_head_model, make_shapes
        >>> model, layer = load_shapes_head_model()
        >>> model(make_shapes(4, seed=0).images).shape
        torch.Size([4, 64])
        >>> fam = FeatureActivationMap(model, layer, embedding="output")
    """
    file = Path(path) if path is not None else HEAD_WEIGHTS_PATH
    model = _load_verified(ShapesProjectionNet(), file, sha256, device)
    return model, model.block4
