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
    SGD(0.1, weight_decay=0.5).step([p, q], [G1, G1], decay=[True, False])
    np.testing.assert_allclose(p, P0 - 0.1 * (G1 + 0.5 * P0))
    np.testing.assert_allclose(q, P0 - 0.1 * G1)


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
