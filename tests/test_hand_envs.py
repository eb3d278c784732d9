"""The Shadow-hand tasks (envs/hand.py): rotations against MuJoCo's, goal sets, success at the goal, actions, resets.

The goal-env API checks every id gets (gymnasium's env checker, spaces and episode length, `compute_reward` equal
to the step reward one by one and batched, achieved goal as the best goal, seeding, bad actions, instability,
rendering) are in tests/test_envs.py, parametrised over `envs.ENV_IDS`, which holds the 18 hand ids.
"""

import functools
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import envs  # noqa: E402
from conftest import requires_gl  # noqa: E402
from envs import hand  # noqa: E402

HAND_IDS = [i for i in envs.ENV_IDS if i.startswith("Hand")]
MANIPULATE_STEMS = [i[: -len("-v0")] for i in HAND_IDS if i.startswith("HandManipulate") and "Dense" not in i]


@functools.cache
def make(env_id):
    """One env per id for the whole module (building a hand model costs ~0.1 s); each test resets it."""
    return gym.make(env_id).unwrapped


def random_quats(rng, n):
    q = rng.normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def mujoco_angle(quat_a, quat_b):
    """Reference: the angle of quat_a * conj(quat_b), from MuJoCo's own functions (shortest way round)."""
    conj, diff, vel = np.empty(4), np.empty(4), np.empty(3)
    mujoco.mju_negQuat(conj, quat_b)
    mujoco.mju_mulQuat(diff, quat_a, conj)
    mujoco.mju_quat2Vel(vel, diff, 1.0)
    return np.linalg.norm(vel)


def rotation_matrix(quat):
    mat = np.empty(9)
    mujoco.mju_quat2Mat(mat, np.asarray(quat, dtype=np.float64) / np.linalg.norm(quat))
    return mat.reshape(3, 3)


def test_ids_registered():
    assert len(HAND_IDS) == 18 and len(MANIPULATE_STEMS) == 8
    lengths = {i: gym.spec(i).max_episode_steps for i in HAND_IDS}
    assert all(n == (50 if i.startswith("HandReach") else 100) for i, n in lengths.items()), lengths


# ---- the vectorised rotation routines against MuJoCo's one-quaternion functions -------------------------------------
def test_vectorised_rotations_match_mujoco():
    rng = np.random.default_rng(0)
    n = 200
    euler = rng.uniform(-np.pi, np.pi, (n, 3))
    euler[:, 1] /= 2  # y in [-pi/2, pi/2], the range `quat2euler` returns
    quats_a, quats_b = random_quats(rng, n), random_quats(rng, n)
    angles, axes = rng.uniform(-np.pi, np.pi, n), rng.uniform(-1, 1, (n, 3))
    ref = np.empty(4)
    for e, qa, qb, angle, axis, q, m, product, from_axis in zip(
        euler, quats_a, quats_b, angles, axes,
        hand.euler2quat(euler), hand.quat2mat(quats_a), hand.quat_mul(quats_a, quats_b),
        [hand.quat_from_angle_and_axis(x, y) for x, y in zip(angles, axes)],
    ):
        mujoco.mju_euler2Quat(ref, e, "xyz")  # intrinsic x, y, z: the canonical convention
        np.testing.assert_allclose(q, ref, atol=1e-12)
        np.testing.assert_allclose(m.ravel(), rotation_matrix(qa).ravel(), atol=1e-12)
        mujoco.mju_mulQuat(ref, qa, qb)
        np.testing.assert_allclose(product, ref, atol=1e-12)
        mujoco.mju_axisAngle2Quat(ref, axis / np.linalg.norm(axis), angle)
        np.testing.assert_allclose(from_axis, ref, atol=1e-12)
    # Euler angles round trip (a quaternion and its negative are one rotation).
    mujoco_quats = np.empty((n, 4))
    for e, out in zip(hand.quat2euler(quats_a), mujoco_quats):
        mujoco.mju_euler2Quat(out, e, "xyz")
    np.testing.assert_allclose(np.abs(np.sum(mujoco_quats * quats_a, axis=-1)), 1.0, atol=1e-12)
    np.testing.assert_allclose(hand.quat2euler(hand.euler2quat(euler)), euler, atol=1e-9)
    np.testing.assert_allclose(hand.mat2euler(hand.euler2mat(euler)), euler, atol=1e-9)


