"""Typed run configuration: the schema of every stage and the YAML loader."""

from tuneforge.config.bottleneck import BottleneckMethod
from tuneforge.config.load import load_config
from tuneforge.config.schema import (
    DEFAULT_LR,
    EMBEDDED_MODEL,
    CleanConfig,
    DataConfig,
    DatasetSource,
    EarlyStoppingConfig,
    EvalConfig,
    ForgettingConfig,
    FullMethod,
    GenerationConfig,
    IA3Method,
    LoraMethod,
    ModelConfig,
    PromptLearningMethod,
    QLoraMethod,
    RunConfig,
    SplitConfig,
    TrainingConfig,
)
from tuneforge.config.security import SecurityConfig

__all__ = [
    "DEFAULT_LR", "EMBEDDED_MODEL", "BottleneckMethod", "CleanConfig", "DataConfig", "DatasetSource", "EarlyStoppingConfig",
    "EvalConfig", "ForgettingConfig", "FullMethod", "GenerationConfig", "IA3Method", "LoraMethod",
    "ModelConfig", "PromptLearningMethod", "QLoraMethod", "RunConfig", "SecurityConfig", "SplitConfig",
    "TrainingConfig", "load_config",
]
