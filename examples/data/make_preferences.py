"""Generate ``ticket_preferences.jsonl``: preference pairs for the ticket task, derived from ``tickets.jsonl``.

Each ticket of ``tickets.jsonl`` becomes one pair in TRL's prompt/chosen/rejected form:

- ``prompt``: the ticket's instruction and text, as the supervised rows give them;
- ``chosen``: the correct label alone (what the task wants);
- ``rejected``: in half the pairs (alternating) a *wrong* label, in the other half a sentence
  that names the right queue in the base model's style ("This support ticket is related to
  billing."), the answer the base SmolLM2 gives before fine-tuning. The first teaches which
  queue, the second to answer with the label only.

The wrong label is drawn with ``random.Random(SEED)``; everything else is fixed, so the output
is byte-identical on every run::

    python examples/data/make_preferences.py            # writes examples/data/ticket_preferences.jsonl
    python examples/data/make_preferences.py --check    # exits 1 if the file is stale
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

SEED = 2718
HERE = Path(__file__).parent
SOURCE = HERE / "tickets.jsonl"
OUT = HERE / "ticket_preferences.jsonl"
LABELS = ["billing", "technical_issue", "account_access", "shipping", "refund", "cancellation", "product_question",
          "feedback"]
# Phrasings of the base model's sentence answers, as it gives them zero-shot (see README.md).
SENTENCES = [
    "This support ticket is related to {queue}.",
    "The ticket should be classified as {queue}.",
    "Based on the message, this is a {queue} issue.",
    "I would label this ticket as {queue}.",
]


def make_pairs(rows: list[dict], seed: int = SEED) -> list[dict]:
    """One pair per supervised row (see the module docstring)."""
    rng = random.Random(seed)
    pairs = []
    for i, row in enumerate(rows):
        label = row["output"]
        if i % 2 == 0:
            rejected = rng.choice([other for other in LABELS if other != label])
        else:
            rejected = SENTENCES[(i // 2) % len(SENTENCES)].format(queue=label.replace("_", " "))
        pairs.append({"prompt": f"{row['instruction']}\n\n{row['input']}", "chosen": label, "rejected": rejected})
    return pairs


def render(pairs: list[dict]) -> str:
    return "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the checked-in file differs")
    args = parser.parse_args(argv)
    rows = [json.loads(line) for line in SOURCE.read_text(encoding="utf-8").splitlines() if line.strip()]
    text = render(make_pairs(rows))
    if args.check:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is stale; run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {len(rows)} pairs to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