def test_rotation_distance_matches_mujoco():
    rng = np.random.default_rng(1)
    n = 300
    quats_a, quats_b = random_quats(rng, n), random_quats(rng, n)
    quats_b[:20] = -quats_a[:20]  # same orientation, other sign
    quats_b[20:40] = quats_a[20:40] + 1e-9  # nearly the same
    distance = hand.rotation_distance(quats_a, quats_b)
    np.testing.assert_allclose(distance, [mujoco_angle(a, b) for a, b in zip(quats_a, quats_b)], atol=1e-9)
    assert distance[:20].max() < 1e-7 and (distance <= np.pi + 1e-12).all()
    assert (hand.rotation_distance(quats_a, quats_a) == 0).all()
    # Ignoring rotation about the own z axis: give a the z Euler angle of b with MuJoCo's conversion, then measure.
    euler_a, euler_b = hand.quat2euler(quats_a), hand.quat2euler(quats_b)
    reference = []
    for ea, eb, qb in zip(euler_a, euler_b, quats_b):
        qa = np.empty(4)
        mujoco.mju_euler2Quat(qa, [ea[0], ea[1], eb[2]], "xyz")
        reference.append(mujoco_angle(qa, qb))
    ignoring_z = hand.rotation_distance(quats_a, quats_b, ignore_z_rotation=True)
    np.testing.assert_allclose(ignoring_z, reference, atol=1e-7)
    assert (hand.rotation_distance(quats_a, quats_a, ignore_z_rotation=True) == 0).all()
    # Any leading dimensions and broadcasting; the one-pair scalar twin agrees to the last bit.
    np.testing.assert_array_equal(
        hand.rotation_distance(quats_a.reshape(3, 100, 4), quats_b[0], True),
        hand.rotation_distance(quats_a, quats_b[0], True).reshape(3, 100),
    )
    for ignore_z in (False, True):
        one_by_one = [hand._rotation_distance_one(a.tolist(), b.tolist(), ignore_z) for a, b in zip(quats_a, quats_b)]
        np.testing.assert_array_equal(hand.rotation_distance(quats_a, quats_b, ignore_z), one_by_one)


def test_canonical_rotation_distance_option_reproduces_the_sign_bug():
    # `canonical_rotation_distance=True` restores the canonical 2 arccos(w): the same orientation written with the
    # other quaternion sign is 2 pi away. Our default measures the true angle (docs/environments.md).
    rng = np.random.default_rng(2)
    quats = random_quats(rng, 50)
    canonical = hand.rotation_distance(quats, -quats, canonical=True)
    np.testing.assert_allclose(canonical, 2 * np.pi, atol=1e-6)
    assert hand.rotation_distance(quats, -quats).max() < 1e-7
    others = random_quats(rng, 50)
    agree = np.sum(quats * others, axis=-1) >= 0  # same hemisphere: the canonical angle is at most pi, and right
    assert 10 < agree.sum() < 40
    np.testing.assert_allclose(
        hand.rotation_distance(quats, others, canonical=True)[agree], hand.rotation_distance(quats, others)[agree]
    )
    goal = np.r_[0.0, 0.0, 0.0, quats[0]]
    env = gym.make("HandManipulateBlockRotateXYZDense-v0", canonical_rotation_distance=True).unwrapped
    assert env.compute_reward(goal, np.r_[goal[:3], -goal[3:]], {}) == pytest.approx(-2 * np.pi)
    assert gym.make("HandManipulateBlockRotateXYZDense-v0").unwrapped.compute_reward(
        goal, np.r_[goal[:3], -goal[3:]], {}
    ) == pytest.approx(0.0, abs=1e-7)


