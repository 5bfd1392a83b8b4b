"""Tiny end-to-end runs of every `lorafusion` subcommand (a small random BERT saved to a
folder, subsets of the shared GLUE files), resume equality, and CLI errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from lorafusion_ext.apps import cli  # noqa: E402
from lorafusion_ext.data import encode, load_glue  # noqa: E402
from lorafusion_ext.data.glue import task_spec  # noqa: E402
from lorafusion_ext.hardware import HardwareConfig  # noqa: E402
from lorafusion_ext.training import HWALoRAConfig, TrainConfig, analog_classifier, train_hwa_lora  # noqa: E402
from tiny_models import tiny_bert  # noqa: E402

GLUE_DIR = os.environ.get(
    "LORAFUSION_GLUE_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "glue")
)
pytestmark = pytest.mark.skipif(not os.path.isdir(GLUE_DIR), reason=f"GLUE folder not found at {GLUE_DIR}")



def _tiny_bert(folder, dropout: float = 0.1) -> str:
    """A 2-layer BERT (hidden 32) and a small word-piece vocabulary, saved as a local model
    (`tiny_models.tiny_bert`: its vocabulary goes in as a dict, which transformers 5 keeps)."""
    return tiny_bert(folder, dropout=dropout, max_positions=64)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return _tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def _run(args: list[str]) -> int:
    return cli.main(args)


def _small(model: str) -> list[str]:
    return ["--model", model, "--glue-dir", GLUE_DIR, "--steps", "2", "--batch-size", "4", "--train-examples", "16",
            "--eval-examples", "8", "--max-length", "24", "--no-progress"]


def test_every_subcommand_end_to_end(tiny_model, tmp_path, capsys):
    h, p, f, d = (str(tmp_path / n) for n in ("hwa", "pool", "fuse", "drift"))
    assert _run(["hwa-lora", "--task", "rte", "--out", h, "--rank", "2", *_small(tiny_model)]) == 0
    assert json.loads(open(os.path.join(h, "run.json")).read())["method"] == "hwa-lora"
    assert _run(["pool", "--tasks", "sst2,stsb", "--out", p, "--rank", "2", *_small(tiny_model)]) == 0
    assert os.path.isdir(os.path.join(p, "pool"))
    assert _run(["fuse", "--task", "rte", "--pool", os.path.join(p, "pool"), "--out", f, *_small(tiny_model)]) == 0
    assert '"lorafusion"' not in capsys.readouterr().err
    assert _run(["drift", "--run", h, "--run", f, "--out", d, "--times", "0,86400", "--trials", "2",
                 "--glue-dir", GLUE_DIR, "--eval-examples", "8", "--max-length", "24", "--no-progress"]) == 0
    for name in ("hwa-lora-rte", "lorafusion-rte"):
        for ext in ("md", "json", "png"):
            assert os.path.isfile(os.path.join(d, f"{name}.{ext}"))
    sweep = json.loads(open(os.path.join(d, "lorafusion-rte.json")).read())
    assert len(sweep["values"]) == 2 and len(sweep["values"][0]) == 2
    assert _run(["cost", "--model", tiny_model, "--rank", "2", "--pool-size", "3", "--out", str(tmp_path / "cost")]) == 0
    assert "LoRAFusion" in (tmp_path / "cost" / "cost.md").read_text()


def test_demo_quick(tiny_model, tmp_path):
    out = tmp_path / "demo"
    assert _run(["demo", "--quick", "--model", tiny_model, "--glue-dir", GLUE_DIR, "--out", str(out),
                 "--pool", "train", "--pool-tasks", "sst2,mrpc", "--task", "rte", "--no-progress", "--max-length", "24"]) == 0
    for name in ("report.md", "results.json", "drift.png"):
        assert (out / name).is_file()
    res = json.loads((out / "results.json").read_text())
    assert set(res["drift"]) == {"HWA-LoRA", "LoRAFusion"} and 0 < res["trainable_ratio"] < 1
    assert res["pool_on_crossbar"]  # the demo's LoRAFusion programs its pool with the model
    assert set(res["switching"]) == {"mean", "sst2", "mrpc", "rte"}


def test_bench_quick(tmp_path):
    assert _run(["bench", "--quick", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert {r["kernel"] for r in rows} == {"crossbar_mvm", "pool_fusion"}


def test_cli_errors(tiny_model, tmp_path, capsys):
    assert _run(["hwa-lora", "--task", "squad2", "--out", str(tmp_path), *_small(tiny_model)]) == 1
    assert "unknown task 'squad2'" in capsys.readouterr().err
    assert _run(["hwa-lora", "--task", "qnli", "--out", str(tmp_path), *_small(tiny_model)]) == 1
    assert "QNLI train split not found" in capsys.readouterr().err
    assert _run(["fuse", "--task", "rte", "--pool", str(tmp_path / "nope"), "--out", str(tmp_path), *_small(tiny_model)]) == 2
    assert "--pool" in capsys.readouterr().err
    assert _run(["pool", "--out", str(tmp_path), *_small(tiny_model)]) == 2
    assert _run(["hwa-lora", "--task", "rte", "--out", str(tmp_path), "--hardware", "bogus", *_small(tiny_model)]) == 2
    assert "--hardware 'bogus'" in capsys.readouterr().err
    assert _run(["hwa-lora", "--task", "rte", "--out", str(tmp_path), "--model", str(tmp_path / "missing"),
                 "--glue-dir", GLUE_DIR, "--steps", "1", "--no-progress"]) == 1
    assert "cannot load model" in capsys.readouterr().err
    assert _run(["hwa-lora", "--task", "rte", "--out", str(tmp_path), "--glue-dir", str(tmp_path / "no")]) == 2
    with pytest.raises(SystemExit) as exc:
        _run(["hwa-lora", "--task", "rte", "--out", str(tmp_path), "--steps", "0"])
    assert exc.value.code == 2
    assert "must be >= 1" in capsys.readouterr().err


def test_resume_equals_an_uninterrupted_run(tiny_model, tmp_path):
    spec = task_spec("rte")
    hw = HardwareConfig.preset("pcm_paper")

    def fresh():
        model, tok = analog_classifier(tiny_model, spec, hw, seed=3)
        data = encode(load_glue("rte", "train", GLUE_DIR, max_examples=24, seed=1), tok, max_length=24)
        return model, data

    cfg = HWALoRAConfig(rank=2)
    model, data = fresh()
    train_hwa_lora(model, data, cfg, TrainConfig(steps=6, batch_size=4, seed=5, progress=False))
    reference = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    ckpt = str(tmp_path / "ckpt")
    model, data = fresh()
    calls = {"n": 0}
    real_forward = model.forward

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # step 5 of 6: after the checkpoint of step 3
            raise KeyboardInterrupt
        return real_forward(*args, **kwargs)

    model.forward = interrupted
    with pytest.raises(KeyboardInterrupt):
        train_hwa_lora(model, data, cfg, TrainConfig(steps=6, batch_size=4, seed=5, progress=False,
                                                     checkpoint_dir=ckpt, checkpoint_every=3))
    model, data = fresh()
    res = train_hwa_lora(model, data, cfg, TrainConfig(steps=6, batch_size=4, seed=5, progress=False,
                                                       checkpoint_dir=ckpt, checkpoint_every=3, resume=True))
    assert res.resumed_from == 3
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p, reference[n]), n


def test_log_wandb_without_the_package_is_a_clear_error(tiny_model, tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    assert _run(["hwa-lora", "--task", "rte", "--out", str(tmp_path), "--log", "wandb", *_small(tiny_model)]) == 1
    assert "needs Weights & Biases: pip install wandb" in capsys.readouterr().err


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                    reason="this torch build has no gloo backend for CPU data-parallel training")
def test_torchrun_data_parallel_equals_one_process(tmp_path):
    """`torchrun --nproc_per_node 2` trains on half of every batch per rank; with the noise-free
    hardware and no dropout the result equals the single-process run, and only rank 0 writes."""
    import subprocess
    import sys

    model = _tiny_bert(tmp_path / "tiny_bert_no_dropout", dropout=0.0)
    args = ["hwa-lora", "--task", "sst2", "--hardware", "ideal", "--dropout", "0", "--rank", "2", "--threads", "1",
            *_small(model)]
    args[args.index("--steps") + 1] = "3"
    one, two = tmp_path / "one", tmp_path / "two"
    assert _run([*args, "--out", str(one)]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "lorafusion_ext.apps.cli", *args, "--out", str(two)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('"metrics"') == 1  # rank 0 reports, rank 1 stays quiet
    a = torch.load(one / "task_state.pt", weights_only=True)
    b = torch.load(two / "task_state.pt", weights_only=True)
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6, msg=k)


def test_commands_that_run_in_one_process_refuse_torchrun(tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert _run(["cost", "--model", tiny_model, "--out", str(tmp_path)]) == 2
    assert "under torchrun only hwa-lora, pool, fuse" in capsys.readouterr().err
