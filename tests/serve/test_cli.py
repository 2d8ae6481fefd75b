"""``tuneforge keys`` and ``tuneforge serve`` through the CLI entry point, in-process."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tuneforge.cli import main as cli_main


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run ``tuneforge`` with only this stage's commands (others may not be importable in isolation)."""
    monkeypatch.setattr(cli_main, "COMMANDS", {k: cli_main.COMMANDS[k] for k in ("serve", "keys")})

    def run(*argv):
        code = cli_main.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_keys_create_list_revoke(cli, tmp_path):
    path = tmp_path / "keys.json"
    code, out, err = cli("keys", "create", "ci", "--file", str(path))
    assert code == 0 and out.strip().startswith("tf-") and "not shown again" in err
    key = out.strip()
    code, out, _ = cli("keys", "list", "--file", str(path))
    assert code == 0 and out.startswith("ci\t") and key not in out
    assert cli("keys", "revoke", "ci", "--file", str(path))[0] == 0
    code, _, err = cli("keys", "revoke", "ci", "--file", str(path))
    assert code == 2 and "no key named 'ci'" in err


def test_keys_create_duplicate_is_an_error(cli, tmp_path):
    path = tmp_path / "keys.json"
    cli("keys", "create", "ci", "--file", str(path))
    code, _, err = cli("keys", "create", "ci", "--file", str(path))
    assert code == 2 and "already exists" in err


@pytest.mark.parametrize("args,message", [
    ([], "API keys are required"),
    (["--no-auth", "--host", "0.0.0.0"], "loopback"),
    (["--no-auth", "--api-keys-file", "k.json"], "not both"),
    (["--no-auth", "--rate-limit", "lots"], "--rate-limit"),
    (["--no-auth", "--adapter", "nonsense"], "NAME=RUN_OR_ADAPTER_DIR"),
    (["--api-keys-file", "missing-keys.json"], "keys file not found"),
    (["--no-auth", "--batching", "dynamic"], "'dynamic' is not one of"),
])
def test_serve_refuses_bad_settings_before_loading(cli, tiny_model_dir, args, message):
    code, _, err = cli("serve", str(tiny_model_dir), *args)
    assert code == 2 and message in err


def test_serve_help_lists_options(cli):
    code, out, _ = cli("serve", "--help")
    assert code == 0 and "--api-keys-file" in out and "--max-batch-size" in out and "--batching" in out


def test_keys_create_with_scopes(cli, tmp_path):
    import json

    path = tmp_path / "keys.json"
    code, out, _ = cli("keys", "create", "app", "--file", str(path), "--models", "a,b", "--expires", "30d", "--admin")
    assert code == 0 and out.strip().startswith("tf-")
    record = json.loads(path.read_text())["keys"][0]
    assert record["models"] == ["a", "b"] and record["admin"] is True and record["expires"].endswith("+00:00")
    code, out, _ = cli("keys", "list", "--file", str(path))
    assert code == 0 and "a,b" in out and "expires 20" in out and "admin" in out
    code, _, err = cli("keys", "create", "bad", "--file", str(path), "--expires", "someday")
    assert code == 2 and "--expires 'someday'" in err


def test_serve_help_lists_hardening_options(cli):
    code, out, _ = cli("serve", "--help")
    assert code == 0 and "--trust-remote-code" in out and "--body-timeout" in out


def test_serve_without_its_extra_names_it(tmp_path):
    # A fresh interpreter in which fastapi cannot be imported: `tuneforge serve` names the extra to install.
    code = (
        "import sys; sys.modules['fastapi'] = None\n"
        "from tuneforge.cli.main import main\n"
        "sys.exit(main(['serve', 'smollm2-135m-instruct']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "pip install 'tuneforge[serve]'" in done.stderr and "fastapi" in done.stderr
    assert "Traceback" not in done.stderr