def test_parallel_rotations_are_the_24_axis_aligned_ones():
    quats = hand.parallel_quats()
    assert quats.shape == (24, 4)
    mats = [rotation_matrix(q) for q in quats]
    for m in mats:  # a signed permutation: each row and column holds a single +-1
        np.testing.assert_allclose(np.sort(np.abs(m), axis=1), [[0, 0, 1]] * 3, atol=1e-12)
    distinct = {tuple(np.round(m).astype(int).ravel()) for m in mats}
    assert len(distinct) == 24


# ---- reward and success ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stem", MANIPULATE_STEMS)
def test_target_at_object_pose_counts_as_success(stem):
    """Success at the goal, whatever the quaternion's sign (and, for the pen, the rotation about its axis).

    The canonical code measures 2 arccos(w) without |w|: a goal met with the quaternion's other sign reads as
    2 pi away, and for the pen (after its Euler-angle round trip) about 8% of goals can never be met.
    """
    env, dense = make(f"{stem}-v0"), make(f"{stem}Dense-v0")
    rng = np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    for _ in range(3):
        obs, _, _, _, _ = env.step(rng.uniform(-1, 1, 20))
    achieved = obs["achieved_goal"]
    flipped = achieved.copy()
    flipped[3:] *= -1
    for goal in (achieved.copy(), flipped):
        assert env._is_success(achieved, goal) == 1 and env.compute_reward(achieved, goal, {}) == 0
        assert dense.compute_reward(achieved, goal, {}) > -1e-7
    # Put the object exactly at sampled goals (the physics cannot get nearer) and check each counts.
    for _ in range(40):
        goal = env._sample_goal()
        env.data.qpos[env._object_qpos : env._object_qpos + 7] = goal
        achieved = env._get_obs(env.sims)[1][0]
        assert env._is_success(achieved, goal) == 1, goal
    if "Pen" in stem:  # rotation about the pen's own (z) axis does not count, rotation about x does
        for angle in rng.uniform(-np.pi, np.pi, 10):
            turned = goal.copy()
            turned[3:] = hand.quat_mul(goal[3:], [np.cos(angle / 2), 0.0, 0.0, np.sin(angle / 2)])
            assert env._is_success(turned, goal) == 1
            assert dense.compute_reward(turned, goal, {}) > -1e-7
        tilted = goal.copy()
        tilted[3:] = hand.quat_mul(goal[3:], [np.cos(0.1), np.sin(0.1), 0.0, 0.0])  # 0.2 rad about x
        assert env._is_success(tilted, goal) == 0


@pytest.mark.parametrize("stem", MANIPULATE_STEMS)
def test_success_thresholds_and_dense_reward(stem):
    env, dense = make(f"{stem}-v0"), make(f"{stem}Dense-v0")
    env.reset(seed=1)
    goal = env.goal.copy()
    radius = 0.05 if "Pen" in stem else 0.01  # paper 1.2
    for offset, position_counts in ((0.9 * radius, False), (1.1 * radius, "Full" in stem)):
        moved = goal.copy()
        moved[0] += offset
        assert env._is_success(moved, goal) == (0 if position_counts else 1)
        expected = -10.0 * offset if "Full" in stem else 0.0  # manipulate.py: -(10 d_pos + d_rot)
        assert dense.compute_reward(moved, goal, {}) == pytest.approx(expected, abs=1e-12)
    for angle, succeeds in ((0.09, True), (0.11, False)):  # 0.1 rad, about the world x axis
        turned = goal.copy()
        turned[3:] = hand.quat_mul([np.cos(angle / 2), np.sin(angle / 2), 0.0, 0.0], goal[3:])
        if "Pen" not in stem:  # (for the pen part of a world-x turn may be about its own axis)
            assert env._is_success(turned, goal) == succeeds
            assert dense.compute_reward(turned, goal, {}) == pytest.approx(-angle, abs=1e-9)


