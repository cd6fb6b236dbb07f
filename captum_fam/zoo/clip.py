"""The shipped CLIP of the shapes world: an image tower and a text tower in one embedding space.

Image and caption are compared by the cosine of their embeddings. Both towers pool a layer
linearly and then project it linearly, so FAM explains the similarity from either side exactly:
the image tower's ``block4`` map (``embedding="output"``), and the text tower's token states,
mean-pooled over the attention mask as sentence-transformers pools.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_fam.zoo.model import ShapesEmbeddingNet
from captum_fam.zoo.tokenizer import WordTokenizer
from captum_fam.zoo.weights import check_weights_file

__all__ = [
    "CLIP_WEIGHTS_PATH",
    "CLIP_WEIGHTS_SHA256",
    "ImageTower",
    "ShapesClip",
    "TextTower",
    "TokenConv",
    "TokenTransformer",
    "load_shapes_clip",
    "masked_mean",
]

CLIP_WEIGHTS_PATH = Path(__file__).with_name("shapes_clip.pt")
"""Location of the shipped CLIP weights (both towers, their configuration and vocabulary)."""

CLIP_WEIGHTS_SHA256 = "a932217045dadb4d8425b886fc22a7f052fc178a9cdc818f0911ad3e51bf1345"
"""SHA-256 of :data:`CLIP_WEIGHTS_PATH`; :func:`load_shapes_clip` refuses any other file."""


def masked_mean(states: Tensor, attention_mask: Tensor) -> Tensor:
    r"""Mean of ``(N, T, C)`` token states over the tokens where ``attention_mask`` is 1.

    ``sum_t m_t a_t / sum_t m_t``, as sentence-transformers pools (a row without any token
    gives zeros).

    Args:
        states (Tensor): ``(N, T, C)`` token states.
        attention_mask (Tensor): ``(N, T)`` mask, 1 on tokens and 0 on padding.

    Returns:
        Tensor: ``(N, C)``.
    """
    m = attention_mask.to(states.dtype).unsqueeze(-1)
    return (states * m).sum(dim=1) / m.sum(dim=1).clamp_min(1e-9)


class ImageTower(nn.Module):
    r"""Image side of the shapes CLIP: :class:`~captum_fam.zoo.ShapesEmbeddingNet`, then a
    linear projection into the shared space.

    Args:
        dim (int, optional): Width of the shared embedding space. Default: 64
        width (int, optional): Channels of the trunk's first block. Default: 16
        channels (int, optional): Channels of the trunk's last block (``trunk.block4``).
                    Default: 128

    Inputs are ``(N, 3, H, W)`` RGB images in ``[0, 1]``; the output is ``(N, dim)``.

    Examples::

        >>> import torch
        >>> from captum_fam.zoo.clip import ImageTower
        >>> ImageTower()(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 64])
    """

    def __init__(self, dim: int = 64, width: int = 16, channels: int = 128) -> None:
        super().__init__()
        self.trunk = ShapesEmbeddingNet(width=width, embedding_dim=channels)
        self.projection = nn.Linear(channels, dim)

    def forward(self, images: Tensor) -> Tensor:
        """``(N, dim)`` embedding: the projection of the trunk's pooled ``block4`` map."""
        return self.projection(self.trunk(images))


