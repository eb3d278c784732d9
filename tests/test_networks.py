"""ddpg_her.py's networks with bfloat16 matmuls (--bf16-matmul, the default where the CPU supports it)."""

import copy
import os
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import ddpg_her  # noqa: E402

needs_bf16 = pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(),
                                reason="this CPU has no bfloat16 matmul instructions (the scripts run fp32 there)")


def pair(cls, *dims):
    torch.manual_seed(0)
    fp32 = cls(*dims, 256, 3, 1.0)
    bf16 = cls(*dims, 256, 3, 1.0, bf16=True)
    bf16.load_state_dict(fp32.state_dict())
    return fp32, bf16


@needs_bf16
def test_bf16_networks_keep_fp32_outputs_weights_and_gradients():
    actor32, actor16 = pair(ddpg_her.Actor, 28, 4)
    critic32, critic16 = pair(ddpg_her.Critic, 28, 4)
    x, u = torch.randn(512, 28), torch.rand(512, 4) * 2 - 1
    for net32, net16, inputs in [(actor32, actor16, (x,)), (critic32, critic16, (x, u))]:
        out32, out16 = net32(*inputs), net16(*inputs)
        assert out16.dtype == torch.float32  # the output layer runs in fp32: Q-values keep their resolution
        assert not torch.equal(out16, out32)  # the hidden matmuls did run in bfloat16
        assert torch.allclose(out16, out32, rtol=0.05, atol=0.05)  # bf16 inputs: ~3 significant digits
        out16.square().mean().backward()
        for p in net16.parameters():
            assert p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32
            assert torch.isfinite(p.grad).all()


@needs_bf16
def test_bf16_update_follows_the_fp32_update():
    """One update from the same weights and batch moves the weights nearly as the fp32 update does."""
    runs = []
    for bf16 in (False, True):
        torch.manual_seed(0)
        actor, critic = ddpg_her.Actor(28, 4, 64, 3, 1.0, bf16), ddpg_her.Critic(28, 4, 64, 3, 1.0, bf16)
        nets = (actor, critic, copy.deepcopy(actor), copy.deepcopy(critic))
        opt = torch.optim.Adam([p for n in nets[:2] for p in n.parameters()], lr=1e-3)
        norm = ddpg_her.Normalizer(28, 0.01, 200.0, 5.0)
        torch.manual_seed(1)
        x, u, r = torch.randn(2, 256, 28), torch.rand(256, 4) * 2 - 1, -(torch.rand(256, 1) > 0.5).float()
        before = [p.detach().clone() for p in nets[1].parameters()]
        stats = ddpg_her.update(nets, opt, norm, x, u, r, 0.98, 50.0, 1.0)
        runs.append((stats, [p.detach() - b for p, b in zip(nets[1].parameters(), before)]))
    (stats32, steps32), (stats16, steps16) = runs
    assert torch.allclose(stats16, stats32, rtol=0.05, atol=0.02)  # actor loss, critic loss, mean Q
    for s32, s16 in zip(steps32, steps16):  # Adam's first step is lr * sign(grad) where the gradient is clear
        agree = (torch.sign(s32) == torch.sign(s16)).float().mean()
        assert agree > 0.9


