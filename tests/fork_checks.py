"""What every research fork's tests (tests/test_research_*.py) do the same way: load research/NAME.py as a module, run
it through test_ddpg_her.py's runner, and check its end to end contract with ddpg_her.py: a run resumed after epoch 1
ends exactly as an uninterrupted one, and evaluate.py reads its model."""

import importlib.util
import os
import re
from functools import partial

import torch
from test_ddpg_her import metrics, run, run_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_fork(name):
    """research/NAME.py: the module (its functions under test), its path, and test_ddpg_her.py's runner on it."""
    script = os.path.join(ROOT, "research", name + ".py")
    spec = importlib.util.spec_from_file_location(name, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, script, partial(run, script=script)


def check_resumes_exactly_and_evaluates(tmp_path, script, options, nets, env_id="FetchReach-v0", refused=None):
    """A run of 2 epochs, and one of 1 epoch resumed to 2 (both with `options`): the same metrics.csv (timing columns
    aside), the same state at the end for each entry of `nets` (names in checkpoint.pt's state), and evaluate.py reads
    the resumed run's model.pt (refused: a policy evaluate.py cannot run, whose refusal must say `refused`, with no
    traceback). Returns both checkpoints, (whole, resumed), for the fork's own checks."""
    fork = partial(run, script=script)
    fork(tmp_path, *options, "--n-epochs", "2", "--exp-name", "whole")
    fork(tmp_path, *options, "--n-epochs", "1", "--exp-name", "parts", "--save-model")
    whole_dir, path = run_dir(tmp_path, "whole"), run_dir(tmp_path, "parts")
    proc = fork(tmp_path, "--resume", path, "--n-epochs", "2")
    assert "resumed" in proc.stdout and "after epoch 1" in proc.stdout, proc.stdout
    rows = metrics(path)
    assert len(rows) == 2 and rows == metrics(whole_dir)
    whole, resumed = (torch.load(os.path.join(d, "checkpoint.pt"), weights_only=False) for d in (whole_dir, path))
    for name in nets:
        for key, value in whole["state"][name].items():
            assert torch.equal(value, resumed["state"][name][key]), (name, key)
    proc = run(tmp_path, path, "--episodes", "2", check=refused is None, script=os.path.join(ROOT, "evaluate.py"))
    if refused is not None:
        assert proc.returncode != 0 and "Traceback" not in proc.stderr and refused in proc.stderr, proc.stderr
        return whole, resumed
    assert re.search(rf"^{env_id}( \(.*\))?: test success", proc.stdout, re.M), proc.stdout  # (the env's options)
    assert f"{os.path.basename(script)}, 2 epochs" in proc.stdout, proc.stdout
    return whole, resumed