def test_pen_reward_batches_are_row_by_row():
    # The canonical pen code sets `euler_a[2] = euler_b[2]`: on a batch it overwrites row 2 instead of the z angles.
    env = make("HandManipulatePenFullDense-v0")
    env.reset(seed=2)
    rng = np.random.default_rng(2)
    goals = np.array([env._sample_goal() for _ in range(16)])
    achieved = goals[rng.permutation(16)]
    batched = env.compute_reward(achieved, goals, {})
    np.testing.assert_array_equal(batched, [env.compute_reward(a, g, {}) for a, g in zip(achieved, goals)])
    np.testing.assert_array_equal(env.compute_reward(achieved.reshape(4, 4, 7), goals.reshape(4, 4, 7), {}),
                                  batched.reshape(4, 4))


# ---- goals and initial states ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("stem", MANIPULATE_STEMS)
def test_goals_come_from_the_right_set(stem):
    env = make(f"{stem}-v0")
    obs, _ = env.reset(seed=3)
    object_pos = obs["achieved_goal"][:3]
    goals = np.array([env._sample_goal() for _ in range(300)])
    np.testing.assert_allclose(np.linalg.norm(goals[:, 3:], axis=1), 1.0, atol=1e-12)
    offsets = goals[:, :3] - object_pos
    if "Full" in stem:  # manipulate_*.py: uniform in this box around the object's start
        low, high = np.array([-0.04, -0.06, 0.0]), np.array([0.04, 0.02, 0.06])  # the canonical range, written out
        assert (offsets >= low).all() and (offsets <= high).all()
        assert (offsets.min(axis=0) < low + 0.01).all() and (offsets.max(axis=0) > high - 0.01).all()
    else:  # no target position: the goal holds the object's position
        np.testing.assert_array_equal(offsets, 0.0)
    quats = goals[:, 3:]
    z_rows = np.array([rotation_matrix(q)[2] for q in quats])  # where each object axis points, in world z
    about_z_only = np.abs(quats[:, 1:3]).max(axis=1) < 1e-12
    face_up = np.isclose(np.abs(z_rows).max(axis=1), 1.0, atol=1e-9)  # one of the object's axes is vertical
    if stem.endswith("RotateZ"):
        assert about_z_only.all()
        assert np.ptp(2 * np.arctan2(quats[:, 3], quats[:, 0])) > 5.5  # angles all round the circle
    elif stem.endswith("RotateParallel"):  # about z, after an axis-aligned rotation: a face points up or down
        assert face_up.all() and not about_z_only.all()
        assert len({tuple(np.round(r).astype(int)) for r in z_rows}) == 6  # every face
    else:  # "xyz": all axes
        assert not face_up.any() and not about_z_only.any()
        assert np.ptp(z_rows, axis=0).min() > 1.5


def test_pen_starts_unrotated_and_the_block_randomised():
    pen, block = make("HandManipulatePenRotate-v0"), make("HandManipulateBlockRotateXYZ-v0")
    model_quat = pen._initial_object_quat
    pen_quats = np.array([pen.reset(seed=s)[0]["achieved_goal"][3:] for s in range(4)])
    block_quats = np.array([block.reset(seed=s)[0]["achieved_goal"][3:] for s in range(4)])
    # After the 10 settling steps the pen has only moved a little from the model's pose; the block was turned.
    assert max(mujoco_angle(q, model_quat) for q in pen_quats) < 0.5
    assert np.mean([mujoco_angle(q, [1.0, 0, 0, 0]) for q in block_quats]) > 0.5


