import numpy as np
import pytest
import torch

from raytal.pseudo.icd import (
    ICDiscriminator,
    icd_scores,
    instance_features,
    refine_with_icd,
    sample_pairs,
    train_icd,
)


def test_instance_features_max_pool_clipping_and_short_instances():
    f = np.array([[0, 5], [1, 4], [2, 3], [3, 2], [4, 1]], dtype=np.float32)
    segs = np.array([
        [0.5, 2.0],   # snippets 1..2 -> max([1,4],[2,3]) = [2, 4]
        [-1.0, 0.3],  # left border: ceil(-1) clipped to 0, floor(0.3) = 0 -> [0, 5]
        [3.2, 3.7],   # no centre inside -> nearest to the midpoint 3.45 is 3 -> [3, 2]
        [3.5, 10.0],  # right border: 4..4 after clipping -> [4, 1]
        [0.0, 4.0],   # whole video -> [4, 5]
        [6.0, 8.0],   # beyond the end -> nearest snippet 4 -> [4, 1]
    ])
    out = instance_features(f, segs)
    np.testing.assert_array_equal(out, [[2, 4], [0, 5], [3, 2], [4, 1], [4, 5], [4, 1]])
    assert instance_features(f, np.zeros((0, 2))).shape == (0, 2)
    with pytest.raises(ValueError, match="segments"):
        instance_features(f, np.zeros((3,)))
    with pytest.raises(ValueError, match="end >= start"):
        instance_features(f, np.array([[3.0, 2.0]]))


def _hand_model() -> ICDiscriminator:
    # dim 1, hidden 1: D(a, b) = sigmoid(2*relu(a - b) - 1)
    m = ICDiscriminator(1, hidden=1)
    with torch.no_grad():
        m.fc1.weight.copy_(torch.tensor([[1.0, -1.0]]))
        m.fc1.bias.zero_()
        m.fc2.weight.copy_(torch.tensor([[2.0]]))
        m.fc2.bias.fill_(-1.0)
    return m


def test_discriminator_forward_and_pair_matrix_by_hand():
    m = _hand_model()
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    p = m(torch.tensor([[1.0], [0.0]]), torch.tensor([[0.0], [1.0]]))
    np.testing.assert_allclose(p.detach().numpy(), [sig(1.0), sig(-1.0)], rtol=1e-6)
    # pair matrix a = [3, 0], b = [1, 2]: relu(a - b) = [[2, 1], [0, 0]] -> sigmoid(2x - 1)
    pm = m.pair_matrix(torch.tensor([[3.0], [0.0]]), torch.tensor([[1.0], [2.0]]))
    np.testing.assert_allclose(pm.detach().numpy(), [[sig(3.0), sig(1.0)], [sig(-1.0), sig(-1.0)]], rtol=1e-6)


def test_icd_scores_mean_over_same_class_and_missing_class_zero():
    m = _hand_model()
    sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    inst = np.array([[1.0], [0.0], [2.0]])
    ref = np.array([[0.0], [1.0], [3.0]])
    S = icd_scores(m, inst, np.array([0, 0, 5]), ref, np.array([0, 0, 1]))
    # inst 0 (class 0) vs refs 0, 1: mean(sig(2*1 - 1), sig(0 - 1)) = mean(sig(1), sig(-1)) = 0.5
    # inst 1: mean(sig(-1), sig(-1)) = sig(-1); inst 2: class 5 has no reference -> 0
    np.testing.assert_allclose(S, [0.5, sig(-1.0), 0.0], rtol=1e-6)


def test_sample_pairs_balanced_and_valid():
    labels = np.array([0, 0, 1, 1, 1, 2])
    i, j, y = sample_pairs(labels, 2001, np.random.default_rng(0))
    assert len(i) == len(j) == len(y) == 2001
    assert y.sum() == 1000  # 2001 // 2 positives, the odd one negative
    np.testing.assert_array_equal(y == 1, labels[i] == labels[j])
    assert np.all(i != j)
    # the singleton class 2 (index 5) is paired with every other instance as a negative
    assert set(j[(i == 5)].tolist()) == {0, 1, 2, 3, 4}


def test_sample_pairs_single_class_only_positives_and_singletons_only_negatives():
    i, j, y = sample_pairs(np.array([3, 3, 3]), 10, np.random.default_rng(1))
    assert y.tolist() == [1.0] * 10 and np.all(i != j)
    i, j, y = sample_pairs(np.array([0, 1, 2]), 7, np.random.default_rng(1))
    assert y.tolist() == [0.0] * 7 and np.all(i != j)
    with pytest.raises(ValueError, match="at least 2"):
        sample_pairs(np.array([0]), 4, np.random.default_rng(0))


@pytest.fixture
def one_thread():
    # a tiny MLP: more threads only add contention on the shared 2-core machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_train_icd_separates_classes_and_is_seeded(one_thread):
    rng = np.random.default_rng(0)
    feats = np.concatenate([rng.normal(0, 0.1, (20, 4)) + [2, 0, 0, 0], rng.normal(0, 0.1, (20, 4)) - [0, 2, 0, 0]])
    labels = np.repeat([0, 1], 20)

    def run() -> tuple[list[float], np.ndarray, np.ndarray]:
        torch.manual_seed(0)
        m = ICDiscriminator(4, hidden=16)
        losses = train_icd(m, feats, labels, steps=60, lr=1e-2, batch_pairs=64, seed=3)
        same = icd_scores(m, feats[:5], labels[:5], feats[20:], labels[20:])  # class 0 vs no class-0 refs
        s = icd_scores(m, feats[:5], np.zeros(5, int), feats, labels)
        d = icd_scores(m, feats[:5], np.ones(5, int), feats, labels)
        return losses, np.concatenate([s, same]), d

    losses, s, d = run()
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    assert np.all(s[:5] > 0.9) and np.all(d < 0.1) and np.all(s[5:] == 0.0)
    assert run()[0] == losses


def test_refine_with_icd_eap_and_mpp():
    positive = np.array([True, True, False, False, False])
    candidate = np.array([False, False, True, True, False])
    S = np.array([0.29, 0.3, 0.7, 0.71, 0.99])
    # positive 0.29 < 0.3 dropped, 0.3 kept; candidate 0.7 not > 0.7, 0.71 promoted; dropped stays out
    np.testing.assert_array_equal(refine_with_icd(positive, candidate, S), [False, True, False, True, False])
    assert refine_with_icd(np.zeros(0, bool), np.zeros(0, bool), np.zeros(0)).shape == (0,)
