"""GLUE loading from the shared local folder, tokenisation, and the metric functions."""

from __future__ import annotations

import math
import os

import pytest

from lorafusion_ext.data import GLUE_TASKS, encode, load_glue
from lorafusion_ext.data.glue import available_tasks
from lorafusion_ext.evaluation.metrics import compute_metrics

GLUE_DIR = os.environ.get(
    "LORAFUSION_GLUE_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "glue")
)
needs_glue = pytest.mark.skipif(not os.path.isdir(GLUE_DIR), reason=f"GLUE folder not found at {GLUE_DIR}")


@needs_glue
@pytest.mark.parametrize(
    "task,split,rows,first_label",
    [("sst2", "dev", 872, 1), ("cola", "dev", 1043, 1), ("mrpc", "dev", 408, 1), ("stsb", "dev", 1500, 5.0),
     ("rte", "dev", 277, 1), ("qnli", "dev", 5463, 0), ("wnli", "dev", 71, 0), ("mrpc", "train", 3668, 1)],
)
def test_local_glue_files_load_with_official_row_counts(task, split, rows, first_label):
    ex = load_glue(task, split, GLUE_DIR)
    assert len(ex) == rows
    assert ex[0].label == first_label
    assert len(ex[0].texts) == len(GLUE_TASKS[task].text_columns)


@needs_glue
def test_missing_splits_are_named_clearly():
    assert "train" not in available_tasks(GLUE_DIR).get("qnli", ())
    with pytest.raises(FileNotFoundError, match=r"QNLI train split not found: expected .*QNLI/train.tsv"):
        load_glue("qnli", "train", GLUE_DIR)
    with pytest.raises(FileNotFoundError, match="MNLI dev split not found"):
        load_glue("mnli", "dev", GLUE_DIR)


def test_bad_task_and_split():
    with pytest.raises(ValueError, match="unknown GLUE task 'squad2'"):
        load_glue("squad2", "dev", "/nonexistent")
    with pytest.raises(ValueError, match="split = 'test'"):
        load_glue("rte", "test", "/nonexistent")


@needs_glue
def test_subsampling_is_seeded():
    a = load_glue("rte", "train", GLUE_DIR, max_examples=50, seed=1)
    b = load_glue("rte", "train", GLUE_DIR, max_examples=50, seed=1)
    c = load_glue("rte", "train", GLUE_DIR, max_examples=50, seed=2)
    assert a == b and a != c and len(a) == 50


@needs_glue
def test_encode_and_batches():
    tok = pytest.importorskip("transformers").BertTokenizerFast(
        vocab_file=_tiny_vocab(), do_lower_case=True
    )
    ex = load_glue("mrpc", "dev", GLUE_DIR, max_examples=10)
    ds = encode(ex, tok, max_length=32)
    assert ds.features["input_ids"].shape == (10, 32) and len(ds) == 10
    batches = list(ds.batches(4))
    assert [len(b["labels"]) for b in batches] == [4, 4, 2]
    assert batches[0]["input_ids"].shape[1] <= 32


def _tiny_vocab() -> str:
    import tempfile

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "he", "said", "."]
    f = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
    f.write("\n".join(words))
    f.close()
    return f.name


def test_metrics_against_known_values():
    pred, label = [1, 0, 1, 1, 0, 0], [1, 0, 0, 1, 0, 1]
    m = compute_metrics(("accuracy", "f1", "mcc"), pred, label)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))  # tp 2, fp 1, fn 1
    assert m["mcc"] == pytest.approx((2 * 2 - 1 * 1) / math.sqrt(3 * 3 * 3 * 3))
    r = compute_metrics(("pearson", "spearman"), [1.0, 2.0, 3.0, 5.0], [2.0, 4.0, 6.0, 10.0])
    assert r["pearson"] == pytest.approx(1.0) and r["spearman"] == pytest.approx(1.0)
    assert compute_metrics(("spearman",), [1.0, 2.0, 3.0], [3.0, 2.0, 1.0])["spearman"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="unknown metrics"):
        compute_metrics(("bleu",), [1], [1])
    with pytest.raises(ValueError, match="2 predictions for 3 labels"):
        compute_metrics(("accuracy",), [1, 0], [1, 0, 1])


def _ragged_dataset(n: int = 203, width: int = 40, seed: int = 0):
    """An EncodedDataset of `n` examples of random lengths 1..width (no tokenizer needed)."""
    import torch

    from lorafusion_ext.data.tokenize import EncodedDataset

    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, width + 1, (n,), generator=g)
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    ids = torch.randint(5, 100, (n, width), generator=g) * mask
    return EncodedDataset({"input_ids": ids, "attention_mask": mask}, torch.arange(n)), lengths


def test_group_by_length_sees_every_example_once_with_less_padding():
    import torch

    ds, lengths = _ragged_dataset()
    plain = list(ds.batches(8, shuffle=True, generator=torch.Generator().manual_seed(1)))
    grouped = list(ds.batches(8, shuffle=True, generator=torch.Generator().manual_seed(1), group_by_length=5))
    again = list(ds.batches(8, shuffle=True, generator=torch.Generator().manual_seed(1), group_by_length=5))
    seen = torch.cat([b["labels"] for b in grouped])
    assert sorted(seen.tolist()) == list(range(len(ds)))  # one epoch: every example once
    assert [len(b["labels"]) for b in grouped][:-1] == [8] * (len(grouped) - 1)  # only the last is short
    assert all(torch.equal(a["labels"], b["labels"]) for a, b in zip(grouped, again))  # seeded
    cells = lambda bs: sum(b["input_ids"].numel() for b in bs)  # noqa: E731
    assert cells(grouped) < 0.75 * cells(plain)  # trimming now removes most of the padding
    for b in grouped:  # trimmed to the batch's longest example, no token lost
        assert b["attention_mask"].shape[1] == int(lengths[b["labels"]].max())
    with pytest.raises(ValueError, match="group_by_length"):
        next(ds.batches(8, shuffle=True, group_by_length=-1))


def test_predict_batches_by_length_and_returns_the_data_order():
    import torch
    from torch import nn

    from lorafusion_ext.training.loop import predict

    class LengthModel(nn.Module):
        """Logits that name each row's length, so any reordering shows."""

        def forward(self, input_ids, attention_mask):
            n = attention_mask.sum(1)
            return type("Out", (), {"logits": nn.functional.one_hot(n, 64).float()})()

    ds, lengths = _ragged_dataset(n=57)
    assert torch.equal(predict(LengthModel(), ds, batch_size=10), lengths)
    assert torch.equal(ds.lengths()[ds.length_order()], torch.sort(lengths, descending=True).values)


def test_chance_level_is_the_constant_predictor():
    import numpy as np

    from lorafusion_ext.evaluation.metrics import chance_level

    train = np.array([1, 1, 1, 0])  # majority: class 1
    dev = np.array([1, 0, 1, 1, 0])
    assert chance_level("accuracy", train, dev) == (0.6, "class 1 (training majority)")
    value, _ = chance_level("f1", train, dev)  # precision 3/5, recall 1
    assert value == pytest.approx(2 * 0.6 / 1.6)
    assert chance_level("mcc", train, dev)[0] == 0.0
    assert chance_level("pearson", np.array([0.5, 4.0]), np.array([1.0, 2.0, 3.0])) == (0.0, "constant score")
    with pytest.raises(ValueError, match="unknown metric"):
        chance_level("auc", train, dev)
    with pytest.raises(ValueError, match="expected some of each"):
        chance_level("accuracy", train, np.array([], dtype=np.int64))
