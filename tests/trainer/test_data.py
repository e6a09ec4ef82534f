"""trainer/data.py: batches (delays, padding, weights, masks), sampling by weight, eval hold-out, exact resume."""
from __future__ import annotations

import json
from collections import Counter, defaultdict

import numpy as np
import pytest
import torch

from augment.rows import RowStream
from tests.augment import speech_row, text_row, write_corpus
from trainer.collate import MOSHI_DELAYS, collate_speech, collate_text, crop_row
from trainer.config import DataConfig
from trainer.data import CorpusLoader

# --- collation on hand-made rows -------------------------------------------------------------------


def test_collate_speech_delays_padding_weights_masks_exactly():
    r1 = {"id": "a", "text_tokens": np.array([10, 3, 0, 11]), "audio_codes": np.arange(1, 17).reshape(4, 4),
          "visual_start_frame": 1, "visual_end_frame": 3}
    r2 = {"id": "b", "text_tokens": np.array([3, -1]), "audio_codes": np.array([[21, 22], [23, 24], [25, 26], [27, 28]])}
    out = collate_speech([r1, r2], delays=(0, 0, 1, 0, 2), text_pad_ids=(3, 0), text_pad_weight=0.25)
    Z = -1
    # T = the longest row (no frame past it); a codebook delayed by d loses its last d frames (as in Moshi)
    assert out["text"].tolist() == [[10, 3, 0, 11], [3, Z, Z, Z]]
    assert out["text_weight"].tolist() == [[1, .25, .25, 1], [.25, 0, 0, 0]]
    assert out["audio"].tolist() == [
        [[1, 2, 3, 4], [Z, 5, 6, 7], [9, 10, 11, 12], [Z, Z, 13, 14]],
        [[21, 22, Z, Z], [Z, 23, Z, Z], [25, 26, Z, Z], [Z, Z, Z, Z]]]
    np.testing.assert_array_equal(out["audio_mask"], out["audio"] != Z)
    assert out["visual"].tolist() == [[False, True, True, False], [True, True, False, False]]
    assert out["lengths"].tolist() == [4, 2]
    assert out["text"].dtype == np.int64 and out["audio"].dtype == np.int64 and out["text_weight"].dtype == np.float32


def test_collate_speech_moshi_delays_on_16_codebooks():
    r = speech_row("x", (4, 5))
    out = collate_speech([r], delays=MOSHI_DELAYS)
    n = r["num_frames"]
    assert out["audio"].shape == (1, 16, n)  # no tail frame of zero-token inputs
    for k in range(16):
        d = MOSHI_DELAYS[1 + k]
        assert d == (0 if k in (0, 8) else 1)
        np.testing.assert_array_equal(out["audio"][0, k, d:], r["audio_codes"][k][:n - d])
        assert (out["audio"][0, k, :d] == -1).all()
        assert out["audio_mask"][0, k].sum() == n - d and not out["audio_mask"][0, k, :d].any()
    np.testing.assert_array_equal(out["text"][0], r["text_tokens"])


def test_collate_speech_rejects_codes_of_another_length():
    r = {"id": "bad", "split": "s", "text_tokens": np.zeros(3), "audio_codes": np.zeros((16, 2))}
    with pytest.raises(ValueError, match="'bad'.*split 's'"):
        collate_speech([r])


