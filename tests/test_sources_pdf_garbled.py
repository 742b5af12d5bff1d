"""Pages whose extracted text looks garbled are named in one warning per document: CJK PDFs built here
(a font without a Unicode map, vertical text set a character at a time, letter-spaced text), the
legacy CJK encodings pypdf lacks, the detector on natural text in many scripts, and the real PDFs of
../shared/data (the odd ones named, no contract or filing named)."""
from __future__ import annotations

import random
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_sources_pdf import make_pdf, pdf_bytes, write  # noqa: E402

from longdoc.errors import LongdocError  # noqa: E402
from longdoc.sources import PAGE_SEPARATOR, load, stream  # noqa: E402
from longdoc.sources.pdf import _CJK_CMAPS, garbled  # noqa: E402

JA = ("すべての人間は、生まれながらにして自由であり、かつ、尊厳と権利とについて平等である。人間は、理性と良心と"
      "を授けられており、互いに同胞の精神をもって行動しなければならない。")


def warning_for(pages: str) -> str:
    it = "it" if pages.startswith("page ") else "them"
    return (f"the text of {pages} looks garbled (characters that are not text, or one letter per line or word: "
            f"a font without a Unicode map, vertical or letter-spaced text); answers from {it} may be unreliable")


def cjk_pdf(pages: list[list[tuple[float, float, bytes]]], *, encoding: str = "/Identity-H",
            to_unicode: dict[int, str] | None = None, ordering: str = "Japan1") -> bytes:
    """A PDF in one Type0 font over a CIDFont that is not embedded (as many CJK PDFs are). ``pages``
    holds per page the runs (x, y, codes) shown with one Tj each, ``codes`` being the font's character
    codes; ``to_unicode`` maps 2-byte codes to text as the font's ToUnicode CMap (None: no such map)."""
    objs: list[bytes] = []

    def add(body: bytes) -> int:
        objs.append(body)
        return len(objs)

    def stream_obj(data: bytes) -> int:
        return add(b"<< /Length %d >>\nstream\n" % len(data) + data + b"\nendstream")

    catalog, pages_id = add(b""), add(b"")
    desc = add(b"<< /Type /Font /Subtype /CIDFontType2 /BaseFont /MS-Mincho /CIDSystemInfo << /Registry (Adobe) "
               b"/Ordering (" + ordering.encode() + b") /Supplement 2 >> /DW 1000 /FontDescriptor << /Type "
               b"/FontDescriptor /FontName /MS-Mincho /Flags 4 /FontBBox [0 -120 1000 880] /ItalicAngle 0 "
               b"/Ascent 880 /Descent -120 /CapHeight 880 /StemV 80 >> >>")
    extra = b""
    if to_unicode is not None:
        cmap = ("/CIDInit /ProcSet findresource begin 12 dict begin begincmap /CMapName /Test def\n"
                "1 begincodespacerange <0000> <FFFF> endcodespacerange\n"
                f"{len(to_unicode)} beginbfchar\n"
                + "".join(f"<{code:04X}> <{text.encode('utf-16-be').hex().upper()}>\n"
                          for code, text in sorted(to_unicode.items()))
                + "endbfchar\nendcmap CMapName currentdict /CMap defineresource pop end end").encode()
        extra = b" /ToUnicode %d 0 R" % stream_obj(cmap)
    font = add(b"<< /Type /Font /Subtype /Type0 /BaseFont /MS-Mincho /Encoding " + encoding.encode()
               + b" /DescendantFonts [%d 0 R]" % desc + extra + b" >>")
    kids = []
    for runs in pages:
        ops = [b"BT /F1 12 Tf"] + [b"1 0 0 1 %.2f %.2f Tm <%s> Tj" % (x, y, codes.hex().encode())
                                   for x, y, codes in runs] + [b"ET"]
        content = stream_obj(b"\n".join(ops))
        kids.append(add(b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 %d 0 R "
                        b">> >> /Contents %d 0 R >>" % (pages_id, font, content)))
    return pdf_bytes(objs, catalog, pages_id, kids)


