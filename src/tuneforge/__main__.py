"""`python -m tuneforge ...` (used by `accelerate launch -m tuneforge train ...`)."""

from tuneforge.cli.main import run

run()
