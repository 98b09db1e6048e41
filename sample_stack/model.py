"""The sample model: a small transformer text classifier (about 2.5 M parameters).

Weights are deterministic from a seed, so nothing is downloaded and every run of a version gives
the same answers. Cost grows with input length (attention is quadratic in tokens). Version ``v2``
is ``v1`` with a shifted classifier head: it disagrees with v1 on a share of inputs, like a new
model version that quietly changes its outputs.
"""

from __future__ import annotations

import zlib

import torch
from torch import nn

VOCAB = 8192
MAX_TOKENS = 512
LABELS = ("billing", "outage", "feature_request", "praise")
PAD = 0


def tokenize(text: str, max_tokens: int = MAX_TOKENS) -> list[int]:
    """Hash each word into the vocabulary (0 is padding); deterministic across processes."""
    ids = [1 + zlib.crc32(word.lower().encode()) % (VOCAB - 1) for word in text.split()[:max_tokens]]
    return ids or [1]


class TextClassifier(nn.Module):
    def __init__(self, dim: int = 192, layers: int = 3, heads: int = 4, classes: int = len(LABELS)) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim, padding_idx=PAD)
        self.position = nn.Embedding(MAX_TOKENS, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=dim * 4, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(dim, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = ids == PAD
        positions = torch.arange(ids.shape[1], device=ids.device).unsqueeze(0)
        x = self.embed(ids) + self.position(positions)
        x = self.encoder(x, src_key_padding_mask=mask)
        keep = (~mask).unsqueeze(-1).to(x.dtype)
        pooled = (x * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        return self.head(pooled)


def build_model(version: str, device: torch.device, seed: int = 1234) -> TextClassifier:
    """The model of ``version`` ("v1" or "v2") with deterministic weights, in eval mode on ``device``."""
    if version not in ("v1", "v2"):
        raise ValueError(f"unknown model version {version!r}; expected v1 or v2")
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = TextClassifier()
    torch.random.set_rng_state(generator_state)
    with torch.no_grad():
        # give the head a spread so that labels differ between inputs
        model.head.weight.mul_(8.0)
        if version == "v2":
            g = torch.Generator().manual_seed(seed + 2)
            model.head.weight.add_(torch.randn(model.head.weight.shape, generator=g) * 0.6)
            model.head.bias.add_(torch.tensor([0.0, 0.35, -0.2, 0.1]))
    return model.to(device).eval()


def batch_tensor(token_lists: list[list[int]], device: torch.device) -> torch.Tensor:
    width = max(len(t) for t in token_lists)
    out = torch.full((len(token_lists), width), PAD, dtype=torch.long)
    for i, tokens in enumerate(token_lists):
        out[i, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
    return out.to(device)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