def test_collate_text_right_pads_with_the_zero_token():
    out = collate_text([{"text_tokens": np.array([5, 6, 7])}, {"text_tokens": np.array([8])}])
    assert out["text"].tolist() == [[5, 6, 7], [8, -1, -1]]
    assert out["text_weight"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert out["lengths"].tolist() == [3, 1]


def test_crop_at_a_turn_boundary_or_hard():
    r = {"text_tokens": np.arange(25), "audio_codes": np.zeros((16, 25)), "turn_start_frames": np.array([3, 8, 15, 20]),
         "turn_roles": ["user", "assistant", "user", "assistant"], "visual_start_frame": 10, "visual_end_frame": 25}
    assert crop_row(r, 30) == (r, False)
    c, cut = crop_row(r, 18)
    assert cut and len(c["text_tokens"]) == 15 and c["audio_codes"].shape == (16, 15)
    assert c["turn_start_frames"].tolist() == [3, 8] and c["turn_roles"] == ["user", "assistant"]
    assert (c["visual_start_frame"], c["visual_end_frame"], c["num_frames"]) == (10, 15, 15)
    c, _ = crop_row(r, 9)
    assert len(c["text_tokens"]) == 8 and (c["visual_start_frame"], c["visual_end_frame"]) == (8, 8)
    c, _ = crop_row({**r, "turn_start_frames": np.array([3, 20])}, 18)  # turn start 3 < half: hard crop
    assert len(c["text_tokens"]) == 18 and c["turn_start_frames"].tolist() == [3]


# --- the loader on a hand-made corpus --------------------------------------------------------------

def _corpus(root):
    sa0 = [speech_row("sa-rej", (3,), status="rejected")] + [speech_row(f"sa{i}", (3 + i % 3, 4, 2 + i % 2, 5), tag=1)
                                                             for i in range(6)]
    sa1 = [speech_row(f"sa{i}", (5, 3 + i % 4), tag=1) for i in range(6, 11)]
    sb = [speech_row(f"sb{i}", (4, 4, 4), tag=2) for i in range(5)]
    ta0 = [text_row(f"ta{i}", 5 + i, tag=3) for i in range(4)]
    ta1 = [text_row(f"ta{i}", 3 + i, tag=3) for i in range(4, 7)]
    tb = [text_row(f"tb{i}", 4, tag=4) for i in range(4)]
    gen = [speech_row(f"gen{i}", (2 + i, 3, 2), tag=5, image={"url": None, "path": None, "sha256": None})
           for i in range(6)]
    return write_corpus(root, {
        "sa": {"kind": "speech", "weight": 3, "shards": [sa0, sa1]},
        "sb": {"kind": "speech", "weight": 1, "shards": [sb]},
        "ta": {"kind": "text", "weight": 2, "shards": [ta0, ta1]},
        "tb": {"kind": "text", "weight": 1, "shards": [tb]},
        "generic": {"kind": "speech", "weight": None, "role": "generic", "shards": [gen]},
    })


TRAIN_IDS = {"sa": {f"sa{i}" for i in range(1, 11)}, "sb": {f"sb{i}" for i in range(1, 5)},
             "ta": {f"ta{i}" for i in range(1, 7)}, "tb": {f"tb{i}" for i in range(1, 4)}}
EVAL_IDS = {"sa": ["sa0"], "sb": ["sb0"], "ta": ["ta0"], "tb": ["tb0"]}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return _corpus(tmp_path_factory.mktemp("handmade"))


def _cfg(**kw):
    base = dict(batch_size=3, p_concat=0.5, image_size=8, eval_rows=1, shuffle_buffer=3, seed=5, max_frames=200)
    return DataConfig(**{**base, **kw})


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
        else:
            assert a[k] == b[k], k


def test_batches_are_one_kind_with_the_documented_shapes(corpus):
    loader = CorpusLoader(corpus, _cfg())
    kinds = set()
    for _ in range(12):
        b = next(loader)
        kinds.add(b["kind"])
        n = len(b["ids"])
        assert n == 3 and len(b["splits"]) == 3 and b["image"].shape == (3, 3, 8, 8) and b["image"].dtype == torch.float32
        if b["kind"] == "speech":
            assert set(b["splits"]) <= {"sa", "sb"}
            t = b["text"].shape[1]
            assert b["audio"].shape == (3, 16, t) and b["audio_mask"].shape == (3, 16, t)
            assert b["text_weight"].shape == b["visual"].shape == (3, t) and b["visual"].dtype == torch.bool
            assert t == int(b["lengths"].max())
            assert b["delays"] == MOSHI_DELAYS
            assert ((b["audio"] >= 0) == b["audio_mask"]).all()
        else:
            assert set(b["splits"]) <= {"ta", "tb"} and "audio" not in b
            assert b["text_weight"].tolist() == [[1.0] * int(n_) + [0.0] * (b["text"].shape[1] - int(n_))
                                                 for n_ in b["lengths"]]
    assert kinds == {"speech", "text"}
    assert loader.stats["images_missing"] == 36 and loader.stats["augmented"] > 0


def test_speech_rows_arrive_delayed_and_weighted(corpus):
    # 100003 = frame 3 of the tag-10 rows' text stream (tests.augment.speech_row): weighted as padding
    loader = CorpusLoader(corpus, _cfg(p_concat=0.0, text_pad_weight=0.5, text_pad_ids=(10003, 20005)))
    seen = 0
    for _ in range(10):
        b = next(loader)
        if b["kind"] != "speech":
            continue
        for i, rid in enumerate(b["ids"]):
            tag, j = (1 if rid.startswith("sa") else 2), int(rid[2:])
            turns = ((3 + j % 3, 4, 2 + j % 2, 5) if j < 6 else (5, 3 + j % 4)) if tag == 1 else (4, 4, 4)
            r = speech_row(rid, turns, tag=tag)
            n = r["num_frames"]
            assert int(b["lengths"][i]) == n
            np.testing.assert_array_equal(b["text"][i, :n].numpy(), r["text_tokens"])
            np.testing.assert_array_equal(b["audio"][i, 0, :n].numpy(), r["audio_codes"][0])
            np.testing.assert_array_equal(b["audio"][i, 1, 1:n].numpy(), r["audio_codes"][1][:n - 1])
            assert b["audio"][i, 1, 0] == -1 and not b["audio_mask"][i, 1, 0]
            assert b["visual"][i, :n].all() and not b["visual"][i, n:].any()
            pad = np.isin(r["text_tokens"], (10003, 20005))
            assert pad.sum() == 1 and b["text_weight"][i, n:].sum() == 0
            assert torch.equal(b["text_weight"][i, :n], torch.from_numpy(np.where(pad, 0.5, 1.0).astype(np.float32)))
            seen += 1
    assert seen > 0


def test_splits_are_sampled_by_weight(corpus):
    loader = CorpusLoader(corpus, _cfg(p_concat=0.0, batch_size=4, image_size=2))
    assert loader.weights == pytest.approx({"sa": 3 / 7, "sb": 1 / 7, "ta": 2 / 7, "tb": 1 / 7})
    c = Counter(s for _ in range(300) for s in next(loader)["splits"])
    tot = sum(c.values())
    for name, w in loader.weights.items():
        assert abs(c[name] / tot - w) < 0.06, (name, c)


def test_weights_override_and_unknown_split(corpus):
    loader = CorpusLoader(corpus, _cfg(splits={"sb": 1, "tb": 0}))
    assert loader.weights == {"sb": 1.0}
    assert all(set(next(loader)["splits"]) == {"sb"} for _ in range(3))
    with pytest.raises(ValueError, match="nope"):
        CorpusLoader(corpus, _cfg(splits={"nope": 1}))


def test_eval_rows_are_held_out_and_served_by_the_eval_loader(corpus):
    loader = CorpusLoader(corpus, _cfg())
    assert loader.eval_ids() == EVAL_IDS, "the first ok rows of each split's first shard (sa-rej is not ok)"
    seen = {i for _ in range(60) for i in next(loader)["ids"]}
    assert seen == set().union(*TRAIN_IDS.values())
    ev = list(CorpusLoader(corpus, _cfg(), split="eval"))
    assert sorted(i for b in ev for i in b["ids"]) == ["sa0", "sb0", "ta0", "tb0"]
    assert all(len(set(b["splits"])) == 1 for b in ev)
    sp = [b for b in ev if b["kind"] == "speech"]
    assert all(b["visual"].sum() == b["lengths"].sum() for b in sp), "no augmentation in eval"


def test_eval_leaves_every_split_a_training_row(tmp_path):
    root = write_corpus(tmp_path, {"one": {"kind": "text", "weight": 1, "shards": [[text_row("only")]]}})
    loader = CorpusLoader(root, _cfg(eval_rows=8))
    assert loader.eval_ids() == {} and next(loader)["ids"] == ["only"] * 3


def test_a_split_without_ok_rows_is_left_out_with_a_warning(tmp_path):
    root = write_corpus(tmp_path, {
        "good": {"kind": "text", "weight": 1, "shards": [[text_row("t1"), text_row("t2")]]},
        "bad": {"kind": "text", "weight": 1, "shards": [[text_row("r1", status="rejected")]]}})
    with pytest.warns(UserWarning, match="'bad'"):
        loader = CorpusLoader(root, _cfg())
    assert loader.weights == {"good": 1.0} and loader.stats["dropped_splits"] == {"bad": "no ok rows"}


def test_speech_splits_of_two_codecs_are_refused(tmp_path):
    """Audio codes of two codecs mean nothing together: the loader names both and the splits, and a text split's
    empty codec or a split left out (data.splits) does not count."""
    def split(prefix, codec, tag):
        return {"kind": "speech", "weight": 1, "shards": [[{**speech_row(f"{prefix}{i}", (4, 4), tag=tag),
                                                            "codec": codec} for i in range(3)]]}
    root = write_corpus(tmp_path, {"a": split("a", "mimi#aaaa", 1), "b": split("b", "random#bbbb", 2),
                                   "t": {"kind": "text", "weight": 1, "shards": [[text_row("t0"), text_row("t1")]]}})
    with pytest.raises(ValueError, match=r"2 codecs \(mimi#aaaa: a \(tokens-00000.parquet\); random#bbbb: b "):
        CorpusLoader(root, _cfg(p_concat=0.0))
    ok = CorpusLoader(root, _cfg(p_concat=0.0, splits={"a": 1, "t": 1}))
    assert ok.codec == "mimi#aaaa" and next(ok)["ids"]


def _run(loader, n):
    return [next(loader) for _ in range(n)]


@pytest.mark.parametrize("shuffle_buffer", [3, 0])
def test_resume_yields_exactly_the_uninterrupted_batches(corpus, shuffle_buffer):
    cfg = _cfg(shuffle_buffer=shuffle_buffer)
    whole = _run(CorpusLoader(corpus, cfg), 7 + 12)
    first = CorpusLoader(corpus, cfg)
    before = _run(first, 7)
    state = json.loads(json.dumps(first.state_dict()))  # JSON-serialisable, as in a checkpoint
    resumed = CorpusLoader(corpus, cfg)
    resumed.load_state_dict(state)
    after = _run(resumed, 12)
    for a, b in zip(before + after, whole):
        _same(a, b)
    assert resumed.stats["samples"] == 19 * 3 and resumed.stats["batches"] == 19
    # every epoch of every split yields each of its training rows exactly once, across the interruption
    seq = defaultdict(list)
    for b in before + after:
        for rid, s in zip(b["ids"], b["splits"]):
            seq[s].append(rid)
    for s, ids in seq.items():
        n = len(TRAIN_IDS[s])
        chunks = [ids[i:i + n] for i in range(0, len(ids), n)]
        for c in chunks:
            assert len(set(c)) == len(c) and set(c) <= TRAIN_IDS[s], (s, c)
        assert all(set(c) == TRAIN_IDS[s] for c in chunks if len(c) == n)
    assert any(len(ids) > len(TRAIN_IDS[s]) for s, ids in seq.items()), "ran past an epoch"


def test_resume_at_every_batch_boundary(corpus):
    cfg = _cfg(batch_size=2)
    whole = _run(CorpusLoader(corpus, cfg), 10)
    for k in range(1, 10):
        a = CorpusLoader(corpus, cfg)
        _run(a, k)
        b = CorpusLoader(corpus, cfg)
        b.load_state_dict(a.state_dict())
        _same(next(b), whole[k])


def test_ranks_read_disjoint_rows(corpus):
    shards = [str(corpus / "sa/tokens/tokens-00000.parquet"), str(corpus / "sa/tokens/tokens-00001.parquet")]
    ids = []
    for rank in (0, 1):
        s = RowStream("sa", shards, seed=0, rank=rank, world_size=2)
        got = []
        while (r := s.take()) is not None:
            got.append(r["id"])
        ids.append(got)
    assert not set(ids[0]) & set(ids[1]) and set(ids[0]) | set(ids[1]) == TRAIN_IDS["sa"] | {"sa0"}
    loaders = [CorpusLoader(corpus, _cfg(), rank=r, world=2) for r in (0, 1)]
    b0, b1 = next(loaders[0]), next(loaders[1])
    assert b0["kind"] == b1["kind"] and b0["splits"] == b1["splits"], "ranks draw the same kinds and splits"


def test_long_rows_are_cropped_to_max_frames(corpus):
    loader = CorpusLoader(corpus, _cfg(max_frames=12, p_concat=1.0, max_text_tokens=4))
    for _ in range(10):
        b = next(loader)
        assert b["text"].shape[1] <= (12 if b["kind"] == "speech" else 4)
    assert loader.stats["cropped"] > 0


def test_augmented_speech_batches_mark_the_visual_frames(corpus):
    loader = CorpusLoader(corpus, _cfg(p_concat=1.0))
    n = 0
    for _ in range(10):
        b = next(loader)
        if b["kind"] == "speech":
            for i in range(len(b["ids"])):
                v = b["visual"][i].nonzero().flatten()
                assert len(v) and v[-1] - v[0] + 1 == len(v), "one contiguous visual segment"
                assert len(v) < b["lengths"][i], "generic prefix and suffix around it"
                n += 1
    assert n and loader.stats["augmented"] == n


def test_data_config_from_dict_and_validation():
    cfg = DataConfig.from_dict({"batch_size": 4, "delays": list(MOSHI_DELAYS), "image_mean": 0.5})
    assert cfg.delays == MOSHI_DELAYS and cfg.image_mean == (0.5, 0.5, 0.5)
    json.dumps(cfg.to_dict())
    with pytest.raises(ValueError, match="unknown keys.*batchsize"):
        DataConfig.from_dict({"batchsize": 4})
    with pytest.raises(ValueError, match="(?s)p_concat.*missing_images"):
        DataConfig(p_concat=2, missing_images="fetch").validate()


def test_corpus_without_manifest_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="ssvd run"):
        CorpusLoader(tmp_path)


