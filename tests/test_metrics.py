import pytest
from sklearn.metrics import f1_score

from peftlab.tasks.metrics import compute_classification, is_better


def test_binary_by_hand():
    # tp=2 fp=1 fn=1 tn=2
    m = compute_classification([1, 1, 1, 0, 0, 0], [1, 1, 0, 1, 0, 0], 2)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["mcc"] == pytest.approx((2 * 2 - 1 * 1) / 9)


def test_multiclass_macro_matches_sklearn():
    y, p = [0, 1, 2, 2, 1, 0, 2], [0, 2, 2, 2, 1, 1, 0]
    m = compute_classification(y, p, 3)
    assert m["f1"] == pytest.approx(f1_score(y, p, average="macro"))
    assert m["f1"] == m["f1_macro"]
    assert m["accuracy"] == pytest.approx(4 / 7)


def test_is_better_direction():
    assert is_better("accuracy", 0.8, 0.7) and not is_better("accuracy", 0.7, 0.8)
    assert is_better("loss", 0.3, 0.5) and not is_better("loss", 0.5, 0.3)
    assert is_better("f1", 0.0, None)
