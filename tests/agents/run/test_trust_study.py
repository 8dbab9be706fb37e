"""A study dir from elsewhere runs no code on --optimize --resume without --trust-run-dir (study.sig)."""

from __future__ import annotations

import pytest

from agents.config import validate
from agents.run import trust
from envs.errors import UserError

STUDY = b"env:\n  id: process\n  command: ./sim\nsearch:\n  trials: 2\n"


def test_a_study_runs_code_only_when_this_user_signed_it(tmp_path, monkeypatch):
    monkeypatch.setenv("NONDIFF_KEY_FILE", str(tmp_path / "key" / "nondiff.key"))
    study, sig = tmp_path / "study.yaml", tmp_path / "study.sig"
    study.write_bytes(STUDY)
    cfg = validate({"env": {"id": "process", "command": "./sim"}}, "x")
    with pytest.raises(UserError, match=r"its study.yaml is not signed \(no study.sig.*its trials would "
                                        r"start the program env.command='./sim'.*--trust-run-dir"):
        trust.check_study(study, sig, STUDY, cfg, trusted=False)
    trust.check_study(study, sig, STUDY, cfg, trusted=True)  # the user vouches for it
    trust.sign_file(sig, STUDY, trust.STUDY_DOMAIN)  # what train.py --optimize writes with study.yaml
    trust.check_study(study, sig, STUDY, cfg, trusted=False)
    with pytest.raises(UserError, match="does not match its signature"):  # edited after it was signed
        trust.check_study(study, sig, STUDY.replace(b"./sim", b"./evil"), cfg, trusted=False)
    trust.sign_file(sig, STUDY)  # a run config's signature of the same bytes is no study's
    with pytest.raises(UserError, match="does not match its signature"):
        trust.check_study(study, sig, STUDY, cfg, trusted=False)
    trust.check_study(study, sig, STUDY, validate({"env": {"id": "CartPole-v1"}}, "x"), trusted=False)
