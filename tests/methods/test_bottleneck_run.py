"""A whole bottleneck-adapter run on the tiny model: trained, loaded, evaluated, served; merge and export refused."""

from __future__ import annotations

import asyncio
import json

import pytest
import torch
import yaml

from tuneforge import ConfigError, ExportError, finetune, load_config
from tuneforge.cli.main import main
from tuneforge.models import load, resolve
from tuneforge.rundir import RunDir

CHATS = [("hello", "hi there"), ("where is my parcel", "in transit"), ("reset my password", "sent a link")]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = tmp_path_factory.mktemp("bottleneck-run")
    rows = [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": a}]} for p, a in CHATS]
    (work / "chats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return work


def write_config(work, tiny_model_dir, name, **extra):
    cfg = {"name": name, "out_dir": str(work / "runs"), "model": str(tiny_model_dir),
           "method": {"name": "bottleneck", "reduction_factor": 4, "placement": "houlsby"},
           "data": {"train": str(work / "chats.jsonl"), "split": {"validation": 0.0, "test": 0.0}},
           "training": {"max_steps": 8, "per_device_batch_size": 2, "learning_rate": 3e-2, "save_strategy": "no",
                        "max_seq_length": 128, "precision": "fp32"},
           "eval": {"enabled": False}, **extra}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def run(work, tiny_model_dir):
    return finetune(load_config(write_config(work, tiny_model_dir, "bn"))).run_dir


def test_the_run_saves_a_peft_adapter_that_loads_with_the_trained_layers(run, tiny_model_dir):
    config = json.loads((RunDir(run).adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "BOTTLENECK" and config["placement"] == "houlsby"
    loaded = load(run)
    tokens = torch.tensor([[5, 17, 42, 99]])
    with torch.no_grad():
        tuned = loaded.model(input_ids=tokens).logits
        with loaded.model.disable_adapter():
            base = loaded.model(input_ids=tokens).logits
    assert not torch.allclose(tuned, base, atol=1e-4)  # trained adapters are in effect ...
    plain = load(tiny_model_dir).model
    with torch.no_grad():
        assert torch.equal(plain(input_ids=tokens).logits, base)  # ... over an unchanged base


def test_generate_and_eval_commands_use_the_run(run, work, tiny_model_dir, capsys):
    answers = []
    for target in (run, tiny_model_dir):
        assert main(["generate", str(target), "-p", "hello", "--max-new-tokens", "3"]) == 0
        answers.append(capsys.readouterr().out)
    assert answers[0].strip() and answers[0] != answers[1]  # the run answers with its adapter, not as the base
    assert main(["eval", str(run), "--data", str(work / "chats.jsonl"), "--metrics", "exact_match"]) == 0
    assert (RunDir(run).eval / "report.html").is_file()


@pytest.mark.parametrize("argv", [["merge"], ["export", "--format", "gguf"], ["export", "--format", "hf"]])
def test_merge_and_exports_are_refused_saying_why_and_what_instead(run, argv, capsys):
    assert main([argv[0], str(run), *argv[1:]]) == 2
    out = " ".join((capsys.readouterr().err + capsys.readouterr().out).split())
    assert "cannot be merged into the base weights" in out and "tuneforge serve RUN" in out and "lora" in out, out
    assert not RunDir(run).merged.exists() and not (run / "export").exists()


def test_served_alone_and_as_an_extra_adapter_over_the_base(run, tiny_model_dir):
    from tuneforge.serve import GenerationRequest, SamplingParams, load_engine

    engines = [load_engine(run), load_engine(tiny_model_dir, name="tiny", adapters={"bn": run})]
    try:
        assert engines[0].routes == {"bn": "default"} and engines[1].routes == {"tiny": None, "bn": "bn"}

        async def answer(engine, name):
            handle = engine.submit(GenerationRequest(name, [engine.encode_text("hello")],
                                                     SamplingParams(max_tokens=4, temperature=0)))
            return (await handle.result())[0].text

        # The same adapter gives the same greedy answer whether it is the run served or an extra adapter.
        assert asyncio.run(answer(engines[0], "bn")) == asyncio.run(answer(engines[1], "bn"))
        asyncio.run(answer(engines[1], "tiny"))
    finally:
        for engine in engines:
            engine.close()


def test_a_bottleneck_run_cannot_start_another_run(run, work, tiny_model_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ExportError, match="cannot be merged into the base weights"):
        resolve(str(run))  # `model: runs/bn` would need the adapter merged into a plain folder
    assert not (tmp_path / "cache" / "models").exists()  # refused before loading or writing anything
    stages = [{"objective": "sft", "name": "adapters"}, {"objective": "sft", "name": "more", "method": "lora"}]
    chained = write_config(work, tiny_model_dir, "chain", stages=stages)
    with pytest.raises(ConfigError, match=r"stages\[0\]\.method\.name: 'bottleneck' adapters cannot be merged"):
        load_config(chained)
