"""`ssvd preview`: the self-contained page of a corpus (pipeline/corpus/preview.py).

Uses the session corpus `corpus_dir` (tests/pipeline/corpus/conftest.py: a small real `ssvd run`),
and small hand-made corpora for what a real run does not produce (hostile text, local images).
"""
from __future__ import annotations

import base64
import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from pipeline.corpus import preview
from pipeline.corpus.preview import write_preview
from pipeline.core.shards import iter_rows
from pipeline.core.types import DIALOGUE_SCHEMA, Dialogue, ImageRef, Turn, dialogue_to_row

EVIL = "<script>alert('x')</script>"


class Node:
    def __init__(self, tag, attrs, parent):
        self.tag, self.attrs, self.parent, self.children, self.text = tag, dict(attrs), parent, [], ""

    def find_all(self, pred):
        for c in self.children:
            if pred(c):
                yield c
            yield from c.find_all(pred)

    def classes(self):
        return (self.attrs.get("class") or "").split()

    def all_text(self):
        return self.text + "".join(c.all_text() for c in self.children)


class Tree(HTMLParser):
    """A small DOM from the stdlib parser (the page is well-formed: every element is closed)."""

    VOID = {"meta", "br", "img", "input", "link", "hr", "source"}

    def __init__(self, html):
        super().__init__(convert_charrefs=True)
        self.root = self.cur = Node("#root", {}, None)
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        n = Node(tag, attrs, self.cur)
        self.cur.children.append(n)
        if tag not in self.VOID:
            self.cur = n

    def handle_endtag(self, tag):
        n = self.cur
        while n is not None and n.tag != tag:
            n = n.parent
        if n is not None and n.parent is not None:
            self.cur = n.parent

    def handle_data(self, data):
        self.cur.text += data


def tag(name, cls=None):
    return lambda n: n.tag == name and (cls is None or cls in n.classes())


def render(root: Path, out: Path, **kw) -> tuple[str, Tree, dict]:
    summary = write_preview(root, out, **kw)
    html = out.read_text(encoding="utf-8")
    return html, Tree(html), summary


def speech_splits(corpus: Path) -> list[dict]:
    m = json.loads((corpus / "manifest.json").read_text())
    return [s for s in m["splits"] if s["kind"] == "speech" and (corpus / s["name"] / "speech").is_dir()]


def first_ok(corpus: Path, split: str, stage: str, n: int, columns=None) -> list[dict]:
    rows = []
    for p in sorted((corpus / split / stage).glob(f"{stage}-*.parquet")):
        for r in iter_rows(p, columns=columns):
            if r["status"] == "ok" and len(rows) < n:
                rows.append(r)
    return rows


def sample_node(tree: Tree, split: str, sample_id: str) -> Node:
    sec = next(tree.root.find_all(lambda n: n.tag == "section" and n.attrs.get("data-split") == split))
    return next(sec.find_all(lambda n: "sample" in n.classes() and n.attrs.get("data-id") == sample_id))


def test_page_structure(corpus_dir, tmp_path):
    m = json.loads((corpus_dir / "manifest.json").read_text())
    html, tree, summary = render(corpus_dir, tmp_path / "page.html", per_split=2)
    assert summary["out"] == str(tmp_path / "page.html") and summary["bytes"] == len(html.encode("utf-8"))
    assert summary["splits"] == len(m["splits"])
    h1 = next(tree.root.find_all(tag("h1")))
    assert h1.all_text().strip() == m["name"]
    assert m["config_hash"] in html
    for key in m.get("models") or {}:
        assert f"<b>{key}</b>" in html
    sections = list(tree.root.find_all(tag("section")))
    assert [s.attrs["data-split"] for s in sections] == [s["name"] for s in m["splits"]]
    total = 0
    for entry, sec in zip(m["splits"], sections):
        samples = list(sec.find_all(lambda n: n.tag == "div" and "sample" in n.classes()))
        has_speech = entry["kind"] == "speech" and list((corpus_dir / entry["name"] / "speech").glob("speech-*.parquet"))
        ok = first_ok(corpus_dir, entry["name"], "speech" if has_speech else "dialogues", 2, ["id", "status"])
        assert len(samples) == len(ok), entry["name"]
        total += len(samples)
        for s in samples:
            if has_speech:
                assert "speech" in s.classes() and len(list(s.find_all(tag("audio")))) == 1
                assert list(s.find_all(tag("span", "w"))), "a speech sample shows its words"
                assert list(s.find_all(tag("code", "voice-assistant"))) and list(s.find_all(tag("code", "voice-user")))
            else:
                assert "text" in s.classes() and not list(s.find_all(tag("audio")))
                assert list(s.find_all(tag("div", "text"))), "a text sample shows its transcript"
    assert summary["samples"] == total > 0
    # self-contained: every resource is inline, nothing is fetched
    for n in tree.root.find_all(lambda n: "src" in n.attrs or n.tag == "link"):
        assert n.tag != "link" and n.attrs["src"].startswith("data:"), (n.tag, n.attrs.get("src", "")[:40])
    assert len(list(tree.root.find_all(tag("script")))) == 1 and len(list(tree.root.find_all(tag("style")))) == 1
    assert "default-src 'none'" in html  # the CSP forbids any network access