class TokenConv(nn.Module):
    r"""A 1-D convolution over the tokens, then ReLU: ``(N, T, E)`` to ``(N, T, C)``.

    Args:
        width (int): Channels ``E`` of the word embeddings.
        channels (int): Channels ``C`` of the token states.
        kernel_size (int, optional): Tokens each state sees (odd). Default: 3
    """

    def __init__(self, width: int, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd int; got {kernel_size!r}")
        self.conv = nn.Conv1d(width, channels, kernel_size, padding=kernel_size // 2)

    def forward(self, embeddings: Tensor, attention_mask: Tensor) -> Tensor:
        """Token states ``(N, T, C)`` (the caller zeroes padded embeddings beforehand)."""
        return F.relu(self.conv(embeddings.transpose(1, 2))).transpose(1, 2)


class TokenTransformer(nn.Module):
    r"""One pre-norm transformer layer over the tokens: ``(N, T, E)`` to ``(N, T, E)``.

    Self-attention (padding keys masked out) and a feed-forward block, each added to its input,
    on top of learned position embeddings.

    Args:
        width (int): Channels ``E`` of the word embeddings and of the token states.
        heads (int, optional): Attention heads. Default: 4
        hidden (int, optional): Width of the feed-forward block. Default: 128
        max_length (int, optional): Most tokens a text may have. Default: 32
    """

    def __init__(self, width: int, heads: int = 4, hidden: int = 128, max_length: int = 32):
        super().__init__()
        if width % heads:
            raise ValueError(f"width ({width}) must be a multiple of heads ({heads})")
        self.heads = heads
        self.max_length = max_length
        self.position = nn.Parameter(torch.zeros(max_length, width))
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.feedforward = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width)
        )

    def forward(self, embeddings: Tensor, attention_mask: Tensor) -> Tensor:
        """Token states ``(N, T, E)``; a token's state never depends on padding."""
        n, t, width = embeddings.shape
        if t > self.max_length:
            raise ValueError(f"input_ids has {t} tokens; this text tower reads at most "
                             f"{self.max_length}")  # fmt: skip
        x = embeddings + self.position[:t]
        q, k, v = self.qkv(self.norm1(x)).view(n, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        keys = attention_mask.bool()[:, None, None, :]
        attention = scores.masked_fill(~keys, float("-inf")).softmax(dim=-1)
        attention = attention.nan_to_num(0.0)  # a row without any token attends to nothing
        x = x + self.out((attention @ v).transpose(1, 2).reshape(n, t, width))
        return x + self.feedforward(self.norm2(x))


class TextTower(nn.Module):
    r"""Text side of the shapes CLIP: word embeddings, a small token encoder, the mean of its
    token states over the attention mask, and a linear projection into the shared space.

    ``forward(input_ids, attention_mask)`` computes
    ``o = W (sum_t m_t a_t / sum_t m_t) + b`` where ``a_t`` are the ``(N, T, C)`` outputs of
    :attr:`encoder` (the layer to explain) and ``m_t`` the attention mask. Padded embeddings are
    zeroed before the encoder, so no token's state depends on the padding.

    Args:
        vocab_size (int): Rows of the word embedding (the tokenizer's ``len``).
        dim (int, optional): Width of the shared embedding space. Default: 64
        width (int, optional): Channels of the word embeddings. Default: 64
        encoder (str, optional): ``"transformer"`` (:class:`TokenTransformer`,
                    ``C = width``) or ``"conv"`` (:class:`TokenConv`, ``C = channels``).
                    Default: ``"transformer"``
        channels (int, optional): Token state channels of the ``"conv"`` encoder.
                    Default: 128
        kernel_size (int, optional): Kernel of the ``"conv"`` encoder. Default: 3

    Examples::

        >>> import torch
        >>> from captum_fam.zoo.clip import TextTower
        >>> tower = TextTower(vocab_size=10)
        >>> input_ids = torch.tensor([[2, 3, 0], [4, 5, 6]])
        >>> attention_mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
        >>> tower(input_ids, attention_mask).shape
        torch.Size([2, 64])
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int = 64,
        width: int = 64,
        encoder: str = "transformer",
        channels: int = 128,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, width, padding_idx=WordTokenizer.pad_id)
        if encoder == "conv":
            self.encoder: nn.Module = TokenConv(width, channels, kernel_size)
            states = channels
        elif encoder == "transformer":
            self.encoder = TokenTransformer(width)
            states = width
        else:
            raise ValueError(f"encoder must be 'conv' or 'transformer'; got {encoder!r}")
        self.projection = nn.Linear(states, dim)

    def token_states(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """The encoder's ``(N, T, C)`` token states (what FAM reads on the text side)."""
        if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"input_ids and attention_mask must both be (N, T); got {tuple(input_ids.shape)} "
                f"and {tuple(attention_mask.shape)}"
            )
        mask = attention_mask.to(self.embedding.weight.dtype).unsqueeze(-1)
        return self.encoder(self.embedding(input_ids) * mask, attention_mask)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """``(N, dim)`` embedding of ``(N, T)`` token ids and their attention mask."""
        return self.projection(
            masked_mean(self.token_states(input_ids, attention_mask), attention_mask)
        )


