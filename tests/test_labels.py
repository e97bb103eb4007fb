"""Labels are class indices 0..C−1: far-off labels and single classes are refused before anything is made;
classes without a training sample are named in a warning."""

import warnings

import numpy as np
import pytest

import nnarray as nn
from nnarray.checks import LabelWarning, class_count


def _untouched(net, before):
    return all(np.array_equal(nn.to_numpy(net.params[k]), before[k]) for k in before)


# ------------------------------------------------------------------------------------------- class_count
def test_class_count_is_the_largest_label_plus_one():
    assert class_count(np.array([2, 0, 1, 1])) == 3


def test_a_far_label_is_refused_naming_value_row_and_class_count():
    t = np.r_[np.arange(7), 3, 250_000, 4]
    with pytest.raises(ValueError, match=r"^t: label 250000 at index 8 of t would make 250001 classes \(0\.\.250000\), "
                                         r"but only 8 distinct labels occur .*expected class indices 0\.\.C−1"):
        class_count(t)


def test_a_far_label_in_another_set_names_that_set():
    with pytest.raises(ValueError, match=r"^test labels: label 77 at index 1 of test labels would make 78 classes"):
        class_count(np.array([0, 1, 2, 1]), others=[(np.array([0, 77]), "test labels")])


@pytest.mark.parametrize("t,shown",
                         [(np.full(40, 3), "only class 3 in all 40 labels"),
                          (np.zeros(5, np.int32), "only class 0 in all 5")])
def test_a_single_class_is_refused(t, shown):
    with pytest.raises(ValueError, match=rf"^t: expected labels of at least two classes, got {shown}"):
        class_count(t)


def test_a_negative_label_is_refused_where_it_is():
    with pytest.raises(ValueError, match=r"^y: expected class indices 0\.\.C−1 \(whole numbers ≥ 0\), got -2 at row 4"):
        class_count(np.array([0, 1, 1, -2]), name="y", where=lambda name, i: f"row {i + 1}")


def test_labels_from_one_warn_that_class_zero_is_empty():
    with pytest.warns(LabelWarning, match=r"^t: class 0 of 0\.\.5 has no training sample.*numbered from 0"):
        assert class_count(np.array([1, 2, 3, 4, 5, 5])) == 6


def test_classes_only_in_the_test_set_are_named():
    with pytest.warns(LabelWarning, match=r"^t: classes 2, 4 of 0\.\.4 have no training sample"):
        assert class_count(np.array([0, 1, 3, 3]), others=[(np.array([2, 4]), "test")]) == 5


def test_half_absent_is_a_warning_more_than_half_an_error():
    with pytest.warns(LabelWarning, match=r"classes 1, 2 of 0\.\.3"):
        assert class_count(np.array([0, 3, 3])) == 4
    with pytest.raises(ValueError, match=r"label 4 at index 1 of t would make 5 classes"):
        class_count(np.array([0, 4, 4]))


def test_no_warning_when_every_class_has_a_sample():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert class_count(np.array([0, 1, 2]), others=[(np.array([2, 1]), "val")]) == 3


# ------------------------------------------------------------------------------------------- MLP and fit
def test_a_one_output_network_is_refused():
    with pytest.raises(ValueError, match=r"^layer_sizes: expected at least 2 outputs \(one per class.*got \[4, 3, 1\]"):
        nn.MLP([4, 3, 1], backend="numpy")


def test_fit_names_classes_without_a_sample_and_still_trains():
    rng = np.random.default_rng(0)
    X, t = rng.random((12, 4)), np.array([0, 1, 3] * 4)
    net = nn.MLP([4, 5, 4], backend="numpy", seed=0)
    with pytest.warns(LabelWarning, match=r"^t: class 2 of 0\.\.3 has no training sample"):
        nn.fit(net, nn.SGD(0.1), X, t, epochs=1)


def test_fit_refuses_labels_beyond_the_outputs_before_any_work():
    rng = np.random.default_rng(0)
    X, t = rng.random((6, 4)), np.array([0, 1, 2, 0, 1, 1_000_000])
    net = nn.MLP([4, 5, 3], backend="numpy", seed=0)
    before = {k: nn.to_numpy(v).copy() for k, v in net.params.items()}
    with pytest.raises(ValueError,
                       match=r"t: expected labels in 0\.\.2 \(the network has 3 outputs\), "
                             r"got labels from 0 to 1000000"):
        nn.fit(net, nn.SGD(0.1), X, t)
    assert _untouched(net, before)


# ------------------------------------------------------------------------------------------- own data files
def _csv(path, rows, header="label,a,b"):
    path.write_text((header + "\n" if header else "") + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return path


def test_csv_far_label_is_refused_naming_the_line(tmp_path):
    rows = [[k % 4, 0.5, 0.25] for k in range(20)]
    rows[12][0] = 99999
    f = _csv(tmp_path / "d.csv", rows)
    with pytest.raises(nn.datasets.DatasetError,
                       match=rf"^{tmp_path}/d\.csv: label column: label 99999 at line 14 would make "
                                                       r"100000 classes \(0\.\.99999\), but only 5 distinct labels"):
        nn.datasets.load_file(f)


def test_csv_single_class_is_refused(tmp_path):
    f = _csv(tmp_path / "one.csv", [[7, 0.1, 0.2]] * 6)
    with pytest.raises(nn.datasets.DatasetError,
                       match=r"label column: expected labels of at least two classes, got only class 7 "
                                                       r"in all 6 labels \(is the label in the first column\?\)"):
        nn.datasets.load_file(f)


def test_npz_labels_from_one_warn(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", X_train=rng.random((30, 3)), t_train=np.arange(30) % 10 + 1)
    with pytest.warns(LabelWarning, match=r"d\.npz: t_train: class 0 of 0\.\.10 has no training sample"):
        (X, t), test = nn.datasets.load_file(tmp_path / "d.npz")
    assert t.max() == 10 and test is None


def test_test_file_far_label_names_the_test_file(tmp_path):
    train = _csv(tmp_path / "train.csv", [[k % 3, 0.1, 0.2] for k in range(9)])
    test = _csv(tmp_path / "test.csv", [[0, 0.1, 0.2], [1, 0.3, 0.4], [40, 0.5, 0.6]], header=None)
    with pytest.raises(nn.datasets.DatasetError,
                       match=rf"^{tmp_path}/test\.csv: label column: label 40 at line 3 would make 41"):
        nn.datasets.load_file(train, test)
