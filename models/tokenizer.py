"""CLIP's byte-level BPE tokenizer (the `bpe_simple_vocab_16e6.txt.gz` merges table shipped by OpenAI, MIT licence).

Text is cleaned as OpenAI does (ftfy, HTML unescaping twice, whitespace folding, lower case), split with CLIP's
regular expression, and each piece is byte-encoded and merged by BPE rank.
"""

from __future__ import annotations

import functools
import gzip
import html
from pathlib import Path

import ftfy
import regex
import torch

BPE_PATH = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
SOT_TOKEN, EOT_TOKEN = "<|startoftext|>", "<|endoftext|>"
_NUM_MERGES = 49152 - 256 - 2
_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)


@functools.lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """Reversible map from the 256 byte values to printable unicode characters (GPT-2's table)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return dict(zip(printable + others, [chr(c) for c in printable] + [chr(256 + i) for i in range(len(others))]))


def clean_text(text: str) -> str:
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return regex.sub(r"\s+", " ", text).strip().lower()


class SimpleTokenizer:
    """`encode(text) -> list[int]` and `decode(ids) -> str` with CLIP's vocabulary of 49,408 tokens."""

    def __init__(self, bpe_path: str | Path = BPE_PATH):
        lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")[1:_NUM_MERGES + 1]
        merges = [tuple(line.split()) for line in lines]
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        vocab = list(self.byte_encoder.values())
        vocab += [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + [SOT_TOKEN, EOT_TOKEN]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.decoder = dict(enumerate(vocab))
        self.bpe_ranks = {merge: rank for rank, merge in enumerate(merges)}
        self.sot_id, self.eot_id = self.encoder[SOT_TOKEN], self.encoder[EOT_TOKEN]
        self.bpe = functools.lru_cache(maxsize=1 << 16)(self._bpe)

    def _bpe(self, token: str) -> tuple[str, ...]:
        """Merge the characters of one byte-encoded word by BPE rank; the last symbol carries `</w>`."""
        if token in (SOT_TOKEN, EOT_TOKEN):
            return (token,)
        word = (*token[:-1], token[-1] + "</w>")
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            best = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if best not in self.bpe_ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        return word

    def encode(self, text: str) -> list[int]:
        ids = []
        for piece in _PATTERN.findall(clean_text(text)):
            encoded = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[symbol] for symbol in self.bpe(encoded))
        return ids

    def decode(self, ids: list[int]) -> str:
        text = "".join(self.decoder[i] for i in ids)
        return bytearray(self.byte_decoder[c] for c in text).decode("utf-8", errors="replace").replace("</w>", " ")


@functools.lru_cache(maxsize=1)
def default_tokenizer() -> SimpleTokenizer:
    return SimpleTokenizer()


def tokenize(texts: str | list[str], context_length: int, truncate: bool = True,
             tokenizer: SimpleTokenizer | None = None) -> torch.Tensor:
    """Texts -> LongTensor [N, context_length]: SOT, the BPE ids, EOT, zeros. Too long texts are cut to
    context_length - 1 tokens and end with EOT when `truncate`, and raise ValueError otherwise."""
    if isinstance(texts, str):
        texts = [texts]
    if context_length < 2:
        raise ValueError(f"context_length must leave room for SOT and EOT, got {context_length}")
    tokenizer = tokenizer or default_tokenizer()
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for row, text in enumerate(texts):
        ids = [tokenizer.sot_id, *tokenizer.encode(text), tokenizer.eot_id]
        if len(ids) > context_length:
            if not truncate:
                raise ValueError(f"text {row} has {len(ids)} tokens, more than the context length "
                                 f"{context_length}: {text[:80]!r}")
            ids = ids[: context_length - 1] + [tokenizer.eot_id]
        result[row, : len(ids)] = torch.tensor(ids)
    return result
