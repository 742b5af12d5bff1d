"""classify: labels, presets, zero-shot behaviour and shapes, the trained head, CLI formats and exit codes."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from longdoc.cli import cli, main
from longdoc.errors import LongdocError
from longdoc.tasks import classify as C

NDA = ("MUTUAL NONDISCLOSURE AGREEMENT\n\n1. Confidential Information. Each party shall keep the other "
       "party's confidential information secret.\n\n2. Term. This agreement lasts three years.\n")
LEASE = ("LEASE\n\n1. Premises. Landlord leases to Tenant the premises at 1 Main Street.\n\n"
         "2. Rent. Tenant shall pay rent monthly.\n")


@pytest.fixture
def files(tmp_path):
    a, b = tmp_path / "b_nda.txt", tmp_path / "a_lease.txt"
    a.write_text(NDA, encoding="utf-8")
    b.write_text(LEASE, encoding="utf-8")
    return [str(a), str(b)]


def test_presets_load_with_attribution():
    types, mode = C.preset("cuad-types")
    assert mode == "single" and len(types) == 25 and all(t.description != t.name for t in types)
    clauses, mode = C.preset("cuad-clauses")
    assert mode == "multi" and len(clauses) == 41
    assert clauses[0].name == "Document Name" and "Cap on Liability" in {c.name for c in clauses}
    assert "CC BY 4.0" in (C.PRESETS_DIR / "cuad_clauses.tsv").read_text(encoding="utf-8")
    with pytest.raises(LongdocError):
        C.preset("nope")


def test_label_parsing(tmp_path):
    assert [l.name for l in C.parse_labels("NDA, lease ,employment")] == ["NDA", "lease", "employment"]
    for bad in ("a,,b", "", "a,a"):
        with pytest.raises(LongdocError):
            C.parse_labels(bad)
    f = tmp_path / "labels.txt"
    f.write_text("# comment\nNDA: a nondisclosure agreement\nlease\tletting of premises\tx\nplain\n")
    labels = C.read_labels_file(f)
    assert [(l.name, l.description) for l in labels] == [("NDA", "a nondisclosure agreement"),
                                                         ("lease", "letting of premises"), ("plain", "plain")]
    assert labels[0].query == "NDA: a nondisclosure agreement" and labels[2].query == "plain"
    with pytest.raises(LongdocError):
        C.read_labels_file(tmp_path / "missing.txt")


def test_zero_shot_scores_single_and_multi():
    rng = np.random.default_rng(0)
    seg = rng.normal(size=(6, 8)).astype(np.float32)
    seg /= np.linalg.norm(seg, axis=1, keepdims=True)
    labels = np.stack([seg[2], -seg[2], rng.normal(size=8).astype(np.float32)])
    labels /= np.linalg.norm(labels, axis=1, keepdims=True)
    spans = [(i * 10, i * 10 + 9) for i in range(6)]
    raw, p = C.zero_shot_scores(seg, spans, labels, "single")
    assert raw.shape == p.shape == (3,) and abs(p.sum() - 1) < 1e-5 and int(np.argmax(p)) == 0
    raw, p = C.zero_shot_scores(seg, spans, labels, "multi")
    assert raw.shape == (3,) and np.all((p > 0) & (p < 1))
    assert raw[0] == pytest.approx(1.0 - np.median(labels[0] @ seg.T), abs=1e-5)


@pytest.mark.parametrize("text, title", [
    ("Exhibit 10d-2\nRESELLER AGREEMENT\nBY AND BETWEEN", "RESELLER AGREEMENT"),
    ('This Reseller Agreement (the "Agreement") is made', "Reseller Agreement"),  # "This" is not the title
    ("Exhibit 10.2\nSITE DEVELOPMENT AND\nHOSTING AGREEMENT\n\nThis", "SITE DEVELOPMENT AND HOSTING AGREEMENT"),
    ("EXHIBIT 10.13\n\nOutsourcing Contract on Development of a Hotel", "Outsourcing Contract"),
    ("AGREEMENT FOR THE SUPPLY OF GOODS\n\nThis agreement", "AGREEMENT FOR THE SUPPLY OF GOODS"),
    ("AGREEMENT FOR THE SUPPLY OF goods", "AGREEMENT FOR THE SUPPLY"),
    # legends and "THIS AGREEMENT" name no kind; the title after them does
    ("Portions of this agreement are omitted. THIS AGREEMENT\n\nMASTER SERVICES AGREEMENT", "MASTER SERVICES AGREEMENT"),
    ("LEASE\n\n1. Premises. Landlord leases to Tenant.", None),  # no Agreement or Contract: no title
    ("SUPPLY\n\nAGREEMENT", None),  # not across a blank line
    ("AND " * 500 + "AGREEMENT", None),
    ("x " * 2000 + "DISTRIBUTOR AGREEMENT", None),  # beyond the opening
])
def test_find_title(text, title):
    t = C.find_title(text)
    assert (t.text if t else None) == title
    if t:
        assert " ".join(text[t.start:t.end].split()) == t.text and t.kind in t.text.lower()


def test_title_adds_to_the_single_label_score():
    rng = np.random.default_rng(0)
    seg = rng.normal(size=(4, 8)).astype(np.float32)
    seg /= np.linalg.norm(seg, axis=1, keepdims=True)
    labels = np.stack([seg[0], -seg[0]])  # the document's text says label 0
    spans = [(i * 10, i * 10 + 9) for i in range(4)]
    raw, p = C.zero_shot_scores(seg, spans, labels, "single")
    title = np.array([0.2, 0.9], np.float32)  # its title says label 1
    raw_t, p_t = C.zero_shot_scores(seg, spans, labels, "single", title)
    np.testing.assert_allclose(raw_t, raw + C.TITLE_WEIGHT * title, rtol=1e-6)
    np.testing.assert_allclose(p_t, C._softmax(raw_t / C.TITLE_TEMPERATURE), rtol=1e-6)
    assert int(np.argmax(p)) == 0 and int(np.argmax(p_t)) == 1 and abs(p_t.sum() - 1) < 1e-6


def test_conditional_logit_fit_recovers_its_weights():
    from longdoc.eval.classify import fit_conditional_logit

    rng = np.random.default_rng(0)
    F = rng.normal(size=(2000, 5, 2))
    theta = np.array([1.0, 3.0])
    y = np.array([rng.choice(5, p=C._softmax(f @ theta)) for f in F])
    np.testing.assert_allclose(fit_conditional_logit(F, y), theta, rtol=0.15)


def test_cli_title_decides_and_is_shown_first(tmp_path, tiny_model_dir):
    """The body says "lease" over and over, the title says SERVICES AGREEMENT: the title decides, and
    the evidence starts with it (before the title was read, the body's label won)."""
    from longdoc.sources.document import Document
    from longdoc.tasks.ask import Engine

    text = "SERVICES AGREEMENT\n\n" + "lease\n\n" * 10
    doc = tmp_path / "contract.txt"
    doc.write_text(text, encoding="utf-8")
    engine = Engine(model=str(tiny_model_dir), use_cache=False)
    labels = C.parse_labels("services,lease")
    p = engine.passages(Document(str(doc), text, "text"))
    body = C.zero_shot_scores(p.vectors, p.spans, engine.question_vectors(["services", "lease"]), "single")[1]
    assert int(np.argmax(body)) == 1  # the whole document alone says lease
    base = ["classify", str(doc), "--labels", "services,lease", "--model", str(tiny_model_dir)]
    res = CliRunner().invoke(cli, base + ["--json"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.output)[0]
    assert rec["label"] == "services" and len(rec["evidence"]) == 2  # the title, then the one segment
    first = rec["evidence"][0]
    assert (first["char_start"], first["char_end"], first["line_start"], first["text"]) == (0, 18, 1, "SERVICES AGREEMENT")
    assert first["score"] == pytest.approx(1.0, abs=1e-3)  # "SERVICES AGREEMENT" against "services agreement"
    res = CliRunner().invoke(cli, base + ["--evidence", "1"])
    assert res.output == f"{doc}\tservices\t{rec['score']:.3f}\tl.1\n"
    # an inventory does not read the title
    res = CliRunner().invoke(cli, base + ["--multi", "--json"])
    assert all(e["text"] != "SERVICES AGREEMENT" for x in json.loads(res.output)[0]["labels"] for e in x["evidence"])
    assert C.classify(Document(str(doc), text, "text"), labels, engine=engine).best.label == "services"
    # --no-title (labels that are not kinds of document): the whole document alone, as before
    res = CliRunner().invoke(cli, base + ["--json", "--no-title"])
    rec = json.loads(res.output)[0]
    assert rec["label"] == "lease" and all(e["text"] != "SERVICES AGREEMENT" for e in rec["evidence"])
    assert rec["score"] == pytest.approx(float(body[1]), abs=1e-4)


def test_no_title_scores_the_whole_document_as_before(files, tiny_model_dir):
    from longdoc.tasks.ask import Engine

    engine = Engine(model=str(tiny_model_dir), use_cache=False)
    doc = engine.load(files[1])  # LEASE: no "... Agreement" in it
    assert C.find_title(doc.text) is None
    labels = C.parse_labels("lease,employment")
    p = engine.passages(doc)
    raw = C.zero_shot_scores(p.vectors, p.spans, engine.question_vectors(["lease", "employment"]), "single")[0]
    r = C.classify(doc, labels, engine=engine)
    np.testing.assert_allclose([s.score for s in r.labels], C._softmax(raw / C.SINGLE_TEMPERATURE), rtol=1e-5)


def test_head_round_trips_through_safetensors(tmp_path):
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(1, 0.3, (6, 4)), rng.normal(-1, 0.3, (6, 4))]).astype(np.float32)
    y = np.array([0] * 6 + [1] * 6)
    W, b = C.fit_logistic(X, y, 2)
    assert (np.argmax(X @ W.T + b, 1) == y).all()
    assert C.cross_validated_accuracy(X, y, 2) == 1.0
    head = C.Head(["a", "b"], W, b, model="m", cv_accuracy=1.0)
    path = tmp_path / "head.safetensors"
    head.save(path)
    assert path.read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle
    back = C.Head.load(path)
    assert back.labels == ["a", "b"] and back.model == "m" and back.cv_accuracy == 1.0
    np.testing.assert_array_equal(back.weight, W)
    np.testing.assert_array_equal(back.bias, b)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(LongdocError):
        C.Head.load(bad)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077], ids=["022", "002", "077"])
