"""The bridge token: env var, token file or command line; never in a file, checkpoint, log line or `ps`."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

from agents.config import apply_override, dump, redact_argv, tokens, validate
from agents.run.backend import get_backend
from agents.run.envfactory import env_factory
from agents.run.resolved import check_env_kwargs, resolve_env
from envs.errors import UserError

# per process: a test running beside this one (xdist) holds another token
TOKEN = f"tok-{secrets.token_hex(16)}"

# A third-party program over pipes that insists on the token: nondiff's SDK, Pendulum inside. It reads the
# token from the file named on its command line (a path is no secret), so the trainer's copy must match.
PROGRAM = textwrap.dedent("""
    import sys
    from pathlib import Path
    import gymnasium as gym
    from envs.bridge.sdk import serve
    serve(gym.make("Pendulum-v1"), name="secret-pendulum", token=Path(sys.argv[1]).read_text().strip())
""")


@pytest.mark.parametrize(("argv", "expected"), [
    (["--set", f"env.token={TOKEN}"], ["--set", "env.token=***"]),
    ([f"--set=env.token={TOKEN}"], ["--set=env.token=***"]),
    ([f"--se=env.token={TOKEN}"], ["--se=env.token=***"]),
    (["--set", f" env.token = {TOKEN}"], ["--set", " env.token =***"]),
    (["--set", "env.token_file=/run/tok", "--set", "env.token_env=MY_TOKEN"],
     ["--set", "env.token_file=/run/tok", "--set", "env.token_env=MY_TOKEN"]),
], ids=["set-space", "set-equals", "abbreviated", "spaces", "file-and-env-kept"])
def test_redact_argv(argv, expected):
    assert redact_argv(["train.py", "--env", "process", *argv]) == ["train.py", "--env", "process", *expected]


def test_set_token_warns_that_ps_shows_it_and_every_dump_redacts_it(caplog):
    raw: dict = {"env": {"id": "process", "command": "prog"}}
    with caplog.at_level(logging.WARNING, logger="agents.config"):
        apply_override(raw, "env.token=0x1f")  # taken as typed, not as the YAML number 31
    assert [r.getMessage().count("\n") for r in caplog.records] == [0]
    assert "`ps`" in caplog.text and "NONDIFF_TOKEN" in caplog.text and "token_file" in caplog.text
    cfg = validate(raw, "test")
    assert cfg.env.token == "0x1f" and cfg.env.token_source().literal == "0x1f"
    text = dump(cfg) + cfg.model_dump_json() + repr(cfg.model_dump(mode="json"))
    assert "0x1f" not in text and "token: '***'" in dump(cfg)


def test_errors_never_echo_the_token():
    with pytest.raises(UserError) as e:
        validate({"env": {"id": "process", "token": TOKEN, "token_file": "/x"}}, "test")
    assert "one way" in str(e.value) and TOKEN not in str(e.value)
    with pytest.raises(UserError, match="not an eval_kwargs key") as e:
        validate({"env": {"eval_kwargs": {"token": TOKEN}}}, "test")
    assert TOKEN not in str(e.value)
    with pytest.raises(UserError, match="not valid YAML") as e:
        apply_override({}, "env.eval_kwargs={token: " + TOKEN)
    assert TOKEN not in str(e.value)


def _token_file(path: Path, text: str = TOKEN, mode: int = 0o600) -> Path:
    path.write_text(text + "\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize(("mode", "text", "message"), [
    (0o640, TOKEN, r"accessible to group or others \(mode 640\); run `chmod 600"),
    (0o604, TOKEN, r"accessible to group or others \(mode 604\)"),
    (0o600, "", "is empty"),
    (None, TOKEN, "cannot be read"),
], ids=["group-readable", "world-readable", "empty", "missing"])
def test_unusable_token_file_is_one_line(tmp_path, mode, text, message):
    path = tmp_path / "token"
    if mode is not None:
        _token_file(path, text, mode)
    with pytest.raises(UserError, match=message) as e:
        tokens.resolve(tokens.TokenSource(file=str(path)))
    assert "\n" not in str(e.value) and TOKEN not in str(e.value)


def test_resolution_order_and_the_redacted_config(tmp_path, monkeypatch):
    monkeypatch.delenv("NONDIFF_TOKEN", raising=False)
    monkeypatch.delenv("MY_TOKEN", raising=False)
    path = _token_file(tmp_path / "token")
    assert tokens.resolve(tokens.TokenSource()) is None
    assert tokens.resolve(tokens.TokenSource(literal="lit")) == "lit"
    assert tokens.resolve(tokens.TokenSource(file=str(path))) == TOKEN
    with pytest.raises(UserError, match="'MY_TOKEN', but that environment variable is not set"):
        tokens.resolve(tokens.TokenSource(env_var="MY_TOKEN"))
    with pytest.raises(UserError, match=r"never stored .* NONDIFF_TOKEN=…"):
        tokens.resolve(tokens.TokenSource(literal=tokens.REDACTED))  # a resumed run without the env var
    monkeypatch.setenv("MY_TOKEN", "from-env")
    assert tokens.resolve(tokens.TokenSource(literal=tokens.REDACTED, env_var="MY_TOKEN")) == "from-env"
    monkeypatch.setenv("NONDIFF_TOKEN", "default-var")
    assert tokens.resolve(tokens.TokenSource(literal=tokens.REDACTED)) == "default-var"


def test_token_for_an_adapter_without_one_is_refused(tmp_path, monkeypatch):
    cfg = validate({"env": {"id": "CartPole-v1", "token_file": str(_token_file(tmp_path / "t"))}}, "test")
    with pytest.raises(UserError, match="'CartPole-v1' takes no bridge token"):
        check_env_kwargs(cfg, resolve_env(cfg, get_backend("sb3").channels_first))
    monkeypatch.setenv("NONDIFF_TOKEN", TOKEN)  # the default variable goes only to adapters that take a token
    plain = validate({"env": {"id": "CartPole-v1"}}, "test")
    env = resolve_env(plain, get_backend("sb3").channels_first)
    check_env_kwargs(plain, env)
    env_factory(plain, env)().close()
    assert plain.env.token_env is None


@pytest.fixture
def program(tmp_path):
    """The token-checking program, its token file (0600) and the ``env.command`` that runs it."""
    prog = tmp_path / "secret_program.py"
    prog.write_text(PROGRAM)
    tok = _token_file(tmp_path / "program_token")
    return f"{sys.executable} {prog} {tok}", tok


FAST = ["--env", "process", "--timesteps", "256", "--num-envs", "2", "--seed", "1", "--quiet",
        "--set", "agent.n_steps=64", "--set", "agent.batch_size=64", "--set", "agent.n_epochs=1",
        "--set", "train.checkpoint_every=128", "--set", "eval.every=128", "--set", "eval.episodes=1",
        "--set", "env.max_episode_steps=64"]


def _files_holding(run: Path, secret: bytes) -> list[str]:
    files = [p for p in run.rglob("*") if p.is_file()]
    assert any(p.suffix == ".safetensors" for p in files) and any("tfevents" in p.name for p in files)
    return [str(p.relative_to(run)) for p in files if secret in p.read_bytes()]


def _ps_scan(proc: subprocess.Popen[str], marker: str) -> tuple[int, list[str]]:
    """Read every process's command line (what `ps` shows) until ``proc`` exits.

    Returns how many scans saw a process whose command line holds ``marker`` (the spawned program), and the
    command lines that held the token.
    """
    seen, leaked = 0, []
    while proc.poll() is None:
        lines = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ")
                                 .decode(errors="replace"))
                except OSError:
                    continue
        seen += any(marker in line for line in lines)
        leaked += [line for line in lines if TOKEN in line]
        time.sleep(0.2)
    return seen, leaked


def _train(args: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], int, list[str]]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen, leaked = _ps_scan(proc, "secret_program.py")
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), seen, leaked


@pytest.mark.parametrize("how", ["env-var", "token-file", "command-line"])
def test_bridge_token_reaches_the_program_and_nothing_else(tmp_path, program, how):
    command, program_token = program
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "NONDIFF_TOKEN"} | {"PYTHONUNBUFFERED": "1"}
    args = [*FAST, "--run-dir", str(run), "--set", f"env.command={command}"]
    if how == "env-var":
        env["NONDIFF_TOKEN"] = TOKEN
    elif how == "token-file":
        args += ["--set", f"env.token_file={program_token}"]
    else:
        args += ["--set", f"env.token={TOKEN}"]
    done, seen, leaked = _train(args, env)
    assert done.returncode == 0, done.stderr[-3000:]
    # the program checks the trainer's HMAC with the token: 256 steps prove the token reached the adapter
    assert (run / "final" / "model.safetensors").is_file() and list((run / "checkpoints").glob("*.json"))
    assert _files_holding(run, TOKEN.encode()) == []
    assert TOKEN not in done.stdout + done.stderr
    config = (run / "config.yaml").read_text()
    expected = {"env-var": "token_env: NONDIFF_TOKEN", "token-file": f"token_file: {program_token}",
                "command-line": "token: '***'"}[how]
    assert expected in config
    assert seen > 0  # the scan ran while the program was alive
    if how == "command-line":  # the scan is real: a token on the command line is what `ps` shows
        assert leaked and "shows the token to every user of this machine in `ps`" in done.stderr
        assert "env.token=***" in (run / "command.txt").read_text()
    else:
        assert leaked == [] and "`ps`" not in done.stderr


def test_resume_and_evaluate_need_the_token_again(tmp_path, program):
    command, _ = program
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "NONDIFF_TOKEN"}
    done = run_cli("train.py", *FAST, "--run-dir", str(run), "--set", f"env.command={command}",
                   "--set", f"env.token={TOKEN}", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for script, args in (("train.py", ["--resume", str(run), "--timesteps", "128", "--quiet"]),
                         ("evaluate.py", [str(run), "--episodes", "1"])):
        refused = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT, env=env, text=True,
                                 capture_output=True, timeout=300)
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert refused.stderr.count("\n") == 1 and "NONDIFF_TOKEN=…" in refused.stderr, refused.stderr
        again = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT, text=True,
                               env=env | {"NONDIFF_TOKEN": TOKEN}, capture_output=True, timeout=300)
        assert again.returncode == 0, again.stderr[-3000:]
    assert _files_holding(run, TOKEN.encode()) == []
    assert (run / "command.txt").read_text().count("\n") == 2  # the resume appended its (token-free) line


@pytest.mark.ray
def test_command_line_token_reaches_rllib_env_runners_and_no_file(tmp_path, program):
    command, _ = program
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "NONDIFF_TOKEN"}
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), *FAST, "--run-dir", str(run),
                           "--backend", "rllib", "--num-env-runners", "1", "--set", "rllib.num_cpus=2",
                           "--set", f"env.command={command}",
                           "--set", f"env.token={TOKEN}"], cwd=ROOT, env=env, text=True, capture_output=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _files_holding(run, TOKEN.encode()) == [] and "token: '***'" in (run / "config.yaml").read_text()
