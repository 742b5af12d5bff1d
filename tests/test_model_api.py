"""The Encoder API the rest of longdoc uses: tokenize, encode, embed_spans, embed_texts, loading."""
import os
import shutil

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

from longdoc.errors import LongdocError
from longdoc.model import load_encoder
from longdoc.model.encoder import position_ids, preset
from longdoc.model.load import default_model_path

TEXT = ("Section 1. Definitions.\n\"Licensee\" means Café Naïve GmbH, and “Agreement” means this one.\n\n"
        "Section 2. Term: the term is 3 years (36 months) from the Effective Date — unless terminated. ") * 3


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A random 2-layer BERT with MiniLM's tokenizer and only 40 positions, so long paths run on short text."""
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=40)
    path = tmp_path_factory.mktemp("tiny-bert")
    transformers.BertModel(cfg, add_pooling_layer=False).save_pretrained(path, safe_serialization=True)
    shutil.copy(os.path.join(default_model_path(), "tokenizer.json"), path)
    return str(path)


@pytest.fixture(scope="module")
def tiny(tiny_folder):
    return load_encoder(tiny_folder, device="cpu", window=6)


def test_tokenize_offsets_map_back_to_text(tiny):
    tok = tiny.tokenize(TEXT)
    assert tok.ids.shape == tok.special.shape == tok.offsets.shape[:1]
    assert tok.special[0] and tok.special[-1] and not tok.special[1:-1].any()  # [CLS] ... [SEP]
    assert len(tok) > 128  # tokenizer.json ships truncation at 128: it must be off
    body = tok.offsets[~tok.special]
    assert (body[:, 0] < body[:, 1]).all() and (body[1:, 0] >= body[:-1, 1]).all()  # in order, disjoint
    pieces = tiny.tokenizer.encode(TEXT).tokens[1:-1]
    for (a, b), piece in zip(body.tolist(), pieces):
        # lower-cased, accents stripped by the normaliser; "##" marks a word continuation
        import unicodedata
        src = "".join(c for c in unicodedata.normalize("NFD", TEXT[a:b].lower()) if not unicodedata.combining(c))
        assert src == piece.removeprefix("##"), (TEXT[a:b], piece)
    covered = torch.zeros(len(TEXT), dtype=torch.bool)
    for a, b in body.tolist():
        covered[a:b] = True
    assert all(covered[i] or TEXT[i].isspace() for i in range(len(TEXT)))


def test_position_strategies():
    cfg = preset("minilm").replace(max_positions=10)
    assert position_ids(cfg, 23).tolist() == [i % 10 for i in range(23)]
    assert position_ids(cfg, 12, starts=[4, 7], mode="restart").tolist() == [0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 3, 4]
    assert position_ids(cfg, 14, starts=[2], mode="restart").tolist() == [0, 1] + [i % 10 for i in range(12)]
    rob = preset("longformer-base").replace(max_positions=12)  # offset 2: rows 2..11
    assert position_ids(rob, 12).tolist() == [2 + i % 10 for i in range(12)]
    with pytest.raises(ValueError):
        preset("minilm", positions="sinusoid")


def test_encode_is_whole_sequence_and_context_crosses_the_band(tiny):
    tok = tiny.tokenize(TEXT)
    n = len(tok)
    assert n > tiny.cfg.usable_positions  # beyond the 40 learned positions: tiled
    states = tiny.encode(tok)
    assert states.shape == (n, tiny.dim) and states.dtype == torch.float32 and torch.isfinite(states).all()
    # Changing the last token moves states only within layers * radius = 12 tokens of it.
    ids = tok.ids.clone()
    ids[-2] = 2000
    other = tiny.encode(type(tok)(ids, tok.offsets, tok.special))
    moved = (other - states).abs().amax(1) > 1e-6
    assert moved[n - 2] and not moved[: n - 2 - 12].any() and moved[n - 2 - 12 :].any()


def test_global_tokens_reach_everything(tiny):
    tok = tiny.tokenize(TEXT)
    gm = torch.zeros(len(tok), dtype=torch.bool)
    gm[1] = True
    a = tiny.encode(tok)
    b = tiny.encode(tok, global_mask=gm)
    assert ((b - a).abs().amax(1) > 1e-6)[-20:].all()  # far tokens now see token 1


def test_embed_spans_pools_overlapping_tokens(tiny):
    tok = tiny.tokenize(TEXT)
    states = tiny.encode(tok)
    spans = [(0, 23), (11, 11), (25, 60), (len(TEXT) - 10, len(TEXT)), (3, 5)]
    got = tiny.embed_spans(TEXT, spans)
    assert got.shape == (5, tiny.dim)
    for row, (s, e) in zip(got, spans):
        hit = [(a < e and b > s) and not sp for (a, b), sp in zip(tok.offsets.tolist(), tok.special.tolist())]
        if s == e:
            assert row.abs().max() == 0
            continue
        want = F.normalize(states[torch.tensor(hit)].mean(0), dim=0)
        assert torch.allclose(row, want, atol=1e-6)
    assert torch.allclose(got[[0, 2, 3, 4]].norm(dim=1), torch.ones(4))


