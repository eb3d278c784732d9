"""`compute_reward` on torch tensors (envs/): every id gives the rewards it gives on numpy, on the tensors' device.

A learner that keeps its replay buffer on the GPU relabels goals there, with the environments' own reward function:
each formula is written once against the array namespace of its inputs (envs/goal_env.py `array_namespace`).
Sparse rewards must be equal exactly, dense ones to rounding (torch's transcendental functions and sums may round
differently from numpy's). The CUDA test (skipped without a GPU) also captures compute_reward in a CUDA graph, which
fails on any host-device synchronisation.
"""

import contextlib
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")

import envs  # noqa: E402
from envs import hand  # noqa: E402

MANIPULATE_IDS = [i for i in envs.ENV_IDS if i.startswith("HandManipulate")]
N_PAIRS = 600
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.fixture(scope="module")
def make():
    """Each id's env, made once for the module (a hand model costs ~0.1 s to build)."""
    made = {}

    def get(env_id):
        if env_id not in made:
            made[env_id] = gym.make(env_id).unwrapped
        return made[env_id]

    yield get
    for env in made.values():
        env.close()


def random_quats(rng, n):
    q = rng.normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def small_rotations(rng, n, max_angle):
    """Unit quaternions of rotations by angles uniform in [0, max_angle] about random axes."""
    angle = rng.uniform(0.0, max_angle, size=(n, 1))
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
    return np.concatenate([np.cos(angle / 2), np.sin(angle / 2) * axis], axis=-1)


@pytest.fixture(scope="module")
def goal_pairs(make):
    """(achieved, desired) float64 goals of each task: reset goals, perturbations straddling the success
    thresholds (so that sparse rewards are both 0 and -1), and, for manipulation, random and sign-flipped
    quaternions. One set per task, shared by its sparse and dense ids."""
    cache = {}

    def get(env_id):
        stem = env_id.replace("Dense", "")
        if stem in cache:
            return cache[stem]
        env = make(stem)
        rng = np.random.default_rng(sum(map(ord, stem)))
        resets = [env.reset(seed=seed)[0] for seed in range(3)]
        achieved = np.array([obs["achieved_goal"] for obs in resets])[rng.integers(3, size=N_PAIRS)]
        desired = np.array([obs["desired_goal"] for obs in resets])[rng.integers(3, size=N_PAIRS)]
        n = N_PAIRS // 6  # rows [0, n): reset pairs as they are
        if env_id.startswith("HandManipulate"):
            pos, rot = slice(0, 3), slice(3, 7)
            thr, rot_thr = env.distance_threshold, env.rotation_threshold
            # Position and rotation both straddling their thresholds
            offset = rng.normal(size=(4 * n, 3))
            offset *= thr * rng.uniform(0.5, 1.5, size=(4 * n, 1)) / np.linalg.norm(offset, axis=-1, keepdims=True)
            desired[n : 5 * n, pos] = achieved[n : 5 * n, pos] + offset
            desired[n : 5 * n, rot] = hand.quat_mul(achieved[n : 5 * n, rot], small_rotations(rng, 4 * n, 2 * rot_thr))
            desired[n : 3 * n, pos] = achieved[n : 3 * n, pos]  # rotation alone decides
            desired[3 * n : 4 * n, rot] = -desired[3 * n : 4 * n, rot]  # sign-flipped: the same orientations
            desired[5 * n :, rot] = random_quats(rng, N_PAIRS - 5 * n)
            achieved[-10:, rot] = -achieved[-10:, rot]
        else:
            direction = rng.normal(size=(5 * n, achieved.shape[-1]))
            direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
            radius = env.distance_threshold * rng.uniform(0.5, 1.5, size=(5 * n, 1))
            desired[n : 6 * n] = achieved[n : 6 * n] + direction * radius
        desired[-5:] = achieved[-5:]  # achieved goal as desired goal: the best reward
        cache[stem] = achieved, desired
        return cache[stem]

    return get


