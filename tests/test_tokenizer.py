"""The CLIP BPE tokenizer against OpenAI's reference clip/simple_tokenizer.py."""

import random

import pytest
import torch

from models.tokenizer import SimpleTokenizer, tokenize

PIECES = [
    "a man is playing a guitar", "A WOMAN Slices Tomatoes!!", "kids running on the beach at sunset...",
    "the cat's toy isn't here, they're gone; we'll see", "it's 3:45pm & 21°C", "price: $1,299.99 (-15%)",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber stra\u00dfe", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
    "\u0440\u0443\u0441\u0441\u043a\u0438\u0439 \u0442\u0435\u043a\u0441\u0442", "emoji \U0001F600\U0001F3B8 time",
    "&amp; &lt;b&gt;bold&lt;/b&gt; &quot;quoted&quot; &#39;single&#39; &amp;amp;", "tabs\tand\nnew\r\nlines   here",
    "mojibake: caf\u00c3\u00a9 \u00e2\u20ac\u0153smart quotes\u00e2\u20ac\ufffd", "<|startoftext|> hello <|endoftext|>",
    "hyphen-ated words and under_scores", "x" * 60, "supercalifragilisticexpialidocious antidisestablishment",
    "1st 2nd 3rd 4th 100000000 3.14159", "@user #hashtag http://example.com/path?q=1", "   ", "",
    "\u00bd \u2153 \u2460 \u00b2 \uff11\uff12\uff13 \uff21\uff22\uff23", "Zero\u200bwidth and non\u00a0breaking",
]


def sentences(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = list(PIECES)
    while len(out) < n:
        k = rng.randint(1, 6)
        out.append(" ".join(rng.choice(PIECES) for _ in range(k)))
    return out


@pytest.fixture(scope="module")
def reference(reference_tokenizer_module):
    return reference_tokenizer_module.SimpleTokenizer()


@pytest.fixture(scope="module")
def ours():
    return SimpleTokenizer()


def test_encode_matches_reference_on_varied_sentences(ours, reference):
    texts = sentences()
    assert len(texts) >= 400
    for text in texts:
        assert ours.encode(text) == reference.encode(text), text


def test_decode_matches_reference(ours, reference):
    for text in sentences(60, seed=1):
        ids = reference.encode(text)
        assert ours.decode(ids) == reference.decode(ids)


def test_tokenize_layout_and_truncation(ours, reference):
    sot, eot = 49406, 49407
    texts = sentences(200, seed=2)
    for context in (8, 32, 77):
        batch = tokenize(texts, context)
        assert batch.shape == (len(texts), context) and batch.dtype == torch.long
        for row, text in zip(batch.tolist(), texts):
            words = reference.encode(text)
            expected = [sot, *words, eot]
            if len(expected) > context:
                expected = expected[: context - 1] + [eot]
            assert row == expected + [0] * (context - len(expected))
            assert row[0] == sot and eot in row


def test_tokenize_long_text_without_truncation_raises():
    with pytest.raises(ValueError, match="more than the context length 8"):
        tokenize("one two three four five six seven eight nine", 8, truncate=False)
    assert tokenize("a red circle", 8, truncate=False)[0, :5].tolist() == [49406, 320, 736, 7117, 49407]


def test_single_string_and_vocabulary_size(ours):
    assert tokenize("hello", 5).shape == (1, 5)
    assert len(ours.encoder) == 49408 and ours.sot_id == 49406 and ours.eot_id == 49407
