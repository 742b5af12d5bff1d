"""Counting in blocks (longdoc/tokens.py: ``blocks``, ``count_chunks``) gives exactly the whole text's counts.

Each test compares against ``count`` of the whole string (one call per tokenizer, no cut), on real CUAD
texts and on adversarial text, with small blocks so that there are many cuts.
"""
import os
from itertools import accumulate
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from longdoc import tokens as tk
from longdoc.model.files import load_tokenizer

ADVERSARIAL = (
    "ARTICLE 1.\n\n\n\n\nDefinitions\r\n1.1 \"Agreement\" means\tthis\u00a0agreement.\n"
    "   \n \n\t\nIt's the Licensee's duty; they'll pay 1234567 USD (12 345,67 EUR) by 2024-01-31.\n"
    + "x" * 3000 + " " + "long line " * 400 + "\n"
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 e\u0301 word \u00c5ngstr\u00f6m \u4e2d\u6587\u5408\u540c clause 3 \u0418\u0441\u043a "
    "\u0645\u0631\u062d\u0628\u0627 \U0001f600 emoji \u3000ideographic space\u2028line sep\u2029para sep\n"
    "trailing spaces   \nword\n\n\n  indented\n\f\nform feed above\rold mac\r\nCRLF\n"
    "a.\nb\n(c)\nd)\n\"e\"\n'f'\n-g\n--h\n...i\n1.\n2\n"
    "camelCase HTTPServer iPhone ABCdef abcDEF x1y2 ab12cd 3rd 21st\n"
    "[CLS] [SEP] [MASK] <s> </s> <|endoftext|>\n"
    "\n" * 50 + "end"
)


def _cuad_texts(shared_data, every):
    files = sorted((shared_data / "cuad" / "txt").glob("*.txt"))[::every]
    return [(f.name, f.read_text(encoding="utf-8")) for f in files]


def _pieces(text, n):
    return [text[i:i + n] for i in range(0, len(text), n)]


@pytest.fixture(scope="module")
def tokenizer():
    tk.seed_tiktoken_cache()
    return load_tokenizer()


def test_cuts_are_where_the_rule_says_and_join_back(tokenizer):
    got = list(tk.blocks(_pieces(ADVERSARIAL, 7), 64))
    assert "".join(got) == ADVERSARIAL
    assert len(got) > 20
    for a, b in zip(got, got[1:]):  # each cut: a letter or digit | a space or newline
        assert a[-1].isalnum() and b[0] in " \n"
    assert "x" * 3000 in "".join(g for g in got if len(g) > 3000)  # no cut point inside: kept whole


@pytest.mark.parametrize("size", [1, 16, 100, 4096])
@pytest.mark.parametrize("piece", [1, 13, 1 << 20])
def test_adversarial_text_counts_equal_the_whole(tokenizer, size, piece):
    want = tk.count(ADVERSARIAL, "t", tokenizer=tokenizer)
    assert tk.count_chunks(_pieces(ADVERSARIAL, piece), "t", tokenizer=tokenizer, size=size) == want


def test_cuad_texts_counts_equal_the_whole(tokenizer, shared_data):
    every = 1 if os.environ.get("LONGDOC_SLOW_TESTS") else 8  # all 80 contracts: about 7 s here
    texts = _cuad_texts(shared_data, every)
    n_blocks = 0
    for name, text in texts:
        want = tk.count(text, name, tokenizer=tokenizer)
        assert tk.count_chunks(_pieces(text, 997), name, tokenizer=tokenizer, size=2000) == want, name
        n_blocks += len(list(tk.blocks([text], 2000)))
    assert n_blocks > 10 * len(texts)


def test_a_cut_anywhere_else_would_change_the_counts(tokenizer):
    """Why the cut rule is narrow: after a newline that follows punctuation, or inside a run of blank
    lines, tiktoken's patterns join across the cut, so a naive cut at line ends miscounts."""
    cl = tk.encoding("cl100k_base")
    for text, cut in (("Section 1.\n\nThe term", 11), ("word \n\n word", 6), ("a\n\n\nb", 2)):
        assert len(cl.encode_ordinary(text)) != len(cl.encode_ordinary(text[:cut])) + len(cl.encode_ordinary(text[cut:]))
        got = list(tk.blocks([text], 1))  # as many cuts as the rule allows
        assert cut not in set(accumulate(len(b) for b in got[:-1]))  # and never that one


FOLLOW = [" ", "\n", "a", "\u0301", ".", "1", "\u4e2d", "'s", "\t", "\U0001f600", "\u00a0", "\r", "\n\n", "  x"]


