"""Config schema: unknown keys with suggestions, typed overrides, wrong types with their path."""

from __future__ import annotations

import os
import re

import pytest

from agents.config import apply_override, dump, load_yaml, validate
from envs.errors import UserError


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(UserError, match=r"unknown key 'agent.learning_rat'; did you mean 'learning_rate'"):
        validate({"agent": {"learning_rat": 1e-3}}, "x.yaml")


def test_unknown_section_suggests():
    with pytest.raises(UserError, match="did you mean 'train'"):
        validate({"trian": {}}, "x.yaml")


def test_wrong_type_names_the_field_path():
    with pytest.raises(UserError, match=r"'agent.n_epochs'.*got 'many'"):
        validate({"agent": {"n_epochs": "many"}}, "x.yaml")


@pytest.mark.parametrize(("section", "where", "key"), [
    ({"selfplay": {"temperature": "hot"}}, "selfplay.temperature", "selfplay.temperature"),  # a union
    ({"agent": {"net_arch": [64, "x"]}}, "agent.net_arch.1", "agent.net_arch"),  # an item of a list
])
def test_the_fix_names_a_key_that_set_takes(section, where, key):
    """Was: 'selfplay.temperature.float' (pydantic's tag of the union's member) and --set
    selfplay.temperature.float=VALUE or --set agent.net_arch.1=VALUE, which --set refuses (SECTION.KEY)."""
    with pytest.raises(UserError) as e:
        validate(section, "x.yaml")
    assert str(e.value).startswith(f"x.yaml: '{where}' input should be a valid ")
    assert str(e.value).endswith(f"; fix the value in the YAML or with --set {key}=VALUE")


def test_override_is_typed_by_the_schema():
    raw: dict = {}
    apply_override(raw, "agent.learning_rate=1e-3")
    apply_override(raw, "agent.net_arch=[32, 32]")
    apply_override(raw, "train.vec_env=subproc")
    cfg = validate(raw, "cli")
    assert cfg.agent.learning_rate == pytest.approx(1e-3) and isinstance(cfg.agent.learning_rate, float)
    assert cfg.agent.net_arch == [32, 32] and cfg.train.vec_env == "subproc"


def test_override_sets_one_entry_of_a_mapping_key():
    """``--set rllib.extra.vf_clip_param=10`` was "expected SECTION.KEY=VALUE", though the unknown-key
    message names ``rllib.extra.vf_clip_param`` as a key; only the whole mapping could be given."""
    raw: dict = {"rllib": {"extra": {"lambda_": 0.9}}}
    apply_override(raw, "rllib.extra.vf_clip_param=10")
    apply_override(raw, "env.eval_kwargs.clip_rewards=false")
    apply_override(raw, "search.space.agent.learning_rate={low: 1.0e-4, high: 1.0e-3}")  # a dotted entry
    assert raw["rllib"]["extra"] == {"lambda_": 0.9, "vf_clip_param": 10}  # the other entries kept
    assert raw["env"]["eval_kwargs"] == {"clip_rewards": False}
    assert raw["search"]["space"] == {"agent.learning_rate": {"low": 1e-4, "high": 1e-3}}
    with pytest.raises(UserError, match="'agent.gamma' is not a mapping, so it has no entry 'x'"):
        apply_override({}, "agent.gamma.x=1")
    with pytest.raises(UserError, match="'rllib.extra' is list here, not a mapping of entries"):
        apply_override({"rllib": {"extra": [1]}}, "rllib.extra.a=1")


def test_exponent_numbers_without_a_dot_are_numbers_as_in_yaml_1_2(tmp_path):
    """PyYAML (YAML 1.1) read ``1e6`` and ``3e-4`` as strings: 'timesteps: 1e6' was "unable to parse string
    as an integer (got '1e6')". Configs and --set now read them as numbers; 1.1's booleans stay."""
    path = tmp_path / "c.yaml"
    path.write_text("env: {id: CartPole-v1}\ntrain: {timesteps: 1e6}\nagent: {learning_rate: 3E-4}\n"
                    "eval: {deterministic: yes}\n")
    cfg = validate(load_yaml(path), str(path))
    assert cfg.train.timesteps == 1_000_000 and cfg.agent.learning_rate == 3e-4 and cfg.eval.deterministic
    raw: dict = {"env": {"id": "CartPole-v1"}}
    apply_override(raw, "agent.ent_coef=1e-2")
    apply_override(raw, "train.timesteps=2.5e4")
    apply_override(raw, "env.token=1e6")  # a token is taken as typed
    assert raw["agent"]["ent_coef"] == 0.01 and raw["train"]["timesteps"] == 25_000.0
    assert raw["env"]["token"] == "1e6"
    with pytest.raises(UserError, match=r"'train.timesteps' input should be a valid integer, got a number "
                                        r"with a fractional part \(got 1500\.5\)"):
        validate({**raw, "train": {"timesteps": 1.5005e3}}, "x")