# --- the real tiny corpus (slow to build; shared with tests/pipeline/corpus) -------------------------

def test_loader_on_a_real_corpus(corpus_dir):
    cfg = DataConfig(batch_size=2, p_concat=1.0, image_size=16, eval_rows=1, seed=1)
    loader = CorpusLoader(corpus_dir, cfg)
    man = json.loads((corpus_dir / "manifest.json").read_text())
    assert set(loader.weights) == {s for s, w in man["weights"].items() if w}
    batches = _run(loader, 6)
    for b in batches:
        if b["kind"] == "speech":
            m = b["audio_mask"]
            assert (b["audio"][m] >= 0).all() and (b["audio"][m] < 2048).all() and (b["audio"][~m] == -1).all()
            assert (b["visual"].sum(1) < b["lengths"]).all(), "augmented with the generic set"
        assert b["image"].shape[1:] == (3, 16, 16)
    state = json.loads(json.dumps(loader.state_dict()))
    nxt = _run(loader, 2)
    again = CorpusLoader(corpus_dir, cfg)
    again.load_state_dict(state)
    for a, b in zip(_run(again, 2), nxt):
        _same(a, b)
    ev = [i for b in CorpusLoader(corpus_dir, cfg, split="eval") for i in b["ids"]]
    assert ev and set(ev) == {i for ids in loader.eval_ids().values() for i in ids}
    assert not set(ev) & {i for b in batches + nxt for i in b["ids"]}


def test_held_batches_are_never_overwritten(corpus):
    loader = CorpusLoader(corpus, _cfg(p_concat=0.0))
    first = next(loader)
    kept = {k: v.clone() for k, v in first.items() if isinstance(v, torch.Tensor)}
    for _ in range(12):
        next(loader)  # earlier image arrays are reused once nothing holds them; `first` is still held
    for k, v in kept.items():
        assert torch.equal(first[k], v), k
