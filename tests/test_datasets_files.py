"""Own data files: CSV errors name the file's line (1-based, as an editor shows it) in words of their own, an
empty file or an object array is said plainly, and a file is remembered by absolute path, size and hash."""

import os
import warnings

import numpy as np
import pytest

from nnarray.datasets import DatasetError, check_file_record, file_record, load_file


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("text", ["", "\n\n", "label,a,b\n", "label,a,b\n\n"])
def test_empty_csv_is_refused_without_numpys_warning(tmp_path, text):
    f = _write(tmp_path / "e.csv", text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NumPy's "input contained no data" must not leak
        with pytest.raises(DatasetError,
                           match=rf"^{tmp_path}/e\.csv: expected rows of a label and at least one feature, "
                                 r"found no data rows"):
            load_file(f)


def test_csv_bad_number_names_line_and_column_once(tmp_path):
    f = _write(tmp_path / "b.csv", "label,a,b\n0,0.1,0.2\n1,0.3,0.4\n\n2,0.5,x7\n")
    with pytest.raises(DatasetError) as exc:
        load_file(f)
    msg = str(exc.value)
    assert msg == f"{f}: line 5, column 3: expected a number, got 'x7'"
    assert "usecols" not in msg and "row" not in msg


def test_csv_ragged_line_names_the_line(tmp_path):
    f = _write(tmp_path / "r.csv", "0,0.1,0.2\n1,0.3\n")
    with pytest.raises(DatasetError,
                       match=r"r\.csv: line 2: expected 3 comma-separated values \(as on line 1\), got 2$"):
        load_file(f)


def test_csv_label_errors_count_lines_like_the_parse_errors(tmp_path):
    # the header is line 1; the bad label 0.5 sits on line 3
    f = _write(tmp_path / "l.csv", "label,a\n0,0.1\n0.5,0.2\n1,0.3\n")
    with pytest.raises(DatasetError, match=r"label column: expected integer class labels, found 0\.5 at line 3$"):
        load_file(f)
    f = _write(tmp_path / "n.csv", "0,0.1\n1,nan\n1,0.3\n")
    with pytest.raises(DatasetError,
                       match=r"features: expected finite values, got 1 NaN or inf entry \(the first at line 2\)"):
        load_file(f)


def test_csv_with_crlf_and_bom_reads(tmp_path):
    f = tmp_path / "w.csv"
    f.write_bytes("\ufefflabel,a\r\n0,0.5\r\n1,0.25\r\n".encode())
    (X, t), test = load_file(f)
    assert X.tolist() == [[0.5], [0.25]] and t.tolist() == [0, 1] and test is None


def test_object_npz_is_named_as_such(tmp_path):
    np.savez(tmp_path / "o.npz", X_train=np.array([[0.1, 0.2]] * 4, dtype=object), t_train=np.array([0, 1, 0, 1]))
    with pytest.raises(DatasetError) as exc:
        load_file(tmp_path / "o.npz")
    msg = str(exc.value)
    assert "array 'X_train' has dtype object (Python objects, which are read only by unpickling)" in msg
    assert "not an .npz archive" not in msg


def test_a_single_npy_and_a_text_file_are_named(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(3))
    os.replace(tmp_path / "a.npy", tmp_path / "a.npz")
    with pytest.raises(DatasetError, match=r"a\.npz: a single \.npy array, expected an \.npz archive"):
        load_file(tmp_path / "a.npz")
    with pytest.raises(DatasetError,
                       match=r"t\.npz: not a readable \.npz archive \(not a zip file; "
                             r"expected arrays X_train, t_train saved with numpy\.savez\)$"):
        load_file(_write(tmp_path / "t.npz", "0,1,2\n"))


def test_file_record_is_absolute_and_notices_a_change(tmp_path, monkeypatch):
    f = _write(tmp_path / "d.csv", "0,0.1\n1,0.2\n")
    monkeypatch.chdir(tmp_path)
    rec = file_record("d.csv")
    assert rec["path"] == str(f) and os.path.isabs(rec["path"]) and rec["bytes"] == f.stat().st_size
    assert len(rec["sha256"]) == 64
    monkeypatch.chdir("/")
    assert check_file_record(rec) == str(f)  # from any folder
    f.write_text("0,0.1\n1,0.3\n")  # same size, other content
    with pytest.raises(DatasetError,
                       match=r"d\.csv: the data file changed since the run recorded it "
                             r"\(12 bytes, sha256 [0-9a-f]{12}…; now 12 bytes\)"):
        check_file_record(rec)
    f.unlink()
    with pytest.raises(DatasetError,
                       match=r"d\.csv: no such file \(the data file recorded with the run; it was moved or deleted\)"):
        check_file_record(rec)
    with pytest.raises(DatasetError, match=r"nothere\.csv: no such file"):
        file_record(tmp_path / "nothere.csv")
