"""run_plumbing.py's GPU path, tested on the CPU with mocks where a GPU is needed: bf16 only on bf16 units, a CUDA
graph that falls back to eager when capture fails, a one-line out-of-memory message, CPU-only checkpoint files, and
what a GPU run logs and records; and what a resume says of options its checkpoint predates."""

import contextlib
import copy
import json
import os
from dataclasses import asdict
from unittest import mock

import numpy as np
import pytest
import torch

import ddpg_her
import run_plumbing
from run_plumbing import Compute, Run, bf16_supported, cuda_graph, pick_compute

CUDA = torch.device("cuda")


@pytest.mark.parametrize("capability, expected", [((7, 5), False), ((7, 0), False), ((8, 0), True), ((9, 0), True)])
def test_bf16_only_on_gpus_with_bf16_units(monkeypatch, capability, expected):
    """A T4 or V100 (7.x) emulates bf16, slower than fp32: the scripts must run fp32 there; Ampere (8.0) and newer not."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # counts emulation
    assert bf16_supported(CUDA) is expected
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    threads = torch.get_num_threads()
    try:
        compute = pick_compute(ddpg_her.Args())
    finally:
        torch.set_num_threads(threads)
    assert compute.device == CUDA and compute.cudagraphs and compute.bf16 is expected


class FakeRun:
    def __init__(self):
        self.logged, self.config = [], {}

    def log(self, message):
        self.logged.append(message)

    def update_config(self, **changes):
        self.config.update(changes)


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda's stream and graph calls, as mocks; `graph_error`: what capturing raises (None: it works)."""
    state = dict(graph_error=None, replays=0)

    @contextlib.contextmanager
    def graph(g):
        yield
        if state["graph_error"]:
            raise state["graph_error"]

    class Graph:
        def replay(self):
            state["replays"] += 1

    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph", graph)
    monkeypatch.setattr(torch.cuda, "Stream", mock.MagicMock)
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", mock.MagicMock)
    return state


def test_cuda_graph_warms_up_captures_once_then_replays(fake_cuda):
    calls, run = [], FakeRun()
    step = cuda_graph(lambda: calls.append(1), run, warmup=3)
    for _ in range(6):
        step()
    assert len(calls) == 4  # 3 warm-up calls, then the capture (which records fn, running nothing)
    assert fake_cuda["replays"] == 3  # the capture's call and the next two run as replays
    assert run.logged == [] and run.config == {}


def test_a_capture_that_fails_goes_on_eagerly_and_says_so(fake_cuda, tmp_path, monkeypatch):
    """A fork whose update cannot be captured, or an old driver: the run goes on, eagerly, and its log and
    config.json say so, in one line."""
    fake_cuda["graph_error"] = RuntimeError("operation not permitted when stream is capturing\nmore")
    monkeypatch.chdir(tmp_path)
    run = Run(ddpg_her.Args(exp_name="g", env_id="FetchReach-v0"), ddpg_her.__file__)
    run.start({}, Compute(CUDA, True, True, 2, 2))
    calls = []
    step = cuda_graph(lambda: calls.append(1), run, warmup=3)
    for _ in range(6):
        step()
    assert len(calls) == 3 + 1 + 1 + 2  # warm-up, the failed capture, then eagerly: this call's update and the rest
    assert fake_cuda["replays"] == 0
    assert open(os.path.join(run.dir, "log.txt")).read() == ("warning: CUDA graph capture failed (RuntimeError: "
                                                             "operation not permitted when stream is capturing); "
                                                             "updates run eagerly from now on\n")
    config = json.load(open(os.path.join(run.dir, "config.json")))
    assert config["cudagraphs"] is False and config["cudagraphs_failed"].startswith("RuntimeError: operation")


def test_a_replay_buffer_too_big_for_the_gpu_says_how_big_and_what_to_lower(monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.53 GiB")

    monkeypatch.setattr(torch, "empty", out_of_memory)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1 * 2**30, 16 * 2**30))
    dims = dict(o=25, g=3, ag=3, u=4, x=28)  # FetchPush-v0 at --paper-budget: 19e6 transitions
    with pytest.raises(SystemExit) as exit_info:
        ddpg_her.EpisodeReplay(19_000_000, 50, dims, np.random.default_rng(0), CUDA)
    needed = 4 * 380_000 * (51 * 25 + 51 * 3 + 50 * 3 + 50 * 4)
    assert str(exit_info.value).endswith(
        f"error: the replay buffer needs {needed / 2**30:.2f} GiB of cuda memory, but only 1.00 GiB are free; lower "
        "--buffer-size (or run with --no-cuda, in the host's memory)")


def test_checkpoint_files_hold_only_cpu_tensors(monkeypatch, tmp_path):
    """A GPU run's model.pt and checkpoint.pt load with a plain torch.load on a CPU-only machine: the one save path
    copies every tensor, however deep, to the CPU. Here mocks stand in for CUDA tensors."""
    real = torch.arange(3.0)
    gpu = mock.MagicMock(spec=torch.Tensor)
    gpu.cpu.return_value = real
    saved = []
    monkeypatch.setattr(torch, "save", lambda obj, f: saved.append(obj))
    state = dict(actor={"w": gpu}, optimizer=dict(state={0: dict(step=gpu)}, param_groups=[dict(lr=1e-3)]),
                 rows=[dict(epoch=1)], pair=(gpu, 1))
    run_plumbing.atomic_save(state, str(tmp_path / "checkpoint.pt"))
    (obj,) = saved
    assert obj["actor"]["w"] is real and obj["optimizer"]["state"][0]["step"] is real and obj["pair"] == (real, 1)
    assert obj["optimizer"]["param_groups"] == [dict(lr=1e-3)] and obj["rows"] == [dict(epoch=1)]


