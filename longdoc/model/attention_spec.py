"""Names and parameters of the attention variants, without torch (the ask cache key is computed
before torch is imported). The patterns themselves are in ``variants.py``; docs/attention.md."""
from __future__ import annotations

VARIANTS = ("local", "strided", "lsh", "sinks", "linear", "full")
DEFAULT = "local"
# The parameters each variant reads: EncoderConfig field names and keyword names of the functions.
PARAMS = {"local": (), "strided": ("stride",), "lsh": ("buckets", "rounds", "chunk", "seed"),
          "sinks": ("sinks",), "linear": (), "full": ()}
ALL_PARAMS = ("stride", "buckets", "rounds", "chunk", "sinks", "seed")
# The largest value of each parameter (docs/attention.md); a larger one is an error. Past them a run
# takes hours or all the memory: lsh time grows with rounds squared (the duplicate count: `ask` took
# 110 s at rounds=16 against 6 s at 2 on a 3.6k-token file, so 1000 would take days), its hashing time
# with buckets (65536 on 18k tokens: over 6 minutes), its memory with chunk squared (a step holds
# heads x chunk x 2 chunk scores: 1.6 GB at 4096); each --stream chunk holds at least `sinks` tokens.
# The limits sit far above the papers' settings (Reformer: 1-8 rounds; StreamingLLM: 4 sinks) and
# above the lsh defaults up to 262k tokens. torch seeds are 64-bit. A stride has no limit: a larger one
# adds fewer columns.
MAX = {"buckets": 8192, "rounds": 16, "chunk": 4096, "sinks": 4096, "seed": 2**64 - 1}


def parse_spec(spec: str) -> tuple[str, dict[str, int]]:
    """``"lsh"`` or ``"lsh:rounds=4,buckets=64"`` -> (name, {param: int}). Raises ValueError."""
    name, _, rest = str(spec).strip().partition(":")
    name = name.strip().lower()
    if name not in PARAMS:
        raise ValueError(f"attention must be one of {', '.join(VARIANTS)}, got {name!r}")
    params = {}
    for item in filter(None, (x.strip() for x in rest.split(","))):
        key, eq, val = item.partition("=")
        key = key.strip()
        if not eq or key not in PARAMS[name]:
            allowed = ", ".join(PARAMS[name]) or "none"
            raise ValueError(f"attention {name!r}: unknown parameter {item!r} (parameters: {allowed})")
        try:
            params[key] = int(val)
        except ValueError:
            raise ValueError(f"attention {name!r}: {key} must be an integer, got {val.strip()!r}") from None
        if params[key] < 0:
            raise ValueError(f"attention {name!r}: {key} must be >= 0")
        if key in MAX and params[key] > MAX[key]:
            raise ValueError(f"attention {name!r}: {key} must be at most {MAX[key]}, got {params[key]}")
    return name, params


def canonical(spec: str | None) -> str:
    """One spelling per setting ("local" for None): ``"lsh:buckets=8,rounds=4"`` (sorted params)."""
    if spec is None:
        return DEFAULT
    name, params = parse_spec(spec)
    return name + (":" + ",".join(f"{k}={params[k]}" for k in sorted(params)) if params else "")
