"""What tasks return and renderers print: plain data, the JSON contract of `ask`."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Hit:
    """One passage that answers a question. ``char_start``/``char_end`` index the file's text."""

    path: str
    char_start: int
    char_end: int
    page: int | None
    line_start: int
    line_end: int
    score: float
    text: str
    label: str | None = None  # clause number, heading or function name, when known

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("label")
        if self.label is not None:
            d["label"] = self.label
        return d


@dataclass
class Answer:
    """The results for one question, best first."""

    question: str
    results: list[Hit] = field(default_factory=list)
    # Relevance per page (or per slice of lines) for the terminal's page map; not part of the JSON.
    heat: list[float] | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict:
        return {"question": self.question, "results": [h.to_json() for h in self.results]}