def check_rewards(env, achieved, desired, device="cpu"):
    """compute_reward on tensors of `device` against numpy, for float64 and float32 goals."""
    # The canonical 2 arccos(w) loses eight digits near zero (envs/hand.py `rotation_distance`).
    atol = 1e-7 if getattr(env, "canonical_rotation_distance", False) else 1e-12
    for dtype in (np.float64, np.float32):
        a, d = achieved.astype(dtype), desired.astype(dtype)
        expected = env.compute_reward(a, d, {})
        got = env.compute_reward(torch.from_numpy(a).to(device), torch.from_numpy(d).to(device), {})
        assert isinstance(got, torch.Tensor) and got.device.type == torch.device(device).type
        assert got.shape == expected.shape and got.dtype == getattr(torch, expected.dtype.name), (got, expected)
        got = got.cpu().numpy()
        if env.reward_type == "sparse":
            np.testing.assert_array_equal(got, expected)
            assert set(np.unique(expected)) == {0.0, -1.0}, "the goal pairs must give both rewards"
        else:
            np.testing.assert_allclose(got, expected, rtol=1e-6 if dtype == np.float64 else 1e-5, atol=atol)


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_torch_rewards_equal_numpy_rewards(env_id, make, goal_pairs):
    env = make(env_id)
    achieved, desired = goal_pairs(env_id)
    check_rewards(env, achieved, desired)

    # One goal pair gives a 0-d tensor; leading dimensions (4, 5) give (4, 5) rewards.
    expected = env.compute_reward(achieved[:20], desired[:20], {})
    one = env.compute_reward(torch.from_numpy(achieved[7]), torch.from_numpy(desired[7]), {})
    assert one.shape == () and np.allclose(one.numpy(), expected[7], rtol=1e-6, atol=1e-12)
    a, d = torch.from_numpy(achieved[:20]).reshape(4, 5, -1), torch.from_numpy(desired[:20]).reshape(4, 5, -1)
    batch = env.compute_reward(a, d, {})
    assert batch.shape == (4, 5)
    np.testing.assert_allclose(batch.numpy().ravel(), expected, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("env_id", MANIPULATE_IDS)
def test_canonical_rotation_distance_on_tensors(env_id, make, goal_pairs):
    env = make(env_id)
    env.canonical_rotation_distance = True
    try:
        check_rewards(env, *goal_pairs(env_id))
    finally:
        env.canonical_rotation_distance = False


@pytest.mark.parametrize("canonical", [False, True])
@pytest.mark.parametrize("ignore_z_rotation", [False, True])
def test_rotation_distance_on_tensors(ignore_z_rotation, canonical):
    rng = np.random.default_rng(3)
    quat_a = random_quats(rng, 400)
    quat_b = np.concatenate(
        [random_quats(rng, 200), -quat_a[200:300], hand.quat_mul(quat_a[300:], small_rotations(rng, 100, 0.2))]
    )
    quat_b[:5] = 0.0  # unfilled buffer rows
    quat_b[5:10] = [np.cos(np.pi / 4), 0.0, np.sin(np.pi / 4), 0.0]  # gimbal lock
    expected = hand.rotation_distance(quat_a, quat_b, ignore_z_rotation, canonical)
    got = hand.rotation_distance(torch.from_numpy(quat_a), torch.from_numpy(quat_b), ignore_z_rotation, canonical)
    assert got.dtype == torch.float64 and got.shape == (400,)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-7)


def test_envs_do_not_import_torch():
    import subprocess
    import sys

    code = "import sys, envs, envs.fetch, envs.hand; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@contextlib.contextmanager
def sync_errors():
    """CUDA calls that synchronise with the host raise inside (torch's sync debug mode)."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def check_rewards_on_device(env, achieved, desired):
    """compute_reward on CUDA tensors that are already there (the copies in and out synchronise)."""
    for dtype in (torch.float64, torch.float32):
        a, d = torch.from_numpy(achieved).to("cuda", dtype), torch.from_numpy(desired).to("cuda", dtype)
        with sync_errors():
            reward = env.compute_reward(a, d, {})
        assert reward.device == a.device


def capture(fn, *inputs):
    """`fn(*inputs)` captured in a CUDA graph (after the warm-up on a side stream that capture asks for)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn(*inputs)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(*inputs)
    return graph, out


@requires_cuda
@pytest.mark.filterwarnings("ignore:Synchronization debug mode is a prototype")
@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_cuda_tensors_and_cuda_graphs(env_id, make, goal_pairs):
    env = make(env_id)
    achieved, desired = goal_pairs(env_id)
    for canonical in [False, True] if env_id in MANIPULATE_IDS else [False]:
        if canonical:
            env.canonical_rotation_distance = True
        try:
            check_rewards_on_device(env, achieved, desired)
            check_rewards(env, achieved, desired, device="cuda")
            # Captured on half the pairs, replayed on the other half: no host-device synchronisation anywhere.
            half = len(achieved) // 2
            a, d = torch.from_numpy(achieved[:half]).cuda(), torch.from_numpy(desired[:half]).cuda()
            graph, out = capture(lambda a, d: env.compute_reward(a, d, {}), a, d)
            a.copy_(torch.from_numpy(achieved[half:])), d.copy_(torch.from_numpy(desired[half:]))
            graph.replay()
            expected = env.compute_reward(achieved[half:], desired[half:], {})
            np.testing.assert_allclose(out.cpu().numpy(), expected, rtol=1e-6, atol=1e-7 if canonical else 1e-12)
        finally:
            if canonical:
                env.canonical_rotation_distance = False