def test_words_and_instructions_match_the_rows(corpus_dir, tmp_path):
    splits = speech_splits(corpus_dir)
    assert splits, "the corpus fixture has a speech split"
    _, tree, _ = render(corpus_dir, tmp_path / "page.html", per_split=2)
    for s in splits:
        for row in first_ok(corpus_dir, s["name"], "speech", 2):
            node = sample_node(tree, s["name"], row["id"])
            spans = list(node.find_all(tag("span", "w")))
            got = sorted((float(w.attrs["data-start"]), float(w.attrs["data-end"]), w.all_text()) for w in spans)
            want = sorted((w["start_s"], w["end_s"], w["word"]) for w in row["words"])
            assert got == want  # exact: the page's seconds are the row's floats
            turns = list(node.find_all(tag("div", "turn")))
            assert len(turns) == len(row["turns"])
            dialogue = next(d for d in first_ok(corpus_dir, s["name"], "dialogues", 10**6)
                            if d["id"] == row["dialogue_id"])
            for t_node, span, dturn in zip(turns, row["turns"], dialogue["turns"]):
                assert span["role"] in t_node.classes()
                assert float(t_node.attrs["data-start"]) == span["start_s"]
                got = [(float(w.attrs["data-start"]), w.all_text()) for w in t_node.find_all(tag("span", "w"))]
                assert all(span["role"] in w.classes() for w in t_node.find_all(tag("span", "w")))
                assert got == [(w["start_s"], w["word"]) for w in row["words"] if w["speaker"] == span["role"]
                               and span["start_s"] <= (w["start_s"] + w["end_s"]) / 2 <= span["end_s"]]
                ins = list(t_node.find_all(tag("span", "ins")))
                assert [i.all_text() for i in ins] == ([dturn["instruction"]] if dturn["instruction"] else [])
            meta = node.all_text()
            assert row["voice_assistant"] in meta and row["voice_user"] in meta


def test_audio_is_the_rows_stereo_flac(corpus_dir, tmp_path):
    s = speech_splits(corpus_dir)[0]
    _, tree, _ = render(corpus_dir, tmp_path / "page.html", per_split=1, splits=[s["name"]])
    row = first_ok(corpus_dir, s["name"], "speech", 1)[0]
    audio = next(sample_node(tree, s["name"], row["id"]).find_all(tag("audio")))
    prefix = "data:audio/flac;base64,"
    assert audio.attrs["src"].startswith(prefix)
    data = base64.b64decode(audio.attrs["src"][len(prefix):])
    assert data == row["audio_flac"]
    wave, sr = sf.read(io.BytesIO(data), always_2d=True)
    assert sr == row["sample_rate_hz"] and wave.shape[1] == 2
    assert wave.shape[0] / sr == pytest.approx(row["duration_s"], abs=1e-6)


