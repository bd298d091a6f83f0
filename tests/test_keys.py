"""API keys from an env var, a file or a command, and never shown anywhere, errors included."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ralph import keys
from ralph.errors import ConfigError
from ralph.keys import KeySource, Secret, resolve_key
from ralph.recipe.model import Agent
from ralph.secrets import redact
from tests.conftest import gone

KEY = "sk-test-keys-0123456789abcdefXYZ"


def agent(**fields: object) -> Agent:
    return Agent(name="writer", provider="openai", **fields)  # type: ignore[arg-type]


def key_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def python(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


def test_no_key_source_means_no_key() -> None:
    assert resolve_key(Agent(name="local", provider="echo")) is None


def test_key_from_the_environment_is_stripped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RALPH_TEST_KEY", f"  {KEY}\n")
    secret = resolve_key(agent(api_key_env="RALPH_TEST_KEY"))
    assert secret is not None and secret.value == KEY


@pytest.mark.parametrize("value", [None, "", "   \n"])
def test_a_missing_or_blank_env_var_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("RALPH_TEST_KEY", raising=False)
    else:
        monkeypatch.setenv("RALPH_TEST_KEY", value)
    with pytest.raises(ConfigError) as caught:
        resolve_key(agent(api_key_env="RALPH_TEST_KEY"))
    assert "agent 'writer'" in str(caught.value)
    assert "RALPH_TEST_KEY is not set" in str(caught.value)


def test_a_key_read_is_masked_in_messages_whatever_its_shape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shapeless = "tok_0a1b2c3d4e5f-selfhosted"  # no known key format: only reading it tells
    assert redact(f"denied for {shapeless}") == f"denied for {shapeless}"
    monkeypatch.setenv("RALPH_TEST_KEY", shapeless)
    resolve_key(agent(api_key_env="RALPH_TEST_KEY"))
    assert redact(f"denied for {shapeless}.") == "denied for [REDACTED:key]."


@pytest.mark.parametrize("character", ["\n", "\r", "\x01", "\x7f", "ключ"])
def test_a_key_that_cannot_go_into_a_header_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, character: str
) -> None:
    monkeypatch.setenv("RALPH_TEST_KEY", f"sk-first-half{character}second-half")
    with pytest.raises(ConfigError) as caught:
        resolve_key(agent(api_key_env="RALPH_TEST_KEY"))
    message = str(caught.value)
    assert message.startswith("agent 'writer': the key from environment variable RALPH_TEST_KEY")
    assert "printable ASCII" in message and "half" not in message


def test_key_from_a_file_is_stripped(tmp_path: Path) -> None:
    path = key_file(tmp_path / "key.txt", f"\n{KEY}  \n")
    secret = resolve_key(agent(api_key_file=path))
    assert secret is not None and secret.value == KEY


def test_an_empty_key_file_is_a_clear_error(tmp_path: Path) -> None:
    path = key_file(tmp_path / "key.txt", " \n\n")
    with pytest.raises(ConfigError, match=r"api_key_file .*key\.txt is empty"):
        resolve_key(agent(api_key_file=path))


def test_a_missing_key_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read api_key_file .*: No such file"):
        resolve_key(agent(api_key_file=tmp_path / "absent.txt"))


def test_a_folder_or_binary_file_as_key_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read api_key_file"):
        resolve_key(agent(api_key_file=tmp_path))
    binary = tmp_path / "key.bin"
    binary.write_bytes(b"\xff\xfe\x00sk-")
    binary.chmod(0o600)
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        resolve_key(agent(api_key_file=binary))


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_key_file_others_can_read_is_refused_unless_allowed(tmp_path: Path, mode: int) -> None:
    path = key_file(tmp_path / "key.txt", KEY, mode)
    with pytest.raises(ConfigError) as caught:
        resolve_key(agent(api_key_file=path))
    message = str(caught.value)
    assert f"mode {mode:o}" in message and "chmod 600" in message
    assert "--allow-insecure-key-file" in message and KEY not in message
    secret = resolve_key(agent(api_key_file=path), allow_insecure_file=True)
    assert secret is not None and secret.value == KEY


def test_key_source_reads_once_and_rereads_once(tmp_path: Path) -> None:
    path = key_file(tmp_path / "key.txt", KEY)
    keys = KeySource(agent(api_key_file=path))
    assert keys.get() == Secret(KEY)
    path.write_text("sk-rotated-0000000000000000")
    assert keys.get() == Secret(KEY), "a key is read once per run"
    assert keys.reread() == Secret("sk-rotated-0000000000000000")
    path.write_text("sk-rotated-again-000000000000")
    assert keys.reread() is None, "and re-read at most once"


def test_key_from_a_command_is_its_trimmed_stdout() -> None:
    command = python(f"print('  {KEY}  '); print()")
    secret = resolve_key(agent(api_key_command=command))
    assert secret is not None and secret.value == KEY


def test_a_failing_key_command_reports_only_its_exit_status() -> None:
    leaky = python(
        "import sys\n"
        f"print('partial {KEY}')\n"
        f"print('stderr mentions {KEY[:20]}', file=sys.stderr)\n"
        "sys.exit(3)"
    )
    with pytest.raises(ConfigError) as caught:
        resolve_key(agent(api_key_command=leaky))
    message = str(caught.value)
    assert "exit 3" in message
    assert sys.executable in message  # the program is named so the user knows which one
    assert KEY[:12] not in message
    assert "partial" not in message and "stderr mentions" not in message


def test_a_key_command_that_prints_nothing_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"api_key_command .* printed no key"):
        resolve_key(agent(api_key_command=python("print('   ')")))


def test_a_key_command_that_prints_bytes_that_are_not_utf8_is_an_error() -> None:
    printer = python(f"import sys; sys.stdout.buffer.write(b'{KEY[:12]}\\xff')")
    with pytest.raises(ConfigError) as caught:
        resolve_key(agent(api_key_command=printer))
    message = str(caught.value)
    assert message == (
        f"agent 'writer': api_key_command '{sys.executable}' printed something that is not "
        "UTF-8 text; a key is one line of printable ASCII"
    )


def test_a_key_command_that_cannot_start_says_why() -> None:
    with pytest.raises(ConfigError, match="could not run: No such file or directory"):
        resolve_key(agent(api_key_command=("ralph-test-no-such-program",)))


def test_a_key_command_that_hangs_is_stopped_with_all_it_started(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(keys, "_KEY_COMMAND_TIMEOUT_S", 0.5)
    child = tmp_path / "child.pid"
    hang = f"sleep 30 & echo $! > {child}; wait"
    with pytest.raises(ConfigError, match=r"did not finish within 0\.5s"):
        resolve_key(agent(api_key_command=("sh", "-c", hang)))
    assert gone(int(child.read_text())), "the grandchild outlived the timeout"
