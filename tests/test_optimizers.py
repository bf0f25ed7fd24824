import numpy as np
import pytest

from skcnn.optimizers import SOLVERS, Adam, AdaGrad, Momentum, Nesterov, RMSProp, SGD, make_optimizer

P0 = np.array([1.0, -2.0])
G1 = np.array([0.5, 0.25])
G2 = np.array([-1.0, 2.0])


def two_steps(opt, decay=None):
    p = P0.copy()
    opt.step([p], [G1], decay)
    first = p.copy()
    opt.step([p], [G2], decay)
    return first, p


def test_sgd_by_hand():
    first, second = two_steps(SGD(0.1))
    np.testing.assert_allclose(first, [1 - 0.05, -2 - 0.025])
    np.testing.assert_allclose(second, [0.95 + 0.1, -2.025 - 0.2])


def test_momentum_by_hand():
    first, second = two_steps(Momentum(0.1, momentum=0.9))
    v1 = -0.1 * G1
    np.testing.assert_allclose(first, P0 + v1)
    v2 = 0.9 * v1 - 0.1 * G2
    np.testing.assert_allclose(second, P0 + v1 + v2)


def test_nesterov_by_hand():
    first, second = two_steps(Nesterov(0.1, momentum=0.9))
    v1 = -0.1 * G1
    p1 = P0 + 0.9 * v1 - 0.1 * G1
    np.testing.assert_allclose(first, p1)
    v2 = 0.9 * v1 - 0.1 * G2
    np.testing.assert_allclose(second, p1 + 0.9 * v2 - 0.1 * G2)


def test_adagrad_by_hand():
    first, second = two_steps(AdaGrad(0.1, epsilon=1e-8))
    s1 = G1**2
    p1 = P0 - 0.1 * G1 / (np.sqrt(s1) + 1e-8)
    np.testing.assert_allclose(first, p1)
    s2 = s1 + G2**2
    np.testing.assert_allclose(second, p1 - 0.1 * G2 / (np.sqrt(s2) + 1e-8))


def test_rmsprop_by_hand():
    first, second = two_steps(RMSProp(0.01, rho=0.9, epsilon=1e-8))
    s1 = 0.1 * G1**2
    p1 = P0 - 0.01 * G1 / (np.sqrt(s1) + 1e-8)
    np.testing.assert_allclose(first, p1)
    s2 = 0.9 * s1 + 0.1 * G2**2
    np.testing.assert_allclose(second, p1 - 0.01 * G2 / (np.sqrt(s2) + 1e-8))


def test_adam_by_hand():
    first, second = two_steps(Adam(0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8))
    m1, v1 = 0.1 * G1, 0.001 * G1**2
    p1 = P0 - 0.1 * (m1 / 0.1) / (np.sqrt(v1 / 0.001) + 1e-8)
    np.testing.assert_allclose(first, p1)
    # the very first Adam step moves every coordinate by about lr
    np.testing.assert_allclose(np.abs(first - P0), 0.1, rtol=1e-6)
    m2, v2 = 0.9 * m1 + 0.1 * G2, 0.999 * v1 + 0.001 * G2**2
    mhat, vhat = m2 / (1 - 0.9**2), v2 / (1 - 0.999**2)
    np.testing.assert_allclose(second, p1 - 0.1 * mhat / (np.sqrt(vhat) + 1e-8))


def test_l2_weight_decay_adds_to_the_gradient_only_where_asked():
    p, q = P0.copy(), P0.copy()
    SGD(0.1, alpha=0.5).step([p, q], [G1, G1], decay=[True, False])
    np.testing.assert_allclose(p, P0 - 0.1 * (G1 + 0.5 * P0))
    np.testing.assert_allclose(q, P0 - 0.1 * G1)