class ShapesClip(NamedTuple):
    """The shapes CLIP, as :func:`load_shapes_clip` returns it.

    Attributes:
        image_tower (ImageTower): ``(N, 3, H, W)`` images in ``[0, 1]`` to ``(N, D)``.
        image_layer (nn.Module): ``image_tower.trunk.block4``, ``(N, 128, H/8, W/8)``
                    non-negative maps; explain with ``FeatureActivationMap(image_tower,
                    image_layer, embedding="output")``.
        text_tower (TextTower): ``(input_ids, attention_mask)`` to ``(N, D)``.
        text_layer (nn.Module): ``text_tower.encoder``, ``(N, T, C)`` token states.
        tokenizer (WordTokenizer): Texts to ``(input_ids, attention_mask)``.
    """

    image_tower: ImageTower
    image_layer: nn.Module
    text_tower: TextTower
    text_layer: nn.Module
    tokenizer: WordTokenizer

    @property
    def device(self) -> torch.device:
        """The device of the towers."""
        return self.text_tower.embedding.weight.device

    def embed_images(self, images: Tensor) -> Tensor:
        """``(N, D)`` image embeddings (not normalised), without a graph."""
        with torch.no_grad():
            return self.image_tower(images)

    def embed_texts(self, texts: list[str] | str) -> Tensor:
        """``(N, D)`` text embeddings (not normalised), without a graph, on the tower's device."""
        input_ids, attention_mask = self.tokenizer.encode(texts)
        with torch.no_grad():
            return self.text_tower(input_ids.to(self.device), attention_mask.to(self.device))

    def similarity(self, images: Tensor, texts: list[str] | str) -> Tensor:
        """``(N_images, N_texts)`` cosine similarities."""
        v = F.normalize(self.embed_images(images), dim=1)
        return v @ F.normalize(self.embed_texts(texts), dim=1).t()


def checkpoint(
    image_tower: ImageTower, text_tower: TextTower, config: dict, words: tuple[str, ...]
) -> dict:
    """The saved form: configuration, vocabulary words and both ``state_dict``s."""

    def state(module: nn.Module) -> dict[str, Tensor]:
        return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}

    return {
        "config": dict(config),
        "words": list(words),
        "image_tower": state(image_tower),
        "text_tower": state(text_tower),
    }


def build_towers(config: dict, vocab_size: int) -> tuple[ImageTower, TextTower]:
    """Fresh towers of a checkpoint's ``config`` (keys ``dim``, ``encoder``, ``kernel_size``)."""
    image_tower = ImageTower(dim=config["dim"])
    text_tower = TextTower(
        vocab_size,
        dim=config["dim"],
        encoder=config["encoder"],
        kernel_size=config.get("kernel_size", 3),
    )
    return image_tower, text_tower


def load_shapes_clip(
    device: torch.device | str | None = None,
    *,
    path: str | Path | None = None,
    sha256: str | None = CLIP_WEIGHTS_SHA256,
) -> ShapesClip:
    r"""Loads the shipped shapes CLIP, offline, after checking its SHA-256.

    Args:
        device (torch.device or str, optional): Where to put the towers. ``None`` keeps them
                    on CPU. Default: None
        path (str or Path, optional): Weights file to load instead of the shipped one.
                    Default: None (the file shipped in the package)
        sha256 (str, optional): Expected SHA-256 hex digest of the file; ``None`` skips the
                    check (only for weights you trained yourself).
                    Default: the digest of the shipped file

    Returns:
        ShapesClip: ``(image_tower, image_layer, text_tower, text_layer, tokenizer)``, the
        towers in eval mode. The similarity of an image and a text is the cosine of
        ``image_tower(images)`` and ``text_tower(*tokenizer.encode(texts))``.

    Raises:
        FileNotFoundError: If the weights file is missing.
        RuntimeError: If the file's SHA-256 differs from ``sha256``.

    Examples::

        >>> from captum_fam.zoo import load_shapes_clip, make_shapes
        >>> clip = load_shapes_clip()
        >>> images = make_shapes(2, seed=0).images
        >>> clip.similarity(images, ["a star", "a circle and a square"]).shape
        torch.Size([2, 2])
        >>> input_ids, attention_mask = clip.tokenizer.encode(["a star next to a ring"])
        >>> clip.text_tower(input_ids, attention_mask).shape
        torch.Size([1, 64])
    """
    file = Path(path) if path is not None else CLIP_WEIGHTS_PATH
    check_weights_file(file, sha256, "shapes CLIP")
    saved = torch.load(file, map_location="cpu", weights_only=True)
    tokenizer = WordTokenizer(saved["words"])
    image_tower, text_tower = build_towers(saved["config"], len(tokenizer))
    image_tower.load_state_dict(saved["image_tower"])
    text_tower.load_state_dict(saved["text_tower"])
    image_tower.eval()
    text_tower.eval()
    if device is not None:
        image_tower.to(device)
        text_tower.to(device)
    return ShapesClip(
        image_tower, image_tower.trunk.block4, text_tower, text_tower.encoder, tokenizer
    )