class Codes:
    """2-byte codes for text, numbered as characters first appear, and the ToUnicode map back."""

    def __init__(self):
        self.to_unicode: dict[int, str] = {}
        self._code: dict[str, int] = {}

    def __call__(self, text: str) -> bytes:
        for c in text:
            if c not in self._code:
                self._code[c] = len(self._code) + 1
                self.to_unicode[self._code[c]] = c
        return b"".join(self._code[c].to_bytes(2, "big") for c in text)


def horizontal(codes: Codes, text: str, per_line: int = 30) -> list[tuple[float, float, bytes]]:
    return [(72, 720 - 16 * i, codes(text[j:j + per_line])) for i, j in enumerate(range(0, len(text), per_line))]


def vertical_by_character(codes: Codes, text: str, per_column: int = 20) -> list[tuple[float, float, bytes]]:
    """Columns right to left, each character placed on its own (as vertical typesetting often does)."""
    return [(520 - 20 * (i // per_column), 720 - 14 * (i % per_column), codes(c)) for i, c in enumerate(text)]


def test_vertical_text_set_a_character_at_a_time_is_named(tmp_path):
    codes = Codes()
    pages = [horizontal(codes, JA), vertical_by_character(codes, JA), horizontal(codes, JA[::-1])]
    p = write(tmp_path, "tate.pdf", cjk_pdf(pages, encoding="/Identity-V", to_unicode=codes.to_unicode))
    doc = load(p)
    one, two, three = doc.text.split(PAGE_SEPARATOR)
    assert "".join(one.split()) == JA and "".join(three.split()) == JA[::-1]
    assert two.split("\n")[:3] == ["す", "べ", "て"]  # what pypdf gives: the right characters, one a line
    assert doc.warnings == (warning_for("page 2"),)
    s = stream(p)
    assert "".join(s.chunks) == doc.text and s.warnings == list(doc.warnings)


def japan1_cids(text: str, rng: random.Random) -> bytes:
    """Adobe-Japan1 CIDs of ``text``: kana and the ideographic comma and full stop as Adobe numbers them;
    a kanji gets a random CID of the JIS level-1 kanji (1125-4089)."""
    out = []
    for c in text:
        if "ぁ" <= c <= "ゖ":
            out.append(842 + ord(c) - ord("ぁ"))
        elif "ァ" <= c <= "ヶ":
            out.append(925 + ord(c) - ord("ァ"))
        else:
            out.append({"、": 634, "。": 635}.get(c) or rng.randint(1125, 4089))
    return b"".join(cid.to_bytes(2, "big") for cid in out)


@pytest.mark.parametrize("seed", range(5))
def test_cjk_font_without_unicode_map_is_named(tmp_path, seed):
    """No ToUnicode and an Identity encoding: pypdf reads each CID as a code point, which gives letters
    and marks of a dozen scripts (vertical.pdf in the robustness corpus is such a file)."""
    rng = random.Random(seed)
    text = JA[seed * 7:] + JA[:seed * 7]
    pages = [[(72, 720 - 16 * i, japan1_cids(text[j:j + 30], rng)) for i, j in enumerate(range(0, len(text), 30))]
             for _ in range(2)]
    doc = load(write(tmp_path, "nomap.pdf", cjk_pdf(pages)))
    assert not any("\u3040" <= c <= "\u30ff" for c in doc.text)  # not one kana survived
    assert doc.warnings == (warning_for("pages 1-2"),)


SAMPLE_TEXT = {
    "gbk": "我们都是黑体字，合同第三条。", "big5": "合約第三條，雙方同意。", "big5hkscs": "合約第三條，雙方同意。",
    "euc_jp": "契約の第三条、両当事者は同意する。", "cp932": "契約の第三条、両当事者は同意する。",
    "euc_kr": "계약 제3조 양 당사자는 동의한다.", "cp949": "계약 제3조 양 당사자는 동의한다.",
    "utf-16-be": "계약 제3조 양 당사자는 동의한다.",
}


@pytest.mark.parametrize("encoding,codec", sorted(_CJK_CMAPS.items()))
def test_legacy_cjk_encodings_pypdf_lacks_are_decoded(tmp_path, encoding, codec):
    """pypdf 7.1 read these predefined CMaps' codes as UTF-16: GBK "我们都是黑体字" came out as Hangul."""
    text = SAMPLE_TEXT[codec]
    doc = load(write(tmp_path, "legacy.pdf", cjk_pdf([[(72, 720, text.encode(codec))]], encoding=encoding)))
    assert doc.text == text and not doc.warnings


def test_letter_spaced_text_is_named(tmp_path):
    spaced = " ".join("The parties agree to these terms")
    doc = load(write(tmp_path, "spaced.pdf", make_pdf([["An ordinary first page of words."], [spaced, spaced]])))
    assert doc.warnings == (warning_for("page 2"),)


NATURAL = {
    "zh": "人人生而自由，在尊严和权利上一律平等。他们赋有理性和良心。我买了一部iPhone手机和MacBook。",
    "ja": JA + "Ｔシャツを３枚買った。iPhoneの新モデル、ヴァイオリン。",
    "ko": "모든 인간은 태어날 때부터 자유로우며 그 존엄과 권리에 있어 동등하다. 漢字混用 文章도 있다.",
    "ar": "يُولَدُ جَمِيعُ النَّاسِ أَحْرَارًا مُتَسَاوِينَ فِي الْكَرَامَةِ وَالْحُقُوقِ. اﻟﻌﺮﺑﻴﺔ اﳋﻄﻮط ١٢٣",
    "he": "כָּל בְּנֵי הָאָדָם נוֹלְדוּ בְּנֵי חוֹרִין וְשָׁוִים בְּעֶרְכָּם וּבִזְכֻיּוֹתֵיהֶם",
    "hi": "सभी मनुष्यों को गौरव और अधिकारों के मामले में जन्मजात स्वतन्त्रता और समानता प्राप्त है।",
    "ta": "மனிதப் பிறவியினர் சகலரும் சுதந்திரமாகவே பிறக்கின்றனர்",
    "th": "มนุษย์ทั้งหลายเกิดมามีอิสระและเสมอภาคกันในเกียรติศักดิ์และสิทธิ",
    "my": "လူတိုင်းသည် တူညီ လွတ်လပ်သော ဂုဏ်သိက္ခါ",
    "ru": "Все люди рождаются свободными и равными в своем достоинстве и правах.",
    "el": "Όλοι οι άνθρωποι γεννιούνται ελεύθεροι και ίσοι στην αξιοπρέπεια και τα δικαιώματα.",
    "vi_nfd": unicodedata.normalize("NFD", "Tất cả mọi người sinh ra đều được tự do và bình đẳng về nhân phẩm."),
    "fr_nfd": unicodedata.normalize("NFD", "Élève naïve à l'hôpital, déjà reçu; coût ﬁnal µm Å ℃ ™ ® © ª º ⁿ"),
    "math": "for all x ∈ ℝ, ‖x‖ ≥ 0 and Σᵢ αᵢxᵢ = β; ∂f/∂x ≈ 0, θ-function, Δt, λ-calculus, π r², 𝑥",
    "ipa": "phonetic [ˈfəʊnəm] [t͡ʃ] [ŋ̊] [ɑ̃] spelled",
    "emoji": "Great 👍🏽 ✔️ ❤️ job 1️⃣ ☺︎",
    "bullets": "\n".join(f"\uf0b7 Item {i}: the supplier delivers the goods on time" for i in range(8)),
    "table": "\n".join(["Revenue", "$", "1,204", "%", "12.5", ")", "—"] * 6),
}


@pytest.mark.parametrize("name", sorted(NATURAL))
def test_natural_text_is_not_garbled(name):
    assert not garbled(NATURAL[name])


def test_garbled_text_is():
    rng = random.Random(0)
    # CIDs of Adobe-Japan1 (kana and kanji) and of Adobe-Korea1 read as code points
    assert garbled(japan1_cids(JA, rng).decode("utf-16-be"))
    assert garbled("".join(chr(rng.randint(1, 18351)) for _ in range(300)))
    assert garbled("\uf041\uf062\uf063\uf020\uf064\uf065")  # a symbolic font's codes: private use only
    assert garbled("Total \ufffd\ufffd\ufffd\ufffd amount")
    assert garbled("\n".join(JA))  # vertical: one character a line
    assert not garbled("") and not garbled("Ok") and not garbled("x\uf0b7")  # too little to judge


# ---------------------------------------------------------------------------------------------
# The real PDFs of ../shared/data


def _garbled_warning(doc) -> str | None:
    return next((w for w in doc.warnings if "looks garbled" in w), None)


def test_the_odd_pdfs_of_the_robustness_corpus(shared_data):
    corpus = shared_data / "pdf-robustness"
    vertical = load(str(corpus / "pdfjs-test-pdfs" / "vertical.pdf"))  # Japan1 CIDs, no Unicode map
    assert _garbled_warning(vertical) == warning_for("page 1")
    tracking = load(str(corpus / "pdfjs-test-pdfs" / "issue6387.pdf"))  # a column of one character a line
    assert _garbled_warning(tracking) == warning_for("page 1")
    gbk = load(str(corpus / "pdfjs-test-pdfs" / "issue3521.pdf"))  # a GBKp-EUC-H font
    assert gbk.text == "我们都是黑体字" and not gbk.warnings
    for rtl in ["pdfjs-test-pdfs/ArabicCIDTrueType.pdf", "py-pdf-sample-files/015-arabic/habibi.pdf",
                "pypdf-resources/multilang.pdf"]:  # their word order: tests/test_sources_pdf_rtl.py
        assert _garbled_warning(load(str(corpus / rtl))) is None, rtl


def test_no_other_robustness_pdf_is_named(shared_data):
    import csv

    corpus = shared_data / "pdf-robustness"
    named = set()
    with open(corpus / "manifest.tsv", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if not row["file"].endswith(".pdf"):
                continue
            try:
                doc = load(str(corpus / row["file"]), password=row["password"] or None)
            except LongdocError:  # the corpus's errors are test_pdf_corpus's business
                continue
            if _garbled_warning(doc):
                named.add(row["file"])
    assert named == {"pdfjs-test-pdfs/vertical.pdf", "pdfjs-test-pdfs/issue6387.pdf"}


def test_no_contract_or_filing_pdf_is_named(shared_data):
    """Every page of the CUAD and FinanceBench PDFs (about 35 s here): neither the garbled-text check
    nor the right-to-left order check (tests/test_sources_pdf_rtl.py) fires."""
    files = sorted((shared_data / "cuad" / "pdf").glob("*.pdf")) + \
        sorted((shared_data / "financebench" / "pdfs").glob("*.pdf"))
    assert len(files) >= 20
    for f in files:
        doc = load(str(f))
        assert _garbled_warning(doc) is None, f.name
        assert not any("right-to-left" in w for w in doc.warnings), f.name


def test_ask_prints_the_warning_once(tmp_path, tiny_model_dir):
    codes = Codes()
    p = write(tmp_path, "tate.pdf", cjk_pdf([horizontal(codes, JA), vertical_by_character(codes, JA)],
                                            encoding="/Identity-V", to_unicode=codes.to_unicode))
    r = subprocess.run([sys.executable, "-m", "longdoc", "ask", p, "尊厳", "--model", str(tiny_model_dir),
                        "--no-cache"], capture_output=True, text=True, timeout=300)
    assert r.returncode in (0, 1), r.stderr
    assert r.stderr.splitlines() == [f"longdoc: warning: {p}: {warning_for('page 2')}"]
