"""`tuneforge generate` and `tuneforge chat` on the tiny model, in-process."""

import io

from tuneforge.cli.main import main


def test_generate_answers_each_prompt(tiny_model_dir, capsys):
    code = main(["generate", str(tiny_model_dir), "-p", "hello", "-p", "where is my parcel", "--max-new-tokens", "4"])
    out = capsys.readouterr().out
    assert code == 0
    assert "> hello" in out and "> where is my parcel" in out


def test_chat_reads_turns_until_exit(tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n/reset\nhi again\n/exit\n"))
    code = main(["chat", str(tiny_model_dir), "--max-new-tokens", "3", "--temperature", "0"])
    out = capsys.readouterr().out
    assert code == 0 and out.count("model> ") == 2


def test_chat_ends_on_end_of_input(tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["chat", str(tiny_model_dir)]) == 0


def test_every_command_has_help(capsys):
    from tuneforge.cli.main import COMMANDS

    for name in COMMANDS:
        try:
            code = main([name, "--help"])
        except SystemExit as exc:  # pragma: no cover - typer may exit for groups
            code = exc.code
        assert code == 0, name
        assert "Usage" in capsys.readouterr().out