@pytest.mark.parametrize("stem", ["HandManipulateEggFull", "HandManipulatePenFull", "HandManipulateBlockRotateZ"])
def test_initial_object_pose_draws(stem, monkeypatch):
    """manipulate.py `_reset_sim`: the object's start position gets Gaussian noise of 5 mm on each axis; its
    orientation is turned by a random rotation of the task's kind (the pen's is not turned)."""
    env = gym.make(f"{stem}-v0").unwrapped
    monkeypatch.setattr(env.sims, "step", lambda ids, nstep: None)  # no settling: the draws as they were made
    start = env.model.qpos0[env._object_qpos : env._object_qpos + 7]
    poses = np.array([env.reset(seed=s)[0]["achieved_goal"] for s in range(300)])
    noise = poses[:, :3] - start[:3]
    assert 0.0045 < noise.std() < 0.0055, noise.std()  # 900 draws: the sd's own sd is 1.2e-4
    np.testing.assert_allclose(noise.mean(axis=0), 0.0, atol=0.001)
    angles = np.array([mujoco_angle(q, start[3:]) for q in poses[:, 3:]])
    if "Pen" in stem:
        assert angles.max() < 1e-12
    else:  # angle uniform in [-pi, pi]: its size uniform in [0, pi]
        assert angles.max() > 3.0 and abs(angles.mean() - np.pi / 2) < 0.15, angles.mean()
    if stem.endswith("RotateZ"):  # about the world z axis: the object's vertical axis stays put
        z_axis = rotation_matrix(start[3:])[:, 2]
        tilt = [np.abs(rotation_matrix(q)[:, 2] @ z_axis) for q in poses[:, 3:]]
        np.testing.assert_allclose(tilt, 1.0, atol=1e-9)


@pytest.mark.parametrize("stem", MANIPULATE_STEMS[:1] + MANIPULATE_STEMS[-1:])
def test_reset_draws_again_when_the_object_falls_or_the_settling_blows_up(stem):
    env = make(f"{stem}-v0")
    obs, _ = env.reset(seed=4)
    assert obs["achieved_goal"][2] > hand.MIN_OBJECT_HEIGHT  # on the palm
    mujoco.mj_setState(env.model, env.data, env._initial_state, mujoco.mjtState.mjSTATE_INTEGRATION)
    env.data.qpos[env._object_qpos] += 0.3  # beside the hand: it drops to the floor while settling
    assert not env._reset_sim(env.sims, np.zeros(1, np.intp), [env.np_random])[0]
    mujoco.mj_setState(env.model, env.data, env._initial_state, mujoco.mjtState.mjSTATE_INTEGRATION)
    env.data.qvel[:] = 1e12  # MuJoCo resets such a state itself; the reset must notice
    assert not env._reset_sim(env.sims, np.zeros(1, np.intp), [env.np_random])[0]
    assert not env.sims.warning_number[0, hand._UNSTABLE].any()  # cleared for the next episode
    obs, _ = env.reset(seed=4)
    assert obs["achieved_goal"][2] > hand.MIN_OBJECT_HEIGHT


def test_hand_reach_goals():
    env = make("HandReach-v0")
    env.reset(seed=5)
    initial = env.initial_goal.reshape(5, 3)
    n, n_initial, fingers = 4000, 0, []
    for _ in range(n):
        goal = env._sample_goal().reshape(5, 3)
        moved = np.flatnonzero(np.abs(goal - initial).max(axis=1) > 0)
        if moved.size == 0:
            n_initial += 1  # reach.py: 10% of goals are the start pose
            continue
        assert len(moved) == 2 and moved[1] == 4, moved  # the thumb (tip 4) meets one finger
        fingers.append(moved[0])
        gap = np.linalg.norm(goal[moved[0]] - goal[4])
        assert 0.0 < gap <= 2 * 0.005 + 1e-12  # each stops 5 mm short of a common meeting point
        meeting = (goal[moved[0]] + goal[4]) / 2
        # ... which is 9 cm in front of the palm and 5 cm above it, with Gaussian noise of 5 mm on each axis
        assert np.linalg.norm(meeting - env.palm_xpos - [0.0, -0.09, 0.05]) < 0.03
    # 4000 draws: the fraction's sd is 0.0047 at p = 0.1, so 0.05 or 0.15 fail and 0.1 passes.
    assert 0.08 < n_initial / n < 0.12, n_initial / n
    np.testing.assert_allclose(np.bincount(fingers, minlength=4) / len(fingers), 0.25, atol=0.03)