def test_a_gpu_run_logs_no_cpu_threads_and_no_busy_warning(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(os, "getloadavg", lambda: (50.0, 50.0, 50.0))  # a busy machine
    for name, compute in (("gpu", Compute(CUDA, True, True, 8, 2)), ("cpu", Compute(torch.device("cpu"), False,
                                                                                     False, 8, 2))):
        run = Run(ddpg_her.Args(exp_name=name, env_id="FetchReach-v0"), ddpg_her.__file__)
        run.start({}, compute)
        log = open(os.path.join(run.dir, "log.txt")).read()
        config = json.load(open(os.path.join(run.dir, "config.json")))
        if name == "gpu":
            assert str(compute) == "envs on 2 threads, updates on cuda as CUDA graphs, bf16 matmuls"
            assert log == "" and config["threads"] is None
        else:
            assert str(compute) == "envs on 2 threads, updates on cpu (8 threads), fp32"
            assert "warning: the machine is busy" in log and config["threads"] == 8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (CI has none; scripts/gpu_bench.sh)")
def test_graph_and_eager_updates_agree_on_a_fixed_batch():
    """ddpg_her.py's update replayed as a CUDA graph computes what it computes eagerly: same networks, same fixed
    batch, 10 updates each, fp32. Tolerance 1e-5 (absolute, on weights of order 0.1): the graph replays the same
    kernels, so only a different cuBLAS algorithm choice could make them differ, and then in the last bits."""
    torch.manual_seed(0)
    device, dims = CUDA, dict(x=28, u=4)
    x, u = torch.randn(2, 4864, dims["x"], device=device), torch.rand(4864, dims["u"], device=device) * 2 - 1
    r = -(torch.rand(4864, 1, device=device) < 0.7).float()
    actor, critic = ddpg_her.Actor(28, 4, 256, 3, 1.0).to(device), ddpg_her.Critic(28, 4, 256, 3, 1.0).to(device)
    arms = []
    for graph in (False, True):
        nets = [copy.deepcopy(n) for n in (actor, critic, actor, critic)]
        opt = torch.optim.Adam([dict(params=nets[0].parameters(), lr=1e-3), dict(params=nets[1].parameters(),
                                                                                 lr=1e-3)], fused=True, capturable=True)
        norm, stats = ddpg_her.Normalizer(28, 0.01, 200.0, 5.0, device), torch.zeros(3, device=device)
        norm.update(x[0])

        def step():
            stats.add_(ddpg_her.update(nets, opt, norm, x, u, r, 0.98, 50.0, 1.0))

        fn = cuda_graph(step, warmup=3) if graph else step
        for _ in range(10):
            fn()
        torch.cuda.synchronize()
        arms.append((torch.cat([p.detach().flatten() for n in nets[:2] for p in n.parameters()]), stats.clone()))
    (eager, eager_stats), (graphed, graph_stats) = arms
    assert not torch.equal(eager, torch.cat([p.detach().flatten() for n in (actor, critic) for p in n.parameters()]))
    torch.testing.assert_close(graphed, eager, rtol=0, atol=1e-5)
    torch.testing.assert_close(graph_stats, eager_stats, rtol=1e-4, atol=1e-5)


def test_a_resume_names_the_options_its_checkpoint_predates_and_refuses_ones_that_are_gone(tmp_path, monkeypatch,
                                                                                              capsys):
    """A checkpoint from before an option existed resumes with that option's default, and the run's log says which
    (its behaviour may have changed); one with an option this version no longer has is refused, naming it."""
    monkeypatch.chdir(tmp_path)
    saved = asdict(ddpg_her.Args(env_id="FetchReach-v0", n_epochs=2))
    del saved["action_l2"], saved["polyak"]  # as if the run predates these two options
    ckpt = dict(format=run_plumbing.CHECKPOINT_FORMAT, script=ddpg_her.__file__, args=saved, epoch=1,
                run_name="FetchReach-v0__old__1__0")
    os.makedirs("runs/old")
    torch.save(ckpt, "runs/old/checkpoint.pt")
    monkeypatch.setattr("sys.argv", ["ddpg_her.py", "--resume", "runs/old"])
    run = Run(ddpg_her.Args(resume="runs/old"), ddpg_her.__file__)
    assert (run.args.action_l2, run.args.polyak, run.args.env_id) == (1.0, 0.95, "FetchReach-v0")
    run.start({}, Compute(torch.device("cpu"), False, False, 1, 1))
    message = "runs/old was started before these options existed and resumes with their defaults: " \
              "--action-l2 1.0, --polyak 0.95"
    assert message in open("runs/old/log.txt").read() and message in capsys.readouterr().out
    saved.update(action_l2=1.0, polyak=0.95, her_strategy="final")  # an option that is gone
    torch.save(ckpt, "runs/old/checkpoint.pt")
    with pytest.raises(SystemExit, match="its run was started with --her-strategy, which this version of ddpg_her.py "
                                         "no longer has"):
        Run(ddpg_her.Args(resume="runs/old"), ddpg_her.__file__)
    saved.pop("her_strategy")  # nothing missing, nothing gone: no warning
    torch.save(ckpt, "runs/old/checkpoint.pt")
    Run(ddpg_her.Args(resume="runs/old"), ddpg_her.__file__).start({}, Compute(torch.device("cpu"), False, False, 1, 1))
    assert "warning" not in capsys.readouterr().out