def test_every_unicode_letter_and_digit_before_a_cut(tokenizer):
    """Each letter or digit of Unicode (as Python classifies it; tiktoken's regex has its own tables)
    before a cut at a space and at a newline, followed by assorted characters; the pieces are counted
    with the batch encoders. Every 17th character here, all 133k with LONGDOC_SLOW_TESTS=1 (about 20 s)."""
    import sys

    step = 1 if os.environ.get("LONGDOC_SLOW_TESTS") else 17
    chars = [c for c in map(chr, range(0, sys.maxunicode + 1, step)) if c.isalnum()]
    text = "".join(c + " " + FOLLOW[i % len(FOLLOW)] + c + "\n" + FOLLOW[i * 7 % len(FOLLOW)]
                   for i, c in enumerate(chars))
    pieces = list(tk.blocks([text], 1))
    assert len(pieces) >= 2 * len(chars)
    want = tk.count(text, "t", tokenizer=tokenizer)
    for name in ("cl100k_base", "o200k_base"):
        assert sum(map(len, tk.encoding(name).encode_ordinary_batch(pieces))) == getattr(want, name), name
    got = sum(len(e.ids) for e in tokenizer.encode_batch(pieces, add_special_tokens=False))
    assert got + len(tokenizer.encode("").ids) == want.model


ALPHABET = st.sampled_from(["a", "Z", "7", " ", "  ", "\n", "\n\n", "\t", ".", "'s", "-", "\u00e9", "e\u0301",
                            "\u4e2d", "\U0001f600", "\u00a0", "\u3000", "\u2028", "\f", "[SEP]", "ab", "Cd", "123"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(ALPHABET, max_size=120), size=st.integers(1, 40), piece=st.integers(1, 30))
def test_random_text_counts_equal_the_whole(tokenizer, parts, size, piece):
    text = "".join(parts)
    want = tk.count(text, "t", tokenizer=tokenizer)
    assert tk.count_chunks(_pieces(text, piece), "t", tokenizer=tokenizer, size=size) == want


def _byte_level_bpe(prefix_space: bool, texts):
    from tokenizers import Tokenizer
    from tokenizers.implementations import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer(add_prefix_space=prefix_space)
    bpe.train_from_iterator(texts, vocab_size=1200, min_frequency=2, show_progress=False)
    return Tokenizer.from_str(bpe._tokenizer.to_str())


def test_byte_level_bpe_is_cut_exactly_unless_it_adds_a_prefix_space(tokenizer, shared_data):
    """RoBERTa/Longformer-style byte-level BPE (trained here, offline, on CUAD text) splits at the cut
    points like tiktoken; with add_prefix_space each block would get its own leading space, so
    count_chunks must not cut (and does not: it joins the text and counts it whole)."""
    texts = [t for _, t in _cuad_texts(shared_data, 16)]
    sample = texts[0][:20000] + ADVERSARIAL
    for prefix_space in (False, True):
        bpe = _byte_level_bpe(prefix_space, texts)
        assert tk.cuts_are_exact(bpe) is (not prefix_space)
        want = tk.count(sample, "t", tokenizer=bpe)
        assert tk.count_chunks(_pieces(sample, 999), "t", tokenizer=bpe, size=500) == want
        naive = len(bpe.encode("").ids) + sum(len(bpe.encode(b, add_special_tokens=False).ids)
                                              for b in tk.blocks([sample], 500))
        assert (naive == want.model) is (not prefix_space)


def test_unknown_pre_tokenizer_is_not_cut(tokenizer):
    from tokenizers import Tokenizer, pre_tokenizers

    odd = Tokenizer.from_str(tokenizer.to_str())
    odd.pre_tokenizer = pre_tokenizers.Metaspace()
    assert tk.cuts_are_exact(tokenizer) and not tk.cuts_are_exact(odd)


def test_cli_counts_a_file_in_blocks_as_a_whole(tmp_path, tokenizer, shared_data):
    """`longdoc tokens FILE` reads in blocks; on 1.1 MB of CUAD text with CRLF line ends (more than the
    1 MiB decoding sample, so decoded incrementally; about 17 token blocks) it prints the whole text's
    counts."""
    from click.testing import CliRunner

    from longdoc.cli import cli
    from longdoc.sources import load

    text = "".join(t for _, t in _cuad_texts(shared_data, 1))[:1_100_000]
    path = Path(tmp_path / "big.txt")
    path.write_bytes(text.replace("\n", "\r\n").encode("utf-8"))
    r = CliRunner().invoke(cli, ["tokens", "--json", str(path)], standalone_mode=False)
    assert r.exception is None, r.output
    import json

    got = json.loads(r.stdout)["files"][0]
    assert got == tk.count(load(path).text, str(path), tokenizer=tokenizer).to_dict()
    assert got["chars"] == len(text)
