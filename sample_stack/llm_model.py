"""The sample LLM: a small decoder-only transformer with a KV cache, for the sample LLM server.

Weights are deterministic from a seed, so nothing is downloaded and every process that builds the
same size gives the same tokens for the same prompt. Its words mean nothing; what matters is that
it costs what a language model costs: a prefill over the prompt, then one forward step per output
token whose cost grows with the context, reading keys and values cached from earlier steps.

The vocabulary is made of pseudo-words (``" sorivel"``), one token each, so that one output token
is one streamed chunk of text. Prompts are tokenized by hashing each word into the vocabulary, as
the classifier does; a chat request's messages are framed by role tokens.

The KV cache is one slab per layer holding ``slots`` sequences of up to ``max_len`` tokens. The
engine keeps its running sequences in slots ``0..n-1`` (it moves the last one into a slot that
frees), so that a decode step attends over a plain view of the slab, never a gathered copy.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

SPECIAL = ("<pad>", "<eos>", "<|system|>", "<|user|>", "<|assistant|>")
PAD, EOS, SYSTEM, USER, ASSISTANT = range(len(SPECIAL))
ROLES = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT, "developer": SYSTEM, "tool": USER}


@dataclass(frozen=True)
class ModelSize:
    dim: int
    layers: int
    heads: int
    vocab: int


SIZES = {
    "tiny": ModelSize(dim=64, layers=2, heads=2, vocab=1024),  # tests: starts in a blink
    # the stack and the benchmark: deep and narrow, so that one token costs a chain of layers, as
    # on a GPU at batch size 1, rather than arithmetic, which a CPU does not batch much better
    "small": ModelSize(dim=64, layers=8, heads=2, vocab=2048),
    "base": ModelSize(dim=384, layers=6, heads=6, vocab=8192),  # about 15 M parameters, for a GPU
}


def _words(count: int, seed: int) -> list[str]:
    """``count`` distinct pseudo-words, the same for every process."""
    onsets = ["b", "c", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st", "tr"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ou"]
    words: list[str] = []
    seen: set[str] = set()
    n = 0
    while len(words) < count:
        h = zlib.crc32(f"{seed}:{n}".encode())
        n += 1
        syllables = 1 + h % 3
        word = ""
        for i in range(syllables):
            part = (h >> (2 + 5 * i)) & 0xFFFF
            word += onsets[part % len(onsets)] + vowels[(part // len(onsets)) % len(vowels)]
        word += "" if h & 0x80000000 else "l"
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


class Tokenizer:
    """Words in, pseudo-words out: a prompt word hashes to a token, a token decodes to ``" word"``."""

    def __init__(self, vocab: int, seed: int = 1234) -> None:
        self.vocab = vocab
        self.pieces = list(SPECIAL) + [" " + w for w in _words(vocab - len(SPECIAL), seed)]

    def encode(self, text: str) -> list[int]:
        first = len(SPECIAL)
        return [first + zlib.crc32(w.lower().encode()) % (self.vocab - first) for w in text.split()]

    def encode_chat(self, messages: list[tuple[str, str]]) -> list[int]:
        """Each message as its role token and its words, then the assistant's role token."""
        ids: list[int] = []
        for role, content in messages:
            ids.append(ROLES.get(role, USER))
            ids += self.encode(content)
        ids.append(ASSISTANT)
        return ids

    def decode(self, token: int) -> str:
        return "" if token < len(SPECIAL) else self.pieces[token]


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, 4 * dim)
        self.down = nn.Linear(4 * dim, dim)

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return q, k, v  # each [b, heads, t, head_dim]

    def _finish(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = attended.shape
        x = x + self.proj(attended.transpose(1, 2).reshape(b, t, -1))
        return x + self.down(F.gelu(self.up(self.ln2(x))))

    def prefill(self, x: torch.Tensor, mask: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """``x`` [b, t, dim] for sequences whose cache rows are ``keys``/``values`` [b, heads, t, hd]."""
        q, k, v = self._split(x)
        keys.copy_(k)
        values.copy_(v)
        return self._finish(x, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))

    def decode(self, x: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor,
               keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """One new token per sequence: ``x`` [n, 1, dim]; ``keys``/``values`` the slab [slots, heads, max_len, hd]."""
        q, k, v = self._split(x)
        keys[rows, :, positions] = k[:, :, 0]
        values[rows, :, positions] = v[:, :, 0]
        width = mask.shape[-1]
        n = x.shape[0]
        attended = F.scaled_dot_product_attention(q, keys[:n, :, :width], values[:n, :, :width], attn_mask=mask)
        return self._finish(x, attended)


class TinyLM(nn.Module):
    def __init__(self, size: ModelSize, max_len: int) -> None:
        super().__init__()
        self.size, self.max_len = size, max_len
        self.embed = nn.Embedding(size.vocab, size.dim)
        self.position = nn.Embedding(max_len, size.dim)
        self.blocks = nn.ModuleList(Block(size.dim, size.heads) for _ in range(size.layers))
        self.ln = nn.LayerNorm(size.dim)
        self.head = nn.Linear(size.dim, size.vocab, bias=False)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.ln(x)).float()


class KVCache:
    """Keys and values of ``slots`` sequences of up to ``max_len`` tokens, one slab per layer."""

    def __init__(self, model: TinyLM, slots: int, device: torch.device) -> None:
        size = model.size
        shape = (slots, size.heads, model.max_len, size.dim // size.heads)
        dtype = next(model.parameters()).dtype
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(size.layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(size.layers)]
        self.slots = slots

    def move(self, source: int, target: int, length: int) -> None:
        """Copy the first ``length`` cached tokens of slot ``source`` into slot ``target``."""
        for slab in (*self.keys, *self.values):
            slab[target, :, :length] = slab[source, :, :length]

    @property
    def bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))