def test_override_rejects_unknown_and_malformed():
    with pytest.raises(UserError, match="did you mean 'gamma'"):
        apply_override({}, "agent.gama=0.9")
    with pytest.raises(UserError, match="expected SECTION.KEY=VALUE"):
        apply_override({}, "gamma0.9")


def test_env_section_passes_adapter_kwargs():
    cfg = validate({"env": {"id": "robot", "frame_skip": 3}}, "x")
    assert cfg.env.adapter_kwargs() == {"frame_skip": 3}


def test_invalid_yaml_reports_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent:\n  gamma: [0.9\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_yaml(bad)
    with pytest.raises(UserError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")


def _laughs(levels: int = 9) -> str:
    """A config of a few lines whose nested aliases expand to 10**levels values ("billion laughs")."""
    lines = ["env:", "  id: CartPole-v1", "rllib:", "  extra:", "    a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"    a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text, says", [
    (_laughs(), "holds more than 100,000 values (YAML aliases count each time they are used)"),
    ("env: {id: CartPole-v1, x: " + "[" * 100 + "]" * 100 + "}\n", "nested over 64 deep"),
    ("env: {x: " + "[" * 50_000 + "]" * 50_000 + "}\n", "nested too deeply for YAML to read"),
    ("env: {id: CartPole-v1}\n#" + "x" * 4 * 2**20 + "\n", "is larger than 4 MiB"),
    (b"env: {id: CartPole-v1}\n\xff\xfe: 1\n", "is not valid YAML: unacceptable character #x00ff"),
])
def test_a_config_too_large_too_deep_or_undecodable_is_one_line(tmp_path, text, says):
    path = tmp_path / "c.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(UserError, match=re.escape(says)) as e:
        load_yaml(path)
    assert str(e.value).startswith(f"config file {str(path)!r}") and "\n" not in str(e.value)


def test_a_config_with_aliases_that_stay_small_still_loads(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(_laughs(levels=4))  # 10**4 values: a config may hold that
    assert len(load_yaml(path)["rllib"]["extra"]["a3"]) == 10


def test_a_config_that_is_no_regular_file_is_not_read(tmp_path):
    os.mkfifo(tmp_path / "fifo.yaml")  # reading it would block for ever
    with pytest.raises(UserError, match="is no regular file"):
        load_yaml(tmp_path / "fifo.yaml")


def test_a_seed_outside_numpys_range_is_refused_by_the_schema():
    # was exit 1 "unexpected ValueError: Seed must be between 0 and 2**32 - 1" once the run had started
    for seed in (-5, 2**32):
        with pytest.raises(UserError, match=r"'train.seed' input should be (greater|less) than"):
            validate({"env": {"id": "CartPole-v1"}, "train": {"seed": seed}}, "x")
    from agents.config.search import SearchSection

    with pytest.raises(ValueError, match="greater than or equal to 0"):
        SearchSection(seed=-5)
    assert validate({"env": {"id": "CartPole-v1"}, "train": {"seed": 2**32 - 1}}, "x").train.seed == 2**32 - 1


def test_a_yaml_boolean_is_no_number_anywhere_in_the_schema():
    """pydantic's lax mode read ``timesteps: true`` as 1 (one rollout trained, exit 0) and ``net_arch:
    [true]`` as [1]. A boolean where a number belongs is refused in one line; a boolean setting still takes
    one, and so does a setting that takes a number or a boolean."""
    base = {"env": {"id": "CartPole-v1"}}
    for section, key, value in [("train", "timesteps", True), ("agent", "gamma", False),
                                ("agent", "net_arch", [64, True]), ("agent", "ent_coef", True),
                                ("env", "max_episode_steps", True), ("selfplay", "temperature", [1.0, True]),
                                ("blackbox", "calls_per_instance", True)]:
        raw = {**base, section: {**base.get(section, {}), key: value}}
        with pytest.raises(UserError, match=rf"'{section}.{key}' expected a number, not a YAML boolean "
                                            r"\(true/false\) \(got "):
            validate(raw, "x.yaml")
    off = {"agent": {"ortho_init": False}, "env": {"id": "CartPole-v1", "action_mask": False}}
    cfg = validate(off, "x.yaml")
    assert cfg.agent.ortho_init is False and cfg.env.action_mask == "none"
    assert validate({**base, "train": {"timesteps": 512}}, "x.yaml").train.timesteps == 512


def test_a_config_whose_run_dir_copy_could_not_be_read_back_is_refused_before_the_run(tmp_path):
    from agents.config.loading import _oversize, check_writable, parse_yaml

    near = {"env": {"id": "CartPole-v1"}, "rllib": {"extra": {"x": [1] * 99_900}}}
    assert _oversize(near) is None  # as a config file, within the bounds ...
    cfg = validate(near, "near.yaml")
    with pytest.raises(UserError, match="near.yaml: the resolved config .* holds more than 100,000 values"):
        check_writable(cfg, "near.yaml")  # ... its config.yaml, defaults filled in, would not be
    with pytest.raises(UserError, match="more than 100,000 values"):
        parse_yaml(dump(cfg).encode(), tmp_path / "config.yaml")  # as evaluate/--resume would find it
    check_writable(validate({"env": {"id": "CartPole-v1"}}, "x"), "x")  # an ordinary config passes


@pytest.mark.parametrize(("env", "algo"), [("CartPole-v1", "ppo"), ("CartPole-v1", "a2c"),
                                           ("Pendulum-v1", "sac"), ("Pendulum-v1", "td3")])
def test_a_runs_own_config_yaml_starts_a_new_run(tmp_path, env, algo):
    """``train.py --config RUN/config.yaml`` (what a refused ``--resume`` tells the user to run) starts a new
    run with the same settings: config.yaml lists every key, other algorithms' at their defaults, which the
    per-algorithm key check refused ('--algo ppo does not take agent.action_noise, ...')."""
    from agents.run.cli import train_parser
    from agents.run.runner import build_config

    def built(argv):
        cfg, _, spare = build_config(train_parser().parse_args(argv))
        if spare is not None:
            spare.close()
        return cfg
    # a numeric entropy weight, beside target_entropy at its default (config.yaml lists it), was refused too
    coef = [] if algo == "td3" else ["--set", "agent.ent_coef=0.01"]
    first = built(["--env", env, "--algo", algo, "--set", "agent.gamma=0.97", *coef])
    path = tmp_path / "config.yaml"
    path.write_text(dump(first))  # as train.py writes it into the run dir
    again = built(["--config", str(path)])
    assert again.agent == first.agent and again.train == first.train
    with pytest.raises(UserError, match=rf"--algo {algo} does not take agent\.(n_epochs|tau)"):
        foreign = "agent.tau=0.5" if algo in ("ppo", "a2c") else "agent.n_epochs=3"
        built(["--config", str(path), "--set", foreign])


def test_a_check_across_one_sections_keys_is_its_own_line_with_the_fix():
    """A section's own validator (keys that do not fit together) names the keys and the fix; the section's
    whole mapping ('(got {...})') and a '--set agent=VALUE' that set cannot take are left out."""
    with pytest.raises(UserError) as e:
        validate({"agent": {"backend": "blackbox", "algo": "ppo", "gamma": 0.9}}, "c.yaml")
    assert str(e.value) == ("c.yaml: --backend blackbox runs --algo cma|amortised|surrogate|chain, and only "
                            "it does; got backend 'blackbox' with algo 'ppo': add --algo cma (or amortised, "
                            "surrogate, chain)")
    with pytest.raises(UserError, match=r"^c.yaml: .*got backend 'sb3' with algo 'cma': add --backend "
                                        r"blackbox, or choose another --algo$"):
        validate({"agent": {"algo": "cma"}}, "c.yaml")
