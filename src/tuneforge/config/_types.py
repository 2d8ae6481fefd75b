"""The building blocks every config section shares: strict numbers and the section base class."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict


def _refuse_bool(value: Any) -> Any:
    # Pydantic's lax mode reads `true` as 1 for int and float fields, so `max_steps: true`
    # would train one step. Strict mode is not an option: it refuses "1e-4", which YAML 1.1
    # reads as a string. So booleans, and only booleans, are refused here.
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got the boolean {str(value).lower()}")
    return value


# Every numeric field of the schema uses these (a test checks that no bare int/float is left).
Int = Annotated[int, BeforeValidator(_refuse_bool)]
Float = Annotated[float, BeforeValidator(_refuse_bool)]


class Section(BaseModel):
    # allow_inf_nan=False: YAML reads `.inf`/`.nan` as floats, and an infinite learning rate or
    # ratio would only surface as NaN weights hours later.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)
