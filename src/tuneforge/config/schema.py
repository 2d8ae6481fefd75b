"""The typed schema of a tuneforge run: one pydantic model per stage.

Defaults live here and only here. Every field has a description, which feeds
``tuneforge validate --explain`` and the docs. Models are frozen and reject
unknown keys (``extra="forbid"``); :mod:`tuneforge.config.load` turns
validation errors into messages that name the file, line and dotted field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import Field, field_validator, model_validator

from tuneforge.config._types import Float, Int, Section as _Section, _refuse_bool  # noqa: F401 (re-exported)
from tuneforge.config.bottleneck import BottleneckMethod
from tuneforge.config.distill import DistillConfig, EndpointTeacher  # noqa: F401 (re-exported)
from tuneforge.config.grpo import GrpoConfig, RewardSource  # noqa: F401 (re-exported)
from tuneforge.config.kto import KtoConfig, KtoLoss  # noqa: F401 (re-exported)
from tuneforge.config.orpo import OrpoConfig
from tuneforge.config.reward import RewardConfig
from tuneforge.config.duration import Seconds
from tuneforge.config.search import Distribution, SearchConfig  # noqa: F401 (re-exported)
from tuneforge.config.security import SecurityConfig
from tuneforge.config.stages import StageConfig, check_stage_methods, check_stage_names, stage_raws

EMBEDDED_MODEL = "smollm2-135m-instruct"


# --------------------------------------------------------------------------- model


class ModelConfig(_Section):
    """Which pre-trained model to start from."""

    name_or_path: str = Field(
        EMBEDDED_MODEL,
        description="An alias (smollm2-135m-instruct), a local Hugging Face directory, a local .gguf "
        "file, or a Hugging Face Hub id (needs network; refused with HF_HUB_OFFLINE=1).",
    )
    gguf_file: str | None = Field(
        None, description="File name inside a directory when the model is stored as GGUF there."
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) for hub ids.")
    trust_remote_code: bool = Field(
        False,
        description="Allow custom modelling code from the model repo when training from this config. Off: it "
        "executes code. Never taken from a stored run: generate/chat/eval/merge/export/serve need --trust-remote-code.",
    )
    allow_pickle: bool = Field(
        False,
        description="Also load pickle-based weight files (.bin, .pt, .pth) when a folder has no safetensors; "
        "they are still read with torch.load(weights_only=True). Off: such files are refused, naming the file.",
    )
    sha256: Union[str, dict[str, str], None] = Field(
        None,
        description="Pin the model's weight files: one hex SHA-256 digest when the model has a single weight file "
        "(or is a .gguf file / alias: the digest of the .gguf), or a mapping 'file name: digest' covering every "
        "weight file of the folder. A mismatch, a missing or an unpinned weight file is refused, naming the file.",
    )
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto", description="Attention kernel; auto picks sdpa (flash_attention_2 needs a GPU and flash-attn)."
    )
    keep_layers: Union[Int, list[Int], None] = Field(
        None,
        description="Depth pruning: keep this many decoder layers, spread evenly with the first and last included "
        "(e.g. 15 of SmolLM2's 30), or an explicit list of layer indices [0, 2, 4, ...]. The smaller model is "
        "what trains (a distillation student, or its plain-SFT baseline); null keeps every layer.",
    )

    @field_validator("keep_layers")
    @classmethod
    def _layers(cls, value: Union[int, list[int], None]) -> Union[int, list[int], None]:
        # The upper bound needs the model's depth: checked when it loads (tuneforge.models.prune).
        if isinstance(value, int) and value < 1:
            raise ValueError(f"keep at least one layer (got {value})")
        if isinstance(value, list):
            if not value:
                raise ValueError("an empty list keeps no layer; give layer indices or a count")
            if min(value) < 0 or len(set(value)) != len(value):
                raise ValueError(f"layer indices must be distinct and >= 0 (got {value})")
        return value

    @field_validator("sha256")
    @classmethod
    def _hex_digests(cls, value: Union[str, dict[str, str], None]) -> Union[str, dict[str, str], None]:
        digests = [value] if isinstance(value, str) else list((value or {}).values())
        for digest in digests:
            if not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
                raise ValueError(f"{digest!r} is not a 64-character hex SHA-256 digest")
        if isinstance(value, dict) and not value:
            raise ValueError("an empty mapping pins nothing; give 'file name: digest' pairs or leave it out")
        return value.lower() if isinstance(value, str) else ({k: v.lower() for k, v in value.items()} if value else value)


# --------------------------------------------------------------------------- method

TargetModules = Union[Literal["all-linear"], list[str]]


class FullMethod(_Section):
    """Update every weight of the model."""

    name: Literal["full"] = "full"


class LoraMethod(_Section):
    """Low-rank adapters (LoRA) and their weight-decomposed variant (DoRA), through PEFT."""

    name: Literal["lora", "dora"] = "lora"
    r: Int = Field(16, gt=0, description="Rank of the low-rank update.")
    alpha: Float = Field(32, gt=0, description="Scaling numerator; the update is scaled by alpha/r.")
    dropout: Float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: TargetModules = Field(
        "all-linear",
        description="Module names to adapt, or 'all-linear' for every linear layer but the LM head.",
    )
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases to train.")
    use_rslora: bool = Field(False, description="Rank-stabilised scaling alpha/sqrt(r).")
    modules_to_save: list[str] = Field(
        default_factory=list, description="Extra modules trained fully and saved with the adapter."
    )


class QLoraMethod(LoraMethod):
    """LoRA over a 4-bit quantized base (bitsandbytes; needs a CUDA GPU)."""

    name: Literal["qlora"] = "qlora"  # type: ignore[assignment]
    bits: Literal[4, 8] = Field(4, description="Quantization bits of the frozen base.")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type.")
    double_quant: bool = Field(True, description="Quantize the quantization constants too.")


class PromptLearningMethod(_Section):
    """Soft prompts: prefix tuning or prompt tuning, through PEFT."""

    name: Literal["prefix", "prompt"]
    num_virtual_tokens: Int = Field(20, gt=0, description="Number of trained virtual tokens.")


class IA3Method(_Section):
    """(IA)^3: learned rescaling vectors, through PEFT."""

    name: Literal["ia3"] = "ia3"
    target_modules: TargetModules = Field("all-linear", description="Modules to rescale.")


MethodConfig = Annotated[
    Union[FullMethod, LoraMethod, QLoraMethod, PromptLearningMethod, IA3Method, BottleneckMethod],
    Field(discriminator="name"),
]

DEFAULT_LR = {"full": 2e-5, "lora": 2e-4, "dora": 2e-4, "qlora": 2e-4, "prefix": 3e-2, "prompt": 3e-2, "ia3": 3e-3,
              "bottleneck": 1e-3}


# --------------------------------------------------------------------------- data

DataFormat = Literal["auto", "alpaca", "chat", "sharegpt", "prompt_completion", "text", "preference", "unpaired", "prompt_only"]


class DatasetSource(_Section):
    """One data source: a file or a saved ``datasets`` directory."""

    path: str = Field(..., description="A .jsonl, .json, .csv or .parquet file, or a datasets directory.")
    format: DataFormat = Field("auto", description="Record format; auto detects it from the fields.")
    weight: Float = Field(
        1.0, gt=0, description="Mixing weight: rows are sampled in proportion (1.0 = every row once)."
    )
    field_map: dict[str, str] = Field(
        default_factory=dict,
        description="Rename fields before detection, e.g. {question: instruction, answer: output}.",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value


class CleanConfig(_Section):
    """Cleaning steps applied to every source; each drop is counted in the data report."""

    normalize_unicode: bool = Field(True, description="NFC-normalise text and strip control characters.")
    strip_whitespace: bool = Field(True, description="Trim and collapse runs of spaces.")
    drop_empty: bool = Field(True, description="Drop rows whose prompt or answer is empty.")
    dedupe: Literal["none", "exact", "normalized"] = Field(
        "normalized", description="Remove exact duplicates, or duplicates after case/space folding."
    )
    too_long: Literal["truncate", "drop"] = Field(
        "drop", description="What to do with rows longer than training.max_seq_length tokens "
        "(rows over 32 characters per token are dropped either way, before tokenizing)."
    )
    redact_pii: bool = Field(False, description="Replace emails, phone and card numbers with placeholders.")
    pii_types: list[Literal["email", "phone", "card"]] = Field(
        default_factory=lambda: ["email", "phone", "card"], description="Which PII kinds to redact."
    )


class SplitConfig(_Section):
    """Fractions carved out of the training sources when no explicit file is given."""

    validation: Float = Field(0.1, ge=0, lt=1, description="Fraction held out for validation.")
    test: Float = Field(0.1, ge=0, lt=1, description="Fraction held out for the final test.")

    @model_validator(mode="after")
    def _sum(self) -> "SplitConfig":
        if self.validation + self.test >= 1:
            raise ValueError("split.validation + split.test must be below 1")
        return self


class DataConfig(_Section):
    """Where the data comes from and how it is prepared."""

    train: list[DatasetSource] = Field(..., min_length=1, description="Training sources (mixed by weight).")
    validation: list[DatasetSource] = Field(default_factory=list, description="Explicit validation sources.")
    test: list[DatasetSource] = Field(default_factory=list, description="Explicit test sources.")
    split: SplitConfig = Field(default_factory=SplitConfig, description="Held-out fractions (when no file).")
    system_prompt: str | None = Field(
        None, description="System message prepended to every example that has none."
    )
    clean: CleanConfig = Field(default_factory=CleanConfig, description="Cleaning steps.")
    on_bad_rows: Literal["error", "skip"] = Field(
        "error", description="Malformed rows: stop with file/line/field, or skip and count them."
    )
    packing: Literal["auto", "on", "off"] = Field(
        "auto", description="Pack several examples per sequence (isolated attention); auto = on for training."
    )
    max_examples: Int | None = Field(None, gt=0, description="Use at most this many training rows (after split).")
    num_proc: Int | None = Field(
        None, gt=0, description="Processes that clean and tokenize (sources under 4096 rows use one); default: the CPU cores, at most 8."
    )
    cache: bool = Field(
        True, description="Reuse prepared data from $TUNEFORGE_CACHE/data when sources, config, tokenizer and code match "
        "(off by itself when the run encrypts its data)."
    )
    balance: Literal["none", "oversample", "loss_weights"] = Field(
        "none", description="Classification-style SFT data: 'oversample' repeats training rows of minority labels "
        "(eval.labels, or detected short answers) up to the largest label's count; 'loss_weights' weighs each "
        "row's loss by N / (labels x rows of its label) instead. Validation and test are untouched.",
    )

    @field_validator("train", "validation", "test", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, (str, dict)) else value


# --------------------------------------------------------------------------- training


class EarlyStoppingConfig(_Section):
    patience: Int = Field(..., gt=0, description="Evaluations without improvement before stopping.")
    metric: str = Field("eval_loss", description="Validation metric watched (eval_loss or a generation metric).")
    threshold: Float = Field(0.0, ge=0, description="Minimum improvement that counts.")
    greater_is_better: bool | None = Field(None, description="Direction; inferred from the metric when unset.")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        # Checked here, not when the first evaluation runs: a typo would otherwise cost a whole
        # model load and the steps up to the first evaluation.
        known = get_args(MetricName)
        if value.removeprefix("eval_") not in known:
            raise ValueError(f"unknown metric {value!r}; expected 'eval_loss' or one of {', '.join(known)}")
        return value


Objective = Literal["sft", "dpo", "reward", "kto", "orpo", "grpo", "distill"]
"""Training objectives that have a recipe (:mod:`tuneforge.train.recipes`); a name is added here only
together with its recipe, so the schema never accepts an objective that cannot run."""
SUPERVISED_OBJECTIVES = ("sft", "distill")
"""Objectives that train on prompt/answer examples (``data.prepare``); the others learn from pairs or prompts."""

DpoLoss = Literal[
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
    "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
]
"""The ``loss_type`` names of ``trl.DPOConfig`` (TRL 1.16); a test checks them against the installed TRL."""


class DpoConfig(_Section):
    """Direct preference optimisation (``training.objective: dpo``), through ``trl.DPOTrainer``.

    The reference model is the starting model itself: with a LoRA/DoRA adapter TRL scores the
    reference with the adapter switched off, so no second copy of the weights is held in memory.
    """

    beta: Float = Field(
        0.1, gt=0, description="Strength of the pull towards the reference model (IPO: the regulariser tau)."
    )
    loss_type: list[DpoLoss] = Field(
        default_factory=lambda: ["sigmoid"],
        description="DPO loss, or several combined with loss_weights: sigmoid (DPO), ipo, hinge, robust, "
        "bco_pair, sppo_hard, nca_pair, aot, apo_zero, apo_down, discopop, sigmoid_norm, sft, ...",
    )
    loss_weights: list[Float] | None = Field(None, description="One weight per loss_type entry (default 1 each).")
    label_smoothing: Float = Field(
        0.0, ge=0, lt=0.5, description="Probability that a pair's preference is flipped (robust DPO, EXO)."
    )

    @field_validator("loss_type", mode="before")
    @classmethod
    def _one_loss(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _weights_per_loss(self) -> "DpoConfig":
        if self.loss_weights is not None and len(self.loss_weights) != len(self.loss_type):
            raise ValueError(
                f"training.dpo.loss_weights has {len(self.loss_weights)} entries but training.dpo.loss_type "
                f"has {len(self.loss_type)}; give one weight per loss"
            )
        return self


# Tokens per forward pass by default. Measured on SmolLM2-135M LoRA q/v (2-core CPU, `tuneforge train`):
# saved activations cost ~1.4 MB per token in fp32 plus ~40% allocator workspace, on top of ~1 GB of
# weights and runtime. 2 x 192 peaked at 1.75 GiB (fp32) / 1.93 GiB (bf16) where 2 x 256 peaked at
# 1.82-1.93 / 2.02-2.04 GiB; interleaved steps showed no throughput difference between 2 x 192, 2 x 256,
# 4 x 256 and 1 x 512, while rows of 1024 were ~30% slower (the block mask is computed densely per row).
DEFAULT_BATCH_TOKENS = 384


class TrainingConfig(_Section):
    """Optimisation hyperparameters, with the defaults common tutorials recommend."""

    objective: Objective = Field(
        "sft",
        description="What training optimises; selects a recipe. sft: supervised fine-tuning on answers; "
        "dpo: direct preference optimisation on chosen/rejected pairs (see training.dpo); "
        "distill: learn from a teacher model (see the distill section); "
        "kto: Kahneman-Tversky optimisation on answers labelled desirable or not, or on pairs (training.kto); "
        "orpo: odds-ratio preference optimisation on pairs, SFT and preference in one stage (training.orpo); "
        "grpo: online RL, sampled completions scored by rewards (training.grpo); "
        "reward: a reward model (a scalar score head) trained on chosen/rejected pairs (see training.reward).",
    )
    dpo: DpoConfig = Field(default_factory=DpoConfig, description="DPO settings (objective dpo).")
    kto: KtoConfig = Field(default_factory=KtoConfig, description="KTO settings (objective kto).")
    orpo: OrpoConfig = Field(default_factory=OrpoConfig, description="ORPO settings (objective orpo).")
    grpo: GrpoConfig = Field(default_factory=GrpoConfig, description="GRPO settings and rewards (objective grpo).")
    reward: RewardConfig = Field(default_factory=RewardConfig, description="Reward-model settings (objective reward).")
    learning_rate: Float | None = Field(
        None, gt=0, description="Peak learning rate; default 2e-5 for full, 2e-4 for LoRA/DoRA/QLoRA."
    )
    epochs: Float = Field(
        3.0, gt=0, description="Passes over the training set (ignored when max_steps or max_time is set)."
    )
    max_steps: Int | None = Field(
        None, gt=0, description="Stop after this many optimiser steps; with max_time, the most steps the plan may take."
    )
    max_time: Seconds | None = Field(
        None,
        description="Train for this long ('90s', '5m', '1h30m' or seconds): the throughput of the first steps "
        "sets the number of steps, and warm-up and decay of the learning rate end at that step; re-planned when "
        "throughput drifts, and stopped at the deadline. Counts from the first training step, evaluations during "
        "training included; loading, the final save and the test-set evaluation are not. epochs is ignored; "
        "max_steps, if also set, is an upper bound.",
    )
    per_device_batch_size: Int | None = Field(
        None, gt=0,
        description="Rows per device per forward pass, each up to max_seq_length tokens (packed rows hold several "
        "examples, so memory varies with the data). Unset: batches are sized by batch_tokens instead.",
    )
    batch_tokens: Int | None = Field(
        None, gt=8,
        description=f"Token budget per device per forward pass, padding included (rows x padded length); default "
        f"{DEFAULT_BATCH_TOKENS} when per_device_batch_size is unset. An example longer than the budget forms a "
        "batch of its own.",
    )
    pack_length: Int = Field(
        192, gt=8,
        description="Longest packed row (tokens) when batches are sized by batch_tokens, independent of "
        "max_seq_length: a batch holds about batch_tokens / pack_length rows. Shorter rows are faster (the "
        "block-diagonal attention mask is computed densely per row); an example longer than this gets a row alone.",
    )
    pad_to_multiple_of: Int | None = Field(
        64, gt=0,
        description="Pad each batch's length up to a multiple of this many tokens. Fewer distinct batch shapes: CPU "
        "matmul kernels (oneDNN) are built once per shape and kept, and the allocator reuses the same blocks, so "
        "memory stays flat instead of creeping up step after step (bench/train_memory.py, SmolLM2 LoRA, 41 steps: "
        "RSS growth +144 MiB instead of +343, peak 1.78 GB instead of 2.07 GB). null: pad to the longest row only.",
    )
    gradient_accumulation_steps: Int = Field(1, gt=0, description="Forward passes per optimiser step.")
    warmup_ratio: Float | None = Field(0.03, ge=0, lt=1, description="Warm-up as a fraction of all steps.")
    warmup_steps: Int | None = Field(None, ge=0, description="Warm-up steps (overrides warmup_ratio).")
    weight_decay: Float = Field(0.01, ge=0, description="AdamW weight decay.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_min_lr"] = Field(
        "cosine", description="Learning-rate schedule after warm-up."
    )
    max_grad_norm: Float = Field(1.0, gt=0, description="Gradient clipping norm.")
    optimizer: Literal["adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "paged_adamw_8bit"] = Field(
        "adamw_torch", description="Optimiser (transformers name)."
    )
    max_seq_length: Int = Field(1024, gt=8, description="Longest sequence in tokens (prompt + answer).")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 autocast where the device supports it, else fp32."
    )
    frozen_weights: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="Dtype of the frozen base's linear weights while an adapter trains (objectives sft and distill). "
        "bf16 (with precision bf16): bf16 autocast would round them to bf16 at every forward anyway, so holding them "
        "in bf16 gives the same products without the fp32 copy and the per-step casts (SmolLM2-135M: ~0.4 GB less); "
        "the exact fp32 weights are restored from a temporary file when training ends, before saving and evaluation. "
        "auto: bf16 when precision resolves to bf16, the method is lora, ia3, bottleneck, prefix or prompt (DoRA's "
        "weight norm would change), the run is not encrypted and not launched with FSDP or DeepSpeed; else fp32.",
    )
    gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto",
        description="Recompute activations in backward to save memory (~1/3 more compute). auto: on only when the "
        "memory estimate exceeds memory_limit_mb.",
    )
    memory_limit_mb: Int | None = Field(
        None, gt=0, description="Memory the run may use (MiB), for the estimate and auto checkpointing; default: "
        "the RAM (or GPU memory) available when training starts.",
    )
    logging_steps: Int = Field(10, gt=0, description="Log loss/lr/throughput every N steps.")
    save_strategy: Literal["no", "steps", "epoch"] = Field("steps", description="When to write checkpoints.")
    save_steps: Int = Field(100, gt=0, description="Checkpoint every N steps (save_strategy=steps).")
    save_total_limit: Int | None = Field(2, gt=0, description="Keep at most this many checkpoints.")
    eval_strategy: Literal["no", "steps", "epoch"] = Field("no", description="When to evaluate on validation.")
    eval_steps: Int | None = Field(None, gt=0, description="Evaluate every N steps (default: save_steps).")
    early_stopping: EarlyStoppingConfig | None = Field(None, description="Stop when validation stops improving.")
    seed: Int = Field(42, description="Seed for data order, splits, initialisation and sampling.")
    dataloader_num_workers: Int = Field(0, ge=0, description="Worker processes feeding batches.")
    report_to: list[Literal["tensorboard", "none"]] = Field(
        default_factory=lambda: ["tensorboard"], description="Experiment trackers."
    )

    @property
    def token_budget(self) -> int | None:
        """Tokens per forward pass when batches are sized by tokens; None when sized by per_device_batch_size."""
        if self.batch_tokens is not None:
            return self.batch_tokens
        return DEFAULT_BATCH_TOKENS if self.per_device_batch_size is None else None

    @model_validator(mode="after")
    def _cross_field(self) -> "TrainingConfig":
        if self.batch_tokens is not None and self.per_device_batch_size is not None:
            raise ValueError(
                "training.batch_tokens and training.per_device_batch_size both size a batch; set only one "
                f"(got batch_tokens={self.batch_tokens}, per_device_batch_size={self.per_device_batch_size})"
            )
        if self.objective == "kto" and self.kto.loss_type == "kto" and self.per_device_batch_size == 1:
            raise ValueError(
                "training.per_device_batch_size must be at least 2 for training.kto.loss_type 'kto' (its KL estimate "
                "pairs each row with another answer of the same batch); raise it or use 'apo_zero_unpaired'"
            )
        if self.objective == "grpo":
            if not self.grpo.rewards:
                raise ValueError("training.objective 'grpo' needs training.grpo.rewards: at least one reward source, "
                                 "e.g. [label_match] or [{regex: '^Answer:'}]")
            rows = (self.per_device_batch_size or 2 * self.grpo.num_generations) * self.gradient_accumulation_steps
            if rows % self.grpo.num_generations:
                raise ValueError(
                    f"training.per_device_batch_size x training.gradient_accumulation_steps ({rows}) must be a multiple "
                    f"of training.grpo.num_generations ({self.grpo.num_generations}): each step scores whole groups"
                )
        if self.early_stopping is not None and self.eval_strategy == "no":
            raise ValueError(
                "training.early_stopping needs training.eval_strategy 'steps' or 'epoch' (it is 'no')"
            )
        if self.early_stopping is not None and self.save_strategy != self.eval_strategy:
            raise ValueError(
                "training.early_stopping needs training.save_strategy equal to training.eval_strategy "
                f"(got save_strategy={self.save_strategy!r}, eval_strategy={self.eval_strategy!r})"
            )
        return self


# --------------------------------------------------------------------------- eval

MetricName = Literal[
    "loss", "perplexity", "exact_match", "accuracy", "macro_f1", "label_validity", "token_f1",
    "rouge", "bleu", "chrf", "json_validity", "json_field_accuracy",
    "json_field_precision", "json_field_recall", "json_field_f1",
    "label_likelihood_accuracy", "label_likelihood_macro_f1",
]


class ForgettingConfig(_Section):
    enabled: bool = Field(True, description="Measure perplexity on general text before and after.")
    data: str | None = Field(None, description="Reference text file; default: the bundled general-text set.")
    max_rise: Float = Field(0.2, ge=0, description="Flag when perplexity rises by more than this fraction.")
    max_documents: Int | None = Field(None, gt=0, description="Use at most this many reference documents.")


class GenerationConfig(_Section):
    max_new_tokens: Int | None = Field(
        None, gt=0,
        description="Tokens generated per example; default (null): derived from the test set, the longest "
        "reference or label in tokens + the stop token + a margin of 4 (answers cut at the limit are "
        "reported as truncated).",
    )
    do_sample: bool = Field(False, description="Greedy (false) or sampled decoding.")
    temperature: Float = Field(1.0, gt=0, description="Sampling temperature.")
    top_p: Float = Field(1.0, gt=0, le=1, description="Nucleus sampling threshold.")
    batch_size: Int = Field(16, gt=0, description="Prompts generated together (left padded).")


class EvalConfig(_Section):
    """Evaluation of the tuned model against a baseline on the held-out test split."""

    enabled: bool = Field(True, description="Evaluate at the end of `tuneforge train`.")
    metrics: list[MetricName] | None = Field(
        None,
        description="Metrics to compute; default by data: accuracy+macro_f1 (of generated answers) and "
        "label_likelihood_accuracy+label_likelihood_macro_f1 (most probable label, no generation) with labels, json_validity + "
        "json_field precision/recall/F1 when every reference is a JSON object, else exact_match+token_f1+rouge.",
    )
    labels: list[str] | None = Field(None, description="Closed label set for classification tasks.")
    normalize: list[Literal["lower", "strip", "punctuation", "articles", "whitespace"]] = Field(
        default_factory=lambda: ["lower", "strip", "punctuation", "whitespace"],
        description="Normalisation before exact match and label parsing.",
    )
    json_fields: list[str] | None = Field(None, description="Fields compared by the json_field_* metrics (default: the reference's keys).")
    baseline: str | None = Field(
        "base", description="'base' (the starting model), a run directory or model, or null for none."
    )
    max_examples: Int | None = Field(None, gt=0, description="Evaluate at most this many test examples.")
    generation: GenerationConfig = Field(default_factory=GenerationConfig, description="Decoding settings.")
    bootstrap_samples: Int = Field(1000, ge=100, description="Paired bootstrap resamples for the 95% CI.")
    forgetting: ForgettingConfig = Field(default_factory=ForgettingConfig, description="General-ability check.")


# --------------------------------------------------------------------------- run


def frozen_bf16_problem(cfg: "RunConfig") -> str | None:
    """Why this config cannot hold its frozen base in bf16 (``training.frozen_weights``), or None.

    What the config alone decides; ``tuneforge.train.frozen`` adds the machine (precision ``auto``) and the launcher.
    """
    t = cfg.training
    if t.objective not in SUPERVISED_OBJECTIVES:
        return f"it applies to objectives sft and distill (training.objective is '{t.objective}')"
    if cfg.method.name in ("full", "qlora"):
        return ("method.name 'full' trains every weight, so none is frozen" if cfg.method.name == "full"
                else "method.name 'qlora' holds its frozen base in 4 bits already")
    if t.precision not in ("auto", "bf16"):
        return f"it needs bf16 autocast (training.precision is '{t.precision}')"
    if cfg.security.encrypt:
        return "the exact fp32 weights wait in an unencrypted temporary file while an encrypted run trains"
    return None


class RunConfig(_Section):
    """A whole run: model, method, data, training and evaluation."""

    name: str = Field("run", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="Run name; the run directory is out_dir/name.")
    out_dir: str = Field("runs", description="Parent folder of run directories.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The starting model.")
    method: MethodConfig = Field(default_factory=LoraMethod, description="How the model is adapted.")
    data: DataConfig = Field(..., description="Training and evaluation data.")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="Hyperparameters.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Final evaluation.")
    search: SearchConfig | None = Field(None, description="Hyperparameter search for `tuneforge tune` (ignored by train).")
    distill: DistillConfig | None = Field(None, description="Knowledge distillation (training.objective distill).")
    security: SecurityConfig = Field(default_factory=SecurityConfig, description="Encryption at rest of the run's files.")
    stages: list[StageConfig] | None = Field(
        None, min_length=1,
        description="Chain training stages, e.g. [sft, {objective: dpo, data: {train: pairs.jsonl}}]: each a partial "
        "config merged over this one (data, training, method, eval) or an objective name; stage i starts from "
        "stage i-1's weights and trains in out_dir/name/stages/NN-<name>/.",
    )

    @field_validator("stages")
    @classmethod
    def _stage_names(cls, value: list[StageConfig] | None) -> list[StageConfig] | None:
        return check_stage_names(value) if value else value

    @field_validator("model", mode="before")
    @classmethod
    def _model_from_string(cls, value: Any) -> Any:
        return {"name_or_path": value} if isinstance(value, str) else value

    @field_validator("method", mode="before")
    @classmethod
    def _method_from_string(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _cross_section(self) -> "RunConfig":
        # Virtual tokens are prepended to every row, so packed rows (several examples, positions
        # restarting at 0) cannot carry them; found here, before a model is loaded or a folder made.
        if self.data.packing == "on" and isinstance(self.method, PromptLearningMethod):
            raise ValueError(
                f"data.packing 'on' cannot be used with method.name '{self.method.name}' "
                "(its virtual tokens need one example per row); set data.packing to 'auto' or 'off'"
            )
        # Preference objectives take the reference to be the base with the adapter switched off;
        # other methods would need a second full copy of the model.
        if (self.distill is not None) != (self.training.objective == "distill"):
            raise ValueError(
                "training.objective 'distill' needs a distill section (distill.teacher at least)"
                if self.distill is None else
                f"the distill section is used only with training.objective 'distill' (it is '{self.training.objective}')"
            )
        # A distillation student trains like SFT (any method); its teacher is a separate model.
        # A reward model is a LoRA adapter plus its score head (saved with the adapter, in modules_to_save).
        if self.training.objective not in SUPERVISED_OBJECTIVES and self.method.name not in ("lora", "dora"):
            why = ("the score head is trained and saved with the adapter" if self.training.objective == "reward"
                   else "the reference model is the base with the adapter switched off")
            raise ValueError(
                f"training.objective '{self.training.objective}' needs method.name 'lora' or 'dora' "
                f"(got '{self.method.name}'): {why}"
            )
        if self.training.frozen_weights == "bf16":
            problem = frozen_bf16_problem(self)
            if problem:
                raise ValueError(f"training.frozen_weights 'bf16': {problem}; set it to 'auto' or 'fp32'")
        if self.data.balance != "none" and self.training.objective != "sft":
            raise ValueError(f"data.balance '{self.data.balance}' balances SFT answers by label; training.objective "
                             f"is '{self.training.objective}' (set data.balance: none)")
        if self.stages:
            check_stage_methods(stage_raws(self))
        if self.search is not None and self.training.eval_strategy == "no":
            # Trials report validation metrics to the pruner and are scored on them: no evaluation, no search.
            raise ValueError("search needs training.eval_strategy 'steps' or 'epoch' (it is 'no'), so trials "
                             f"report validation {self.search.metric} while they train")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    @property
    def learning_rate(self) -> float:
        """The effective learning rate: the configured one or the method's default."""
        return self.training.learning_rate or DEFAULT_LR[self.method.name]