# ---- actions and observations ------------------------------------------------------------------------------------
def test_actions_map_onto_the_actuator_ranges():
    env = make("HandManipulateBlockRotateZ-v0")
    env.reset(seed=6)
    low, high = env.model.actuator_ctrlrange.T
    for action, ctrl in ((-np.ones(20), low), (np.ones(20), high), (np.zeros(20), (low + high) / 2)):
        env._set_action(env.sims, action[None])
        np.testing.assert_allclose(env.data.ctrl, ctrl, atol=1e-15)
    # The canonical relative mode (off in every task): 0 holds each joint, the J1 actuators drive J1 + J0.
    relative = hand.HandReachEnv(relative_control=True)
    relative.reset(seed=0)
    relative._set_action(relative.sims, np.zeros((1, 20)))
    names = [mujoco.mj_id2name(relative.model, mujoco.mjtObj.mjOBJ_ACTUATOR, i) for i in range(20)]
    qpos = lambda joint: relative.data.qpos[relative.model.joint(joint).qposadr[0]]  # noqa: E731
    for name, ctrl, (lo, hi) in zip(names, relative.data.ctrl, relative.model.actuator_ctrlrange):
        joint = name.replace(":A_", ":")
        coupled = joint[-4:-2] in hand.COUPLED_FINGERS and joint.endswith("J1")
        expected = qpos(joint) + (qpos(joint[:-1] + "0") if coupled else 0.0)
        assert ctrl == pytest.approx(np.clip(expected, lo, hi)), name


def test_observation_layout():
    env = make("HandManipulateEggFull-v0")
    obs, _ = env.reset(seed=7)
    obs, *_ = env.step(np.zeros(20))
    d, o = env.data, obs["observation"]
    np.testing.assert_array_equal(o[:24], d.qpos[:24])  # 24 joint angles
    np.testing.assert_array_equal(o[24:48], d.qvel[:24])  # 24 joint velocities (not scaled by dt)
    np.testing.assert_array_equal(o[48:54], d.qvel[24:30])  # object velocity: linear (world), angular (local)
    np.testing.assert_array_equal(o[54:], obs["achieved_goal"])
    np.testing.assert_array_equal(obs["achieved_goal"], d.qpos[24:31])  # object position and quaternion
    reach = make("HandReach-v0")
    obs, _ = reach.reset(seed=7)
    for name, value in hand.REACH_INITIAL_QPOS.items():  # reach.py: the documented start pose
        assert reach.data.qpos[reach.model.joint(name).qposadr[0]] == value
    obs, *_ = reach.step(np.random.default_rng(7).uniform(-1, 1, 20))
    assert np.abs(reach.data.qvel[:24]).max() > 0.1  # moving: velocities are visible
    np.testing.assert_array_equal(obs["observation"][:24], reach.data.qpos[:24])
    np.testing.assert_array_equal(obs["observation"][24:48], reach.data.qvel[:24])  # not scaled by dt
    np.testing.assert_array_equal(obs["observation"][48:], obs["achieved_goal"])
    np.testing.assert_array_equal(obs["achieved_goal"], reach.data.site_xpos[reach._fingertip_sites].ravel())


# ---- rendering ------------------------------------------------------------------------------------------------------
@requires_gl
@pytest.mark.parametrize("env_id", [i for i in HAND_IDS if "Dense" not in i])  # (tests/test_envs.py renders all ids)
def test_render_draws_the_target_at_the_goal(env_id):
    env = gym.make(env_id, render_mode="rgb_array", width=64, height=48)
    env.reset(seed=8)
    image = env.render()
    u = env.unwrapped
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8 and image.std() > 0
    if env_id.startswith("HandReach"):
        np.testing.assert_allclose(u.data.site_xpos[u._target_sites].ravel(), u.goal, atol=1e-12)
    else:
        target_body = u.model.body("target").id
        shown = u.goal[:3] + ([0.15, 0, 0] if "Rotate" in env_id else 0)  # beside the object when position is ignored
        np.testing.assert_allclose(u.data.xpos[target_body], shown, atol=1e-12)
        assert hand.rotation_distance(u.data.xquat[target_body], u.goal[3:]) < 1e-7
    env.close()
