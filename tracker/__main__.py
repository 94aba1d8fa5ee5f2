"""`python -m tracker` runs the CLI (used where the console script is not on PATH)."""

from tracker.cli import main

main()
