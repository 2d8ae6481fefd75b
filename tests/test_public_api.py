"""The public API, pinned name by name: adding, renaming or dropping an export must be a deliberate change here.

A subset check (``{...} <= set(__all__)``) lets a rename slip through as long as the old
names stay; an exact set comparison does not (httpx's ``tests/test_exported_members.py``).
"""

import importlib

import pytest

PUBLIC_API = {
    "tuneforge": {
        "ConfigError", "DataError", "EvalError", "ExportError", "ModelError", "RunConfig", "RunDirError",
        "SecurityError", "TrainingError", "TuneforgeError", "__version__", "finetune", "load_config",
    },
    "tuneforge.config": {
        "BottleneckMethod", "CleanConfig", "DEFAULT_LR", "DataConfig", "DatasetSource", "EMBEDDED_MODEL", "EarlyStoppingConfig",
        "EvalConfig", "ForgettingConfig", "FullMethod", "GenerationConfig", "IA3Method", "LoraMethod", "ModelConfig",
        "PromptLearningMethod", "QLoraMethod", "RunConfig", "SecurityConfig", "SplitConfig", "TrainingConfig",
        "load_config",
    },
    "tuneforge.data": {
        "DataReport", "Dropped", "FORMATS", "IGNORE_INDEX", "Kept", "PreparedData", "clean_example", "dedupe_key",
        "detect_format", "end_of_turn_token", "load_examples", "location", "prepare", "prompt_messages", "redact_pii",
        "reference", "render_prompt", "split_indices", "tokenize_example",
    },
    "tuneforge.models": {
        "ALIASES", "LoadedModel", "build_tiny_model", "build_tiny_tokenizer", "cache_dir", "dequantize_gguf", "load",
        "load_model", "load_tokenizer", "resolve", "resolve_target", "save_tiny_model", "Target",
    },
    "tuneforge.methods": {"BUILDERS", "PROMPT_LEARNING", "apply", "load_kwargs", "lora_config", "trainable_parameters"},
    "tuneforge.train": {"FinetuneResult", "finetune"},
    "tuneforge.search": {"TuneResult", "tune"},
    "tuneforge.eval": {
        "ChangedExamples", "EvalResult", "ForgettingResult", "Generations", "METRIC_NAMES", "MetricComparison", "NO_TEST_ROWS",
        "MetricValues", "PairedInterval", "RunsComparison", "bootstrap_indices", "changed_examples", "compare_runs",
        "evaluate", "generate_answers", "paired_bootstrap", "render_report", "run", "score", "score_outputs",
    },
    "tuneforge.export": {
        "DEFAULT_PROMPTS", "ExportResult", "FORMATS", "LlamaCppReport", "PromptCheck", "RoundtripReport", "SUPPORTED_ARCHITECTURES",
        "build_modelfile", "check_llamacpp", "check_roundtrip", "inspect_template", "llama_cpp_available", "merge", "run",
        "write_gguf",
    },
    "tuneforge.ui": {"create_app", "run"},
    "tuneforge.serve": {
        "BatchingConfig", "Engine", "GenerationHandle", "GenerationRequest", "SamplingParams", "ServeLimits",
        "background_server", "create_app", "load_engine", "parse_rate_limit", "run", "served_name",
    },
    "tuneforge.security": {
        "AuditError", "AuditLog", "DecryptError", "Key", "KeyRecord", "KeySource", "KeyStore", "Sealer", "VerifyResult", "audited",
        "create_key", "decrypt_file", "encrypt_file", "generate_key_file", "hash_key", "is_encrypted", "list_keys",
        "parse_expiry", "read_file", "read_keys", "revoke_key", "verify", "write_keys",
    },
}


@pytest.mark.parametrize("module", sorted(PUBLIC_API))
def test_public_api_is_exported(module):
    mod = importlib.import_module(module)
    exported = mod.__all__
    assert len(exported) == len(set(exported)), f"{module}.__all__ lists a name twice"
    assert set(exported) == PUBLIC_API[module]
    # Every exported name resolves (a stale __all__ entry would make `from X import *` fail).
    missing = [name for name in exported if not hasattr(mod, name)]
    assert not missing, f"{module}.__all__ names missing attributes: {missing}"


def test_each_stage_has_a_run_entry_point():
    import tuneforge.eval
    import tuneforge.export
    import tuneforge.serve

    for stage in (tuneforge.eval, tuneforge.export, tuneforge.serve):
        assert callable(stage.run), stage.__name__


def test_top_level_finetune_takes_the_same_arguments_as_the_pipeline():
    import inspect

    import tuneforge
    from tuneforge.train import pipeline

    top = inspect.signature(tuneforge.finetune).parameters
    assert list(top) == list(inspect.signature(pipeline.finetune).parameters)