def test_l2_term_is_divided_by_the_batch_weight_as_in_mlp():
    # MLPClassifier's loss: mean loss + 0.5 * alpha * ||W||^2 / n_samples_in_batch
    p = P0.copy()
    SGD(0.1, alpha=0.5).step([p], [G1], batch_weight=200)
    np.testing.assert_allclose(p, P0 - 0.1 * (G1 + 0.5 * P0 / 200))
    parted = P0.copy()
    for part in SGD(0.1, alpha=0.5).parts([parted], [G1], n_parts=2, batch_weight=200):
        part()
    np.testing.assert_array_equal(parted, p)


def test_snapshot_and_restore_bring_back_the_state():
    opt, p = Adam(0.1), P0.copy()
    before = opt.snapshot()  # before the first step: no state yet
    opt.step([p], [G1])
    after_one = opt.snapshot()
    m, v = (a.copy() for a in opt.state[0])
    opt.step([p], [G2 * 1e6])
    opt.restore(after_one)
    assert opt.t == 1
    np.testing.assert_array_equal(opt.state[0][0], m)
    np.testing.assert_array_equal(opt.state[0][1], v)
    opt.restore(before)
    assert opt.t == 0 and opt.state == []


def test_decoupled_weight_decay_shrinks_after_the_rule():
    p = P0.copy()
    Adam(0.1, decoupled_weight_decay=0.01).step([p], [G1])
    adam_only = P0 - 0.1 * np.sign(G1)
    np.testing.assert_allclose(p, adam_only - 0.1 * 0.01 * adam_only, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_every_solver_keeps_float32_and_descends_a_quadratic(name):
    p = np.array([3.0, -1.5], dtype=np.float32)
    opt = make_optimizer(name, 0.2 if name == "adagrad" else 0.05)
    for _ in range(200):
        opt.step({"p": p}, {"p": 2 * p})  # gradient of ||p||^2; dicts work too
    assert p.dtype == np.float32
    assert np.linalg.norm(p) < 0.5 * np.linalg.norm([3.0, -1.5])
    assert all(a.dtype == np.float32 for a in opt.state_arrays())


def test_make_optimizer_rejects_an_unknown_name():
    with pytest.raises(ValueError, match="unknown solver 'lbfgs'"):
        make_optimizer("lbfgs", 0.1)


@pytest.mark.parametrize("name", sorted(SOLVERS))
@pytest.mark.parametrize("n_parts", [2, 3])
def test_a_step_cut_into_parts_equals_one_step_to_the_bit(name, n_parts):
    rng = np.random.default_rng(0)
    shapes = [(130, 200), (7,), (3, 3, 2)]  # one array large enough to be cut
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    whole, cut = [p.copy() for p in params], [p.copy() for p in params]
    kw = {"alpha": 1e-3} if name == "sgd" else {"decoupled_weight_decay": 1e-2}
    one, parted = make_optimizer(name, 0.01, **kw), make_optimizer(name, 0.01, **kw)
    for _ in range(3):
        halves = [[rng.standard_normal(s).astype(np.float32) for _ in range(2)] for s in shapes]
        one.step(whole, [a + b for a, b in halves], decay=[True, False, True])
        parts = parted.parts(cut, halves, decay=[True, False, True], n_parts=n_parts)
        assert len(parts) == n_parts
        for part in reversed(parts):  # any order
            part()
    for a, b in zip(whole, cut):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(whole[0], params[0])  # the parts did move the weights


def test_optimizers_refuse_parameters_they_could_not_update_in_place():
    p = np.zeros((4, 4))[:, ::2]  # a strided view: a flat view of it would be a copy
    with pytest.raises(ValueError, match="C-contiguous"):
        SGD(0.1).step([p], [np.ones_like(p)])


def test_an_optimizer_refuses_parameters_its_state_was_not_made_for():
    opt = Adam(0.1)
    opt.step([P0.copy()], [G1])
    with pytest.raises(ValueError, match="state belongs to other parameters"):
        opt.step([P0.copy(), P0.copy()], [G1, G1])
    with pytest.raises(ValueError, match="state belongs to other parameters"):
        opt.step([np.zeros(3)], [np.zeros(3)])
