"""Generation tasks on decoder-only and seq2seq models (issue 13): BBH data and split, loss
masking, answer extraction and exact match, analog generation with a KV cache, half precision,
and HWA-LoRA / pool / fuse / drift end to end on a tiny random Llama and T5."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import lorafusion_ext as lf
from lorafusion_ext.apps.cli import main as cli_main
from lorafusion_ext.nn.convert import attach_lora, convert_to_analog
from lorafusion_ext.data.bbh import BBH_TASKS, EVAL_SIZE, GenerationExample, load_bbh, split_bbh
from lorafusion_ext.data.generation import IGNORE_INDEX, encode_generation, format_prompt, mark_model_kind
from lorafusion_ext.evaluation.generation import eval_set, evaluate_generation, exact_match, extract_answer, generate
from lorafusion_ext.models import load_generator
from lorafusion_ext.tasks import GENERATION, BBHSuite, DataConfig, GenerationTask, get_task
from tiny_models import byte_tokenizer, tiny_llama, tiny_t5

BBH_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bbh"
needs_bbh = pytest.mark.skipif(not (BBH_DIR / "navigate.json").is_file(),
                               reason=f"BBH files not found at {BBH_DIR} (the shared test data)")


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> str:
    return tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory) -> str:
    return tiny_t5(tmp_path_factory.mktemp("tiny_t5"))


def _marked(seq2seq: bool):
    """A byte tokenizer marked as belonging to a causal or seq2seq model."""
    return mark_model_kind(byte_tokenizer(), SimpleNamespace(config=SimpleNamespace(is_encoder_decoder=seq2seq)))


# ---------------------------------------------------------------------- data
@needs_bbh
def test_bbh_files_load_and_the_split_is_fixed_and_disjoint():
    ex = load_bbh("bbh:navigate", BBH_DIR)
    assert len(ex) == 250 and all(e.target in ("Yes", "No") for e in ex)
    train, dev = split_bbh(ex)
    assert len(dev) == EVAL_SIZE and len(train) == 150
    assert not {(e.input, e.target) for e in train} & {(e.input, e.target) for e in dev}
    few, dev2 = split_bbh(ex, train_examples=5, eval_examples=10)
    assert few == train[:5] and dev2 == dev[:10]  # a few-shot run's examples are a larger run's first ones
    assert split_bbh(list(reversed(ex)))[1] != dev  # the split is a property of the file order, reproducibly


def test_bbh_errors_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match="unknown BBH task 'bbh:nope'"):
        load_bbh("bbh:nope", tmp_path)
    with pytest.raises(FileNotFoundError, match="navigate.json"):
        load_bbh("navigate", tmp_path)
    (tmp_path / "navigate.json").write_text(json.dumps({"examples": [{"input": 1}]}))
    with pytest.raises(ValueError, match="example 0"):
        load_bbh("navigate", tmp_path)
    many = [GenerationExample(str(i), "x") for i in range(2 * EVAL_SIZE)]
    with pytest.raises(ValueError, match="train_examples = 0"):
        split_bbh(many, train_examples=0)
    with pytest.raises(ValueError, match="expected more than"):
        split_bbh(many[:EVAL_SIZE])
    assert len(BBH_TASKS) == 27
    assert get_task("bbh:Navigate").name == "bbh:navigate" and get_task("bbh").kind == GENERATION


def test_causal_loss_mask_covers_the_answer_tokens_only():
    tok = _marked(seq2seq=False)
    data = encode_generation([GenerationExample("1 + 1 =", "2"), GenerationExample("x", "Yes")], tok, max_length=64)
    assert data.token_labels == "aligned"
    prompt = tok(format_prompt("1 + 1 ="))["input_ids"]
    answer = tok(" 2", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids, labels, mask = data.features["input_ids"][0], data.labels[0], data.features["attention_mask"][0]
    n = len(prompt) + len(answer)
    assert ids[:n].tolist() == prompt + answer and mask.sum() == n
    assert labels[: len(prompt)].eq(IGNORE_INDEX).all() and labels[n:].eq(IGNORE_INDEX).all()
    assert labels[len(prompt):n].tolist() == answer
    # Trimmed batches keep labels aligned with the inputs.
    batch = next(data.batches(2))
    assert batch["labels"].shape == batch["input_ids"].shape


def test_long_prompts_lose_their_beginning_never_the_answer():
    tok = _marked(seq2seq=False)
    data = encode_generation([GenerationExample("a" * 200 + " END?", "(B)")], tok, max_length=40)
    ids = data.features["input_ids"][0].tolist()
    text = tok.decode(ids)
    assert len(ids) == 40 and text.endswith(" END?\nA: (B)</s>")
    with pytest.raises(ValueError, match="leaves no room for the prompt"):
        encode_generation([GenerationExample("q", "x" * 50)], tok, max_length=20)


def test_seq2seq_layout_puts_the_answer_in_the_decoder_labels():
    tok = _marked(seq2seq=True)
    data = encode_generation([GenerationExample("q?", "Yes"), GenerationExample("q2?", "No")], tok, max_length=64)
    assert data.token_labels == "target"
    assert data.labels[0].tolist() == tok("Yes", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert data.labels[1, 3:].eq(IGNORE_INDEX).all()
    assert tok.decode(data.features["input_ids"][0][: int(data.features["attention_mask"][0].sum())]) == "Q: q?\nA:"


def test_an_unmarked_tokenizer_is_a_clear_error():
    with pytest.raises(ValueError, match="causal or seq2seq"):
        encode_generation([GenerationExample("q", "a")], byte_tokenizer(), 32)


# ---------------------------------------------------------------------- scoring
@pytest.mark.parametrize("text, target, hit", [
    (" (B)\nQ: next", "(B)", True),
    ("B", "(B)", True),
    ("b)", "(B)", True),
    ("(C)", "(B)", False),
    ("Let's think. So the answer is True.", "True", True),
    ("the answer is no. The answer is Yes", "Yes", True),
    ("  valid  ", "valid", True),
    ("invalid", "valid", False),
    ("[ ] )", "[ ] )", True),
    ("-12", "-1", False),
    ("", "Yes", False),
])
def test_exact_match_on_known_strings(text, target, hit):
    assert exact_match(text, target) is hit


def test_answer_extraction():
    assert extract_answer("Yes\nQ: more text") == "Yes"
    assert extract_answer("step 1... So the answer is (A).\n") == "(A)."
    assert extract_answer("\n\n") == ""


# ---------------------------------------------------------------------- models
def test_lm_head_and_embeddings_stay_digital(llama_dir, t5_dir):
    for folder in (llama_dir, t5_dir):
        model, tok = load_generator(folder)
        convert_to_analog(model, lf.HardwareConfig.preset("pcm_paper"), seed=0)
        attach_lora(model, 4, 8.0, targets=lf.targets.ALL_LINEAR)
        analog = [n for n, m in model.named_modules() if isinstance(m, lf.AnalogLinear)]
        assert analog and not any("lm_head" in n for n in analog)
        assert type(model.lm_head) is torch.nn.Linear and not model.lm_head.weight.requires_grad
        assert not any(isinstance(m, lf.AnalogLinear) for m in (model.get_input_embeddings(),))
        plain = [n for n, m in model.named_modules() if type(m) is torch.nn.Linear and not n.endswith("lm_head")
                 and ".base" not in n]
        assert plain == []


def test_generation_uses_the_kv_cache_and_draws_fresh_noise_per_step(llama_dir):
    model, tok = load_generator(llama_dir)
    convert_to_analog(model, lf.HardwareConfig.preset("pcm_paper"), seed=0)
    layer = model.model.layers[0].self_attn.q_proj
    rows: list[int] = []
    hook = layer.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[-2]))
    before = int(layer.rng_state[1])
    ex = [GenerationExample("true and false", "False")]
    data = eval_set(ex, tok, max_length=64, max_new_tokens=6)
    texts = generate(model, tok, [format_prompt(ex[0].input)], 64, 6)
    hook.remove()
    assert len(texts) == 1
    assert rows[0] > 1 and all(r == 1 for r in rows[1:])  # prefill, then one token per decode step (cache)
    assert int(layer.rng_state[1]) - before == len(rows)  # a noise draw per call
    assert 0.0 <= evaluate_generation(model, data)["exact_match"] <= 1.0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_llm_in_and_out(llama_dir, dtype):
    model, tok = load_generator(llama_dir, dtype=dtype)
    assert next(model.parameters()).dtype == dtype
    convert_to_analog(model, lf.HardwareConfig.preset("pcm_paper"), seed=0)
    attach_lora(model, 4, 8.0, targets=lf.targets.ALL_LINEAR)
    data = encode_generation([GenerationExample("true or false", "True")], tok, 48)
    batch = next(data.batches(1))
    out = model(**batch)
    assert out.logits.dtype == dtype and torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None and g.dtype == dtype for g in grads)
    text = generate(model, tok, ["Q: x\nA:"], 48, 4)
    assert isinstance(text[0], str)


# ---------------------------------------------------------------------- end to end
@needs_bbh
@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_hwa_lora_pool_fuse_drift_end_to_end(kind, llama_dir, t5_dir, tmp_path, capsys):
    model = llama_dir if kind == "llama" else t5_dir
    common = ["--model", model, "--data-dir", str(BBH_DIR), "--steps", "2", "--batch-size", "4",
              "--eval-examples", "3", "--max-length", "160", "--no-progress", "--threads", "1"]
    tasks = "bbh:boolean_expressions,bbh:sports_understanding"
    assert cli_main(["pool", "--tasks", tasks, "--out", str(tmp_path / "p"), "--train-examples", "8", *common]) == 0
    assert (tmp_path / "p" / "bbh-boolean_expressions" / "run.json").is_file()
    assert cli_main(["fuse", "--task", "bbh:sports_understanding", "--pool", str(tmp_path / "p" / "pool"),
                     "--out", str(tmp_path / "f"), "--train-examples", "5", *common]) == 0
    fused = json.loads(capsys.readouterr().out.split("pool of 2 adapters")[1].split("\n", 1)[1])
    assert fused["trainable"]["coefficients"] > 0 and fused["trainable"]["lora"] == 0
    assert fused["trainable"]["head"] == 0  # an LM has no task head: only coefficients and magnitudes train
    assert 0.0 <= fused["metrics"]["exact_match"] <= 1.0
    assert cli_main(["drift", "--run", str(tmp_path / "f"), "--run", str(tmp_path / "p" / "bbh-boolean_expressions"),
                     "--out", str(tmp_path / "d"), "--times", "0,315360000", "--trials", "1", "--data-dir", str(BBH_DIR),
                     "--eval-examples", "3", "--max-length", "160", "--no-progress"]) == 0
    table = (tmp_path / "d" / "drift.md").read_text()
    assert "lorafusion-bbh-sports_understanding | exact_match" in table and "hwa-lora-bbh-boolean_expressions" in table


@needs_bbh
def test_the_bbh_suite_scores_every_task_and_their_mean(llama_dir):
    model, tok = load_generator(llama_dir)
    suite = BBHSuite(["navigate", "web_of_lies"])
    data = DataConfig(max_length=400, train_examples=2, eval_examples=2, data_dir=str(BBH_DIR))
    assert len(suite.train_data(tok, data)) == 4
    scores = suite.evaluate(model, suite.eval_data(tok, data))
    assert set(scores) == {"exact_match", "exact_match/bbh:navigate", "exact_match/bbh:web_of_lies"}
    assert scores["exact_match"] == pytest.approx((scores["exact_match/bbh:navigate"] +
                                                   scores["exact_match/bbh:web_of_lies"]) / 2)
    assert isinstance(GenerationTask("navigate").describe_data(data), str)