def test_embed_spans_positions_and_globals_are_used(tiny):
    spans = [(0, 80), (80, 200), (200, len(TEXT))]
    tile = tiny.embed_spans(TEXT, spans, positions="tile")
    restart = tiny.embed_spans(TEXT, spans, positions="restart")
    glob = tiny.embed_spans(TEXT, spans, global_spans=[(0, 10)])
    assert not torch.allclose(tile, restart, atol=1e-4)
    assert not torch.allclose(tile, glob, atol=1e-4)
    assert tiny.embed_spans(TEXT, []).shape == (0, tiny.dim)


def test_embed_texts_batching_and_long_path(tiny):
    texts = ["what is the term?", "fees", TEXT, "", "Section 2. Term"]
    assert len(tiny.tokenize(TEXT)) > tiny.cfg.usable_positions
    batch = tiny.embed_texts(texts, batch_size=2)
    assert batch.shape == (5, tiny.dim)
    assert torch.allclose(batch.norm(dim=1), torch.ones(5), atol=1e-5)
    for i, t in enumerate(texts):  # batching and padding change nothing
        assert torch.allclose(batch[i], tiny.embed_texts([t])[0], atol=1e-5)
    # the long text went through the long path, whole
    assert torch.allclose(batch[2], F.normalize(tiny.encode(tiny.tokenize(TEXT)).mean(0), dim=0), atol=1e-5)
    assert tiny.embed_texts([]).shape == (0, tiny.dim)


def test_short_texts_get_full_attention(tiny_folder, tiny):
    """Within the position limit, embed_texts equals BertModel with mean pooling (sentence-transformers)."""
    hf = transformers.BertModel.from_pretrained(tiny_folder, add_pooling_layer=False).eval()
    text = "the licensee shall pay all fees within thirty days of the invoice date"
    ids = tiny.tokenize(text).ids[None]
    assert ids.shape[1] > 2 * tiny.cfg.windows[0] + 1  # longer than the radius-6 band
    with torch.no_grad():
        want = F.normalize(hf(ids).last_hidden_state[0].mean(0), dim=0)
    assert torch.allclose(tiny.embed_texts([text])[0], want, atol=1e-5)


def test_model_selection_precedence(tiny_folder, monkeypatch, tmp_path):
    monkeypatch.setenv("LONGDOC_MODEL", tiny_folder)
    assert load_encoder(device="cpu").dim == 32  # env over default
    monkeypatch.setenv("LONGDOC_MODEL", str(tmp_path / "nowhere"))
    with pytest.raises(LongdocError, match="model folder not found"):
        load_encoder(device="cpu")
    assert load_encoder(tiny_folder, device="cpu").dim == 32  # argument over env


def test_fingerprint_tracks_config_not_location(tiny_folder, tiny, tmp_path):
    again = load_encoder(tiny_folder, device="cpu", window=6)
    assert again.fingerprint == tiny.fingerprint
    assert load_encoder(tiny_folder, device="cpu", window=8).fingerprint != tiny.fingerprint
    assert load_encoder(tiny_folder, device="cpu", window=6, positions="restart").fingerprint != tiny.fingerprint
    moved = shutil.copytree(tiny_folder, tmp_path / "copy")
    assert load_encoder(str(moved), device="cpu", window=6).fingerprint == tiny.fingerprint


@pytest.mark.model
def test_minilm_matches_transformers_and_sentence_transformers_recipe():
    enc = load_encoder(device="cpu")
    assert (enc.name, enc.dim, enc.cfg.num_layers) == ("all-MiniLM-L6-v2", 384, 6)
    hf = transformers.BertModel.from_pretrained(default_model_path(), add_pooling_layer=False).eval()
    text = TEXT[:400]
    tok = enc.tokenize(text)
    n = len(tok)
    assert n <= enc.cfg.windows[0] + 1  # within one window: the band is full attention
    with torch.no_grad():
        want = hf(tok.ids[None]).last_hidden_state[0]
    got = enc.encode(tok)
    assert float((got - want).abs().max() / want.abs().max()) < 1e-5
    pooled = F.normalize(want.mean(0), dim=0)
    assert torch.allclose(enc.embed_texts([text])[0], pooled, atol=1e-5)
    # A sanity check on meaning: the question is closer to the passage that answers it.
    q = enc.embed_texts(["how long is the term of the agreement?"])
    spans = enc.embed_spans(text, [(0, 23), (text.index("Section 2"), text.index("Section 2") + 90)])
    sims = (spans @ q.T).squeeze(1)
    assert sims[1] > sims[0]