class Runner:
    """The model and its cache on one device: batched prefill and decode steps, returning logits."""

    def __init__(self, model: TinyLM, slots: int, device: torch.device) -> None:
        self.model, self.device = model, device
        self.blocks = [cast(Block, b) for b in model.blocks]
        self.cache = KVCache(model, slots, device)

    @torch.inference_mode()
    def prefill(self, first_slot: int, prompts: list[list[int]]) -> torch.Tensor:
        """Fill slots ``first_slot..`` with the prompts' keys and values; the logits of each prompt's
        last position ([len(prompts), vocab])."""
        m, dev = self.model, self.device
        lengths = torch.tensor([len(p) for p in prompts], device=dev)
        width = int(lengths.max())
        ids = torch.full((len(prompts), width), PAD, dtype=torch.long)
        for i, prompt in enumerate(prompts):
            ids[i, : len(prompt)] = torch.tensor(prompt, dtype=torch.long)
        ids = ids.to(dev)
        x = m.embed(ids) + m.position(torch.arange(width, device=dev)).unsqueeze(0)
        span = torch.arange(width, device=dev)
        # causal, and no key past the prompt's end (right padding)
        mask = (span[None, :] <= span[:, None])[None] & (span[None, None, :] < lengths[:, None, None])
        mask = mask.unsqueeze(1)
        rows = slice(first_slot, first_slot + len(prompts))
        for block, keys, values in zip(self.blocks, self.cache.keys, self.cache.values, strict=True):
            x = block.prefill(x, mask, keys[rows, :, :width], values[rows, :, :width])
        last = x[torch.arange(len(prompts), device=dev), lengths - 1]
        return m._logits(last)

    @torch.inference_mode()
    def decode(self, tokens: list[int], positions: list[int]) -> torch.Tensor:
        """One step for the sequences in slots ``0..len(tokens)-1``: token ``tokens[i]`` at position
        ``positions[i]`` (the slot's cached length). Logits [n, vocab]."""
        m, dev = self.model, self.device
        n = len(tokens)
        ids = torch.tensor(tokens, dtype=torch.long, device=dev)
        pos = torch.tensor(positions, dtype=torch.long, device=dev)
        x = (m.embed(ids) + m.position(pos)).unsqueeze(1)
        width = max(positions) + 1
        mask = (torch.arange(width, device=dev)[None, :] <= pos[:, None]).view(n, 1, 1, width)
        rows = torch.arange(n, device=dev)
        for block, keys, values in zip(self.blocks, self.cache.keys, self.cache.values, strict=True):
            x = block.decode(x, rows, pos, mask, keys, values)
        return m._logits(x[:, 0])


def build_model(size: str, max_len: int, device: torch.device, seed: int = 1234) -> TinyLM:
    """The model of ``size`` (a key of SIZES) with deterministic weights, in eval mode on ``device``."""
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; expected one of {', '.join(SIZES)}")
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = TinyLM(SIZES[size], max_len)
    torch.random.set_rng_state(state)
    with torch.no_grad():
        # a spread of logits, so that greedy decoding wanders over the vocabulary rather than
        # repeating one word, and sampling at temperature 1 is not uniform noise
        model.head.weight.mul_(4.0 / math.sqrt(model.size.dim) / model.head.weight.std())
        model.head.weight[PAD].fill_(0.0)
        model.head.weight[SYSTEM : ASSISTANT + 1].fill_(0.0)
    return model.to(device).eval()


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