def test_head_file_gets_the_mode_of_a_new_file(tmp_path, umask):
    """Heads were written 0600 whatever the umask (safetensors renames a 0600 temp file)."""
    import os
    import stat

    head = C.Head(["a", "b"], np.eye(2, 4, dtype=np.float32), np.zeros(2, np.float32))
    path = tmp_path / "head.safetensors"
    path.write_bytes(b"an older head")
    os.chmod(path, 0o600)
    old = os.umask(umask)
    try:
        head.save(path)  # over an existing file, as a retrained head is
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert C.Head.load(path).labels == ["a", "b"]
    assert os.listdir(tmp_path) == ["head.safetensors"]  # no temp file left beside it


def test_cli_jsonl_one_record_per_file_in_order(files, tiny_model_dir):
    args = ["classify", *files, "--labels", "nondisclosure agreement,lease,employment", "--model",
            str(tiny_model_dir), "--jsonl"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    recs = [json.loads(line) for line in res.output.splitlines()]
    assert [r["path"] for r in recs] == files  # the order given, not sorted
    for r in recs:
        assert r["label"] in {"nondisclosure agreement", "lease", "employment"}
        assert list(r["scores"]) == ["nondisclosure agreement", "lease", "employment"]
        assert abs(sum(r["scores"].values()) - 1) < 1e-3 and r["score"] == max(r["scores"].values())
        assert 1 <= len(r["evidence"]) <= 3
        ev = r["evidence"][0]
        text = open(r["path"], encoding="utf-8").read()
        assert text[ev["char_start"]:ev["char_end"]] == ev["text"] and ev["line_start"] >= 1
    again = CliRunner().invoke(cli, args)
    assert again.output == res.output  # deterministic


def test_cli_preset_inventory_and_plain(files, tiny_model_dir):
    res = CliRunner().invoke(cli, ["classify", files[0], "--preset", "cuad-clauses", "--model", str(tiny_model_dir),
                                   "--json"])
    assert res.exit_code in (0, 1), res.output
    rec = json.loads(res.output)[0]
    assert len(rec["scores"]) == 41 and all(0 <= v <= 1 for v in rec["scores"].values())
    assert {x["label"] for x in rec["labels"]} == {k for k, v in rec["scores"].items() if v >= 0.5}
    assert res.exit_code == (0 if rec["labels"] else 1)
    res = CliRunner().invoke(cli, ["classify", files[1], "--labels", "x,y", "--model", str(tiny_model_dir)])
    assert res.exit_code == 0 and res.output.startswith(files[1] + "\t")


def test_cli_train_and_use_head(tmp_path, tiny_model_dir):
    root = tmp_path / "train"
    for label, text in (("nda", NDA), ("lease", LEASE)):
        (root / label).mkdir(parents=True)
        for i in range(2):
            (root / label / f"{i}.txt").write_text(text + f"\nCopy {i}.\n", encoding="utf-8")
    out = tmp_path / "head.safetensors"
    res = CliRunner().invoke(cli, ["classify", "train", str(root), "--out", str(out), "--model",
                                   str(tiny_model_dir), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["labels"] == ["lease", "nda"] and info["documents"] == 4 and 0 <= info["cv_accuracy"] <= 1
    doc = tmp_path / "x.txt"
    doc.write_text(NDA, encoding="utf-8")
    res = CliRunner().invoke(cli, ["classify", str(doc), "--head", str(out), "--model", str(tiny_model_dir), "--jsonl"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["label"] == "nda"  # the training documents themselves are separable
    assert "trained with another model" not in res.output


def test_head_used_with_other_settings_warns(tmp_path, tiny_model_dir, capfd):
    """A head records the model and settings it was fitted with; vectors of the same size made with
    another --window still differ, so using it there says so on stderr (and still classifies)."""
    root = tmp_path / "train"
    for label, text in (("nda", NDA), ("lease", LEASE)):
        (root / label).mkdir(parents=True)
        (root / label / "0.txt").write_text(text, encoding="utf-8")
    out = tmp_path / "head.safetensors"
    with pytest.raises(SystemExit) as e:
        main(["classify", "train", str(root), "--out", str(out), "--model", str(tiny_model_dir)])
    assert e.value.code in (0, None)
    doc = tmp_path / "x.txt"
    doc.write_text(NDA, encoding="utf-8")
    capfd.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["classify", str(doc), "--head", str(out), "--model", str(tiny_model_dir), "--window", "4"])
    captured = capfd.readouterr()
    assert e.value.code == 0 and "nda" in captured.out
    assert "trained with another model or settings" in captured.err


def test_cli_multi_with_head_shows_every_label_over_the_threshold(tmp_path, tiny_model_dir):
    """--multi --head used to show the head's one best label, in the single-label format. A head whose
    rows point at the first and the last passage of a document names both of them under --multi."""
    from longdoc.tasks.ask import Engine

    doc = tmp_path / "both.txt"
    doc.write_text(NDA + "\n" + LEASE, encoding="utf-8")
    engine = Engine(model=str(tiny_model_dir), use_cache=False)
    seg = engine.passages(engine.load(str(doc))).vectors
    assert len(seg) >= 2
    head = C.Head(["nda", "lease", "other"], 50 * np.stack([seg[0], seg[-1], -seg.mean(0)]), np.zeros(3, np.float32))
    path = tmp_path / "head.safetensors"
    head.save(path)
    base = ["classify", str(doc), "--head", str(path), "--model", str(tiny_model_dir)]
    res = CliRunner().invoke(cli, base + ["--multi", "--json"])
    assert res.exit_code == 0, res.output
    rec = json.loads(res.output)[0]
    assert [x["label"] for x in rec["labels"]] == ["nda", "lease"]
    assert {k for k, v in rec["scores"].items() if v >= C.PRESENT} == {"nda", "lease"}
    assert all(x["evidence"] for x in rec["labels"])
    res = CliRunner().invoke(cli, base + ["--multi"])
    assert [line.split("\t")[1] for line in res.output.splitlines()] == ["nda", "lease"]
    res = CliRunner().invoke(cli, base + ["--jsonl"])  # without --multi: still the one best label
    assert res.exit_code == 0 and "labels" not in json.loads(res.output)


@pytest.mark.parametrize("args", [
    ["classify", "{f}"],  # no labels
    ["classify", "{f}", "--labels", "a,b", "--preset", "cuad-types"],  # two label sources
    ["classify", "{missing}", "--labels", "a,b"],
    ["classify", "{f}", "--labels", "only"],  # one label cannot be a choice
    ["classify", "{f}", "--labels-file", "{missing}"],
    ["classify", "{f}", "--head", "{f}"],  # not a head
    ["classify", "train", "{dir}", "--out", "{dir}/h.safetensors"],  # no labelled folders
    ["classify", "train", "{train}", "--out", "{dir}/no/such/folder/h.safetensors"],  # refused before training
    ["classify", "{f}", "--head", "{badjson}"],  # labels metadata that is not JSON
    ["classify", "{f}", "--head", "{nolabels}"],  # no labels at all
    ["classify", "{f}", "--head", "{nan}"],  # weights that are not finite
])
def test_cli_bad_input_exit_2_one_line(args, files, tmp_path, tiny_model_dir, capfd):
    from safetensors.numpy import save_file

    dim = json.loads((tiny_model_dir / "config.json").read_text())["hidden_size"]
    train = tmp_path / "train"
    for label in ("nda", "lease"):
        (train / label).mkdir(parents=True)
        (train / label / "a.txt").write_text(f"A {label} agreement between the parties.\n")
    heads = {"train": str(train)}
    for name, meta, w in (("badjson", {"format": "longdoc-head-v1", "labels": "[not json"}, 1.0),
                          ("nolabels", {"format": "longdoc-head-v1"}, 1.0),
                          ("nan", {"format": "longdoc-head-v1", "labels": '["a", "b"]'}, np.nan)):
        heads[name] = str(tmp_path / f"{name}.safetensors")
        save_file({"weight": np.full((2, dim), w, np.float32), "bias": np.zeros(2, np.float32)}, heads[name],
                  metadata=meta)
    subst = {"f": files[0], "missing": str(tmp_path / "missing.txt"), "dir": str(tmp_path), **heads}
    argv = [a.format(**subst) for a in args] + ["--model", str(tiny_model_dir)]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capfd.readouterr().err
    assert err.startswith("longdoc: error: ") and err.count("\n") == 1


def test_cli_json_error_on_stderr(files, tmp_path, tiny_model_dir, capfd):
    with pytest.raises(SystemExit) as e:
        main(["classify", str(tmp_path / "nope.txt"), "--labels", "a,b", "--jsonl", "--model", str(tiny_model_dir)])
    assert e.value.code == 2
    out, err = capfd.readouterr()
    assert out == "" and json.loads(err)["error"].endswith("no such file")