def test_splits_filter_and_per_split(corpus_dir, tmp_path):
    m = json.loads((corpus_dir / "manifest.json").read_text())
    name = m["splits"][-1]["name"]
    _, tree, summary = render(corpus_dir, tmp_path / "one.html", per_split=1, splits=[name])
    assert [s.attrs["data-split"] for s in tree.root.find_all(tag("section"))] == [name]
    assert summary["samples"] <= 1
    _, tree, summary = render(corpus_dir, tmp_path / "none.html", per_split=0)
    assert summary["samples"] == 0 and summary["splits"] == len(m["splits"])
    with pytest.raises(ValueError, match="no-such-split"):
        write_preview(corpus_dir, tmp_path / "x.html", splits=["no-such-split"])
    with pytest.raises(FileNotFoundError, match="not a corpus"):
        write_preview(tmp_path, tmp_path / "x.html")


def test_reads_only_the_first_rows(corpus_dir, tmp_path, monkeypatch):
    """Rows are streamed: no speech row past the first `per_split` ok ones is read."""
    s = speech_splits(corpus_dir)[0]
    seen: dict[str, int] = {}
    real = preview.iter_rows

    def counting(path, columns=None, batch_rows=256):
        for r in real(path, columns=columns, batch_rows=batch_rows):
            seen[Path(path).parent.name] = seen.get(Path(path).parent.name, 0) + 1
            yield r

    monkeypatch.setattr(preview, "iter_rows", counting)
    write_preview(corpus_dir, tmp_path / "page.html", per_split=1, splits=[s["name"]])
    statuses = [r["status"] for p in sorted((corpus_dir / s["name"] / "speech").glob("speech-*.parquet"))
                for r in iter_rows(p, columns=["status"])]
    assert seen["speech"] == statuses.index("ok") + 1


# --- hand-made corpora: hostile text, local images ---

PNG_1PX = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg==")


def hand_corpus(root: Path, dialogues: list[Dialogue], *, name: str = "hand", extra_splits=()) -> Path:
    """A corpus with one text split `t` holding these dialogue rows (no engine, no speech)."""
    d = root / "t" / "dialogues"
    d.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([dialogue_to_row(x) for x in dialogues], schema=DIALOGUE_SCHEMA),
                   d / "dialogues-00000.parquet")
    splits = [{"name": "t", "role": "split", "kind": "text", "weight": 1, "source": "docci", "instruction": "PROP",
               "benchmark": None, "state": "complete", "rows": len(dialogues),
               "stages": [{"stage": "dialogues", "dir": "t/dialogues", "state": "complete"}]}, *extra_splits]
    (root / "manifest.json").write_text(json.dumps({
        "format": "ssvd-corpus/1", "name": name, "config_hash": "feedfacecafebeef", "state": "complete",
        "models": {"dialogue": {"user": {"name": EVIL}}, "voices": {"assistant_voice": EVIL}}, "splits": splits}))
    return root


def test_untrusted_text_is_escaped(corpus_dir, tmp_path):
    """Captions, model output and voice names are data: never markup, whatever they hold."""
    dlg = Dialogue(id="d<1>", caption_id="c", source="docci", instruction="PROP", seed=1, caption=EVIL,
                   turns=[Turn("user", "what is <b>this</b>?", "PROP"), Turn("assistant", EVIL + " & more", "PROP")],
                   image=ImageRef(url="javascript:alert(1)"))
    root = hand_corpus(tmp_path / "c", [dlg], name=EVIL)
    # and a speech split: a copy of the fixture's first one with hostile voice names, words and caption
    s = speech_splits(corpus_dir)[0]
    for stage in ("dialogues", "speech"):
        for p in sorted((corpus_dir / s["name"] / stage).glob(f"{stage}-*.parquet")):
            rows = pq.read_table(p).to_pylist()
            for r in rows:
                if stage == "speech":
                    r["voice_assistant"] = r["voice_user"] = EVIL
                    r["words"] = [dict(w, word=EVIL) for w in r["words"]]
                else:
                    r["caption"] = EVIL
            (root / "sp" / stage).mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(p)), root / "sp" / stage / p.name)
    m = json.loads((root / "manifest.json").read_text())
    m["splits"].append({"name": "sp", "role": "split", "kind": "speech", "weight": 1, "state": "complete",
                        "stages": [{"stage": st, "dir": f"sp/{st}"} for st in ("dialogues", "speech")]})
    (root / "manifest.json").write_text(json.dumps(m))

    html, tree, summary = render(root, tmp_path / "page.html")
    assert summary["samples"] >= 2
    assert "<script>alert" not in html and "<b>this</b>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in html and "&lt;b&gt;this&lt;/b&gt;" in html
    assert len(list(tree.root.find_all(tag("script")))) == 1  # the page's own, nothing injected
    assert not [b for b in tree.root.find_all(tag("b")) if b.all_text() == "this"]
    assert next(tree.root.find_all(tag("h1"))).all_text().strip() == EVIL
    sp = next(tree.root.find_all(lambda n: n.tag == "section" and n.attrs.get("data-split") == "sp"))
    words = list(sp.find_all(tag("span", "w")))
    assert words and all(w.all_text() == EVIL for w in words)
    assert all(c.all_text() == EVIL for c in sp.find_all(lambda n: n.tag == "code" and "voice-user" in n.classes()))
    # a javascript: URL is shown as text, never made a link
    assert "javascript:alert(1)" in html
    assert not [a for a in tree.root.find_all(tag("a")) if "javascript" in a.attrs.get("href", "")]