@pytest.mark.parametrize("bf16", [False, pytest.param(True, marks=needs_bf16)])
def test_update_gives_the_critic_the_gradient_of_its_own_loss_only(bf16):
    """update() takes one backward pass of critic_loss + actor_loss; the critic is frozen for the actor's loss, so the
    critic's gradient must be that of the critic's loss alone, and the actor's must not be zero."""
    actor, critic = ddpg_her.Actor(28, 4, 64, 3, 1.0, bf16), ddpg_her.Critic(28, 4, 64, 3, 1.0, bf16)
    nets = (actor, critic, copy.deepcopy(actor), copy.deepcopy(critic))
    opt = torch.optim.Adam(list(actor.parameters()) + list(critic.parameters()), lr=0.0)  # keeps the weights
    norm = ddpg_her.Normalizer(28, 0.01, 200.0, 5.0)
    x, u, r = torch.randn(2, 128, 28), torch.rand(128, 4) * 2 - 1, -(torch.rand(128, 1) > 0.5).float()
    ddpg_her.update(nets, opt, norm, x, u, r, 0.98, 50.0, 1.0)
    got = [p.grad.clone() for p in critic.parameters()]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in actor.parameters())
    critic.zero_grad()
    xn = norm(x)
    with torch.no_grad():
        target = (r + 0.98 * nets[3](xn[1], nets[2](xn[1]))).clamp(-50.0, 0.0)
    torch.nn.functional.mse_loss(critic(xn[0], u), target).backward()
    for g, p in zip(got, critic.parameters()):
        assert torch.allclose(g, p.grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("gamma, clip_return, action_l2", [(0.98, 50.0, 1.0), (0.9, 10.0, 0.5)])
def test_update_losses_are_the_papers(gamma, clip_return, action_l2):
    """update()'s losses against the paper's formulas written out here: the critic's target r + gamma Q'(s', pi'(s'))
    clipped to [-clip_return, 0] (Baselines), the actor's loss -Q(s, pi(s)) plus the L2 penalty on pi / max_u."""
    torch.manual_seed(0)
    max_u = 2.0
    actor, critic = ddpg_her.Actor(28, 4, 64, 3, max_u), ddpg_her.Critic(28, 4, 64, 3, max_u)
    nets = (actor, critic, ddpg_her.Actor(28, 4, 64, 3, max_u), ddpg_her.Critic(28, 4, 64, 3, max_u))  # targets differ
    opt = torch.optim.Adam(list(actor.parameters()) + list(critic.parameters()), lr=0.0)
    norm = ddpg_her.Normalizer(28, 0.01, 200.0, 5.0)
    x, u = torch.randn(2, 300, 28), (torch.rand(300, 4) * 2 - 1) * max_u
    r = torch.cat([torch.full((100, 1), 1.0), torch.full((100, 1), -2 * clip_return), -torch.rand(100, 1)])
    a_loss, c_loss, mean_q = ddpg_her.update(nets, opt, norm, x, u, r, gamma, clip_return, action_l2).tolist()
    with torch.no_grad():
        q_next = nets[3](x[1].clamp(-5, 5), nets[2](x[1].clamp(-5, 5)))  # norm: mean 0, std 1, clipped to 5
        target = torch.minimum(torch.maximum(r + gamma * q_next, torch.tensor(-clip_return)), torch.tensor(0.0))
        assert (target[:100] == 0).all() and (target[100:200] == -clip_return).all()  # both clips are exercised
        q, pi = critic(x[0].clamp(-5, 5), u), actor(x[0].clamp(-5, 5))
        expected_actor = -critic(x[0].clamp(-5, 5), pi).mean() + action_l2 * ((pi / max_u) ** 2).mean()
    assert c_loss == pytest.approx(((q - target) ** 2).mean().item(), rel=1e-5)
    assert a_loss == pytest.approx(expected_actor.item(), rel=1e-5)
    assert mean_q == pytest.approx(q.mean().item(), rel=1e-5)


def test_normalizer_running_statistics_floor_and_clips():
    """Running mean and std over everything seen (Baselines' normalizer.py), std floored at eps, inputs clipped to
    +-clip_obs before and to +-norm_clip after normalising."""
    norm = ddpg_her.Normalizer(3, 0.01, 200.0, 5.0)
    rng = np.random.default_rng(0)
    batches = [np.c_[rng.normal(2.0, 3.0, (n, 1)), np.full((n, 1), 7.0), rng.normal(0.0, 1.0, (n, 1))]
               for n in (50, 120, 30)]
    for x in batches:
        norm.update(x)
    seen = np.concatenate(batches)
    np.testing.assert_allclose(norm.mean.numpy(), seen.mean(0), rtol=1e-6)
    np.testing.assert_allclose(norm.std.numpy(), [seen[:, 0].std(), 0.01, seen[:, 2].std()], rtol=1e-5)  # floor
    out = norm(torch.tensor([[2.0, 7.0, 0.5], [1e6, 7.001, -30.0]]))
    np.testing.assert_allclose(out[0].numpy(), (np.array([2.0, 7.0, 0.5]) - seen.mean(0)) / norm.std.numpy(),
                               rtol=1e-5, atol=1e-6)
    assert out[1, 0] == 5.0 and out[1, 2] == -5.0  # clipped to norm_clip
    assert out[1, 1] == pytest.approx(0.1, rel=1e-3)  # 0.001 / 0.01: the floored std
    clipped_obs = ddpg_her.Normalizer(1, 0.01, 200.0, 1e9)
    clipped_obs.update(np.array([[1e6], [-1e6]]))  # clipped to +-200 before the statistics
    assert clipped_obs.std.item() == pytest.approx(200.0)


def test_state_a_cuda_graph_reads_is_updated_in_place():
    """A captured CUDA graph reads tensors where they were at capture: the normaliser's mean and std and the replay
    buffer's episode count must change in place, never be replaced (a replaced tensor would leave the graph on stale
    values, silently, on GPUs only; this test catches it on the CPU)."""
    norm = ddpg_her.Normalizer(3, 0.01, 200.0, 5.0)
    ptrs = [t.data_ptr() for t in (norm.mean, norm.std)]
    norm.update(np.random.default_rng(0).normal(size=(100, 3)))
    assert [t.data_ptr() for t in (norm.mean, norm.std)] == ptrs and norm.mean.abs().sum() > 0
    dims = dict(o=4, ag=3, g=3, u=4)
    replay = ddpg_her.EpisodeReplay(10 * 5, 5, dims, np.random.default_rng(0))
    ptr = replay.n_eps.data_ptr()
    replay.store({k: np.ones((3, 6 if k in ("o", "ag") else 5, d), np.float32) for k, d in dims.items()})
    assert replay.n_eps.data_ptr() == ptr and replay.n_eps.item() == 3


def test_normalizer_of_nothing_is_finite():
    """A cycle whose episodes were all dropped (an unstable simulation, say) updates the normaliser with no rows: its
    statistics must stay finite (mean 0, std eps), not 0/0."""
    norm = ddpg_her.Normalizer(3, 0.01, 200.0, 5.0)
    norm.update(np.zeros((0, 3)))
    assert torch.isfinite(norm.mean).all() and torch.isfinite(norm.std).all() and (norm.std == 0.01).all()
