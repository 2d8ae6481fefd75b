"""The typer command-line interface: thin wrappers over the Python API."""