def test_images_local_embedded_remote_shown(tmp_path):
    img = tmp_path / "img.png"
    img.write_bytes(PNG_1PX)
    (tmp_path / "c").mkdir()
    shutil.copy(img, tmp_path / "c" / "rel.png")
    rows = [Dialogue(id="local", caption_id="c1", source="docci", instruction="PROP", seed=1, caption="a",
                     turns=[Turn("user", "q", "PROP")], image=ImageRef(url="https://example.com/a.jpg", path=str(img))),
            Dialogue(id="relative", caption_id="c2", source="docci", instruction="PROP", seed=2, caption="b",
                     turns=[Turn("user", "q", "PROP")], image=ImageRef(path="rel.png")),
            Dialogue(id="from-input", caption_id="c4", source="docci", instruction="PROP", seed=4, caption="d",
                     turns=[Turn("user", "q", "PROP")], image=ImageRef(path="images/in.png")),
            Dialogue(id="remote", caption_id="c3", source="docci", instruction="PROP", seed=3, caption="c",
                     turns=[Turn("user", "q", "PROP")], image=ImageRef(url="https://example.com/b.jpg",
                                                                        path="/nonexistent/b.jpg"))]
    root = hand_corpus(tmp_path / "c", rows)
    (tmp_path / "input" / "images").mkdir(parents=True)  # a path relative to the split's input directory
    shutil.copy(img, tmp_path / "input" / "images" / "in.png")
    m = json.loads((root / "manifest.json").read_text())
    m["splits"][0]["input"] = str(tmp_path / "input")
    (root / "manifest.json").write_text(json.dumps(m))
    _, tree, _ = render(root, tmp_path / "page.html", per_split=4)
    want = "data:image/png;base64," + base64.b64encode(PNG_1PX).decode()
    for sid in ("local", "relative", "from-input"):
        imgs = list(sample_node(tree, "t", sid).find_all(tag("img")))
        assert [i.attrs["src"] for i in imgs] == [want]
    remote = sample_node(tree, "t", "remote")
    assert not list(remote.find_all(tag("img")))
    assert [a.attrs["href"] for a in remote.find_all(tag("a"))] == ["https://example.com/b.jpg"]
    assert "/nonexistent/b.jpg" in remote.all_text()


def test_text_rows_show_each_turns_instruction(tmp_path):
    dlg = Dialogue(id="d", caption_id="c", source="docci", instruction="COMB", seed=1, caption="cap",
                   turns=[Turn("user", "u1", "COMB"), Turn("assistant", "a1", "COMB"),
                          Turn("user", "u2", "LOC"), Turn("assistant", "a2", "LOC")])
    rejected = Dialogue(id="r", caption_id="c", source="docci", instruction="COMB", seed=2, status="rejected")
    root = hand_corpus(tmp_path / "c", [rejected, dlg])
    _, tree, summary = render(root, tmp_path / "page.html")
    assert summary["samples"] == 1  # ok rows only
    turns = list(sample_node(tree, "t", "d").find_all(tag("div", "turn")))
    assert [(t.classes()[1], next(t.find_all(tag("div", "text"))).all_text(), next(t.find_all(tag("span", "ins"))).all_text())
            for t in turns] == [("user", "u1", "COMB"), ("assistant", "a1", "COMB"), ("user", "u2", "LOC"),
                                ("assistant", "a2", "LOC")]
