"""The datasets box: built-in data, real files, and one clear DataError per bad input."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from movingtarget.datasets import (
    DATASETS,
    Dataset,
    Split,
    load_cifar10,
    load_csv,
    load_dataset,
    load_fashion_mnist,
    load_idx,
    load_npz,
    read_idx,
    tabular,
)
from movingtarget.datasets.idx import FASHION_MNIST_ROOT
from movingtarget.datasets.tabular import shipped_spambase
from movingtarget.errors import ConfigError, DataError

# --------------------------------------------------------------------------- helpers


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """An IDX file holding ``arr`` (big-endian values after the header)."""
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    header = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape)
    return header + arr.astype(dtypes[code]).tobytes()


def write_idx_pair(
    tmp: Path, n: int = 5, h: int = 4, w: int = 3, gz: bool = True
) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, h, w), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    suffix = ".gz" if gz else ""
    ip, lp = tmp / f"img-idx3-ubyte{suffix}", tmp / f"lab-idx1-ubyte{suffix}"
    for path, arr in ((ip, images), (lp, labels)):
        data = idx_bytes(arr)
        path.write_bytes(gzip.compress(data) if gz else data)
    return ip, lp, images, labels


# --------------------------------------------------------------------------- registry


def test_registry_names() -> None:
    assert {
        "digits",
        "breast-cancer",
        "idx",
        "fashion-mnist",
        "csv",
        "spambase",
        "npz",
        "cifar10",
    } <= set(DATASETS.names())


def test_unknown_dataset_suggests_a_name() -> None:
    with pytest.raises(ConfigError, match="did you mean 'digits'"):
        load_dataset("digitz")


def test_unknown_parameter_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="dataset 'digits'"):
        load_dataset("digits", nope=1)


# --------------------------------------------------------------------------- built-in


def test_digits() -> None:
    ds = load_dataset("digits")
    assert isinstance(ds, Dataset)
    assert ds.x.shape == (1797, 64) and ds.x.dtype == np.float32
    assert ds.x.min() == 0.0 and ds.x.max() == 1.0
    assert ds.n_classes == 10 and ds.class_names[3] == "3"
    assert isinstance(ds.split(seed=0), Split)


def test_breast_cancer_is_raw() -> None:
    ds = load_dataset("breast-cancer")
    assert ds.x.shape == (569, 30) and ds.x.dtype == np.float32
    assert ds.x.max() > 100  # raw features, not rescaled
    assert ds.class_names == ("malignant", "benign")
    assert np.bincount(ds.y).tolist() == [212, 357]


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path: Path, gz: bool) -> None:
    ip, lp, images, labels = write_idx_pair(tmp_path, gz=gz)
    ds = load_dataset("idx", images=ip, labels=lp)
    assert ds.x.shape == (5, 1, 4, 3) and ds.x.dtype == np.float32
    np.testing.assert_allclose(ds.x[:, 0], images / 255.0, atol=1e-7)
    assert ds.y.tolist() == labels.tolist()
    assert ds.name == "img-idx3-ubyte"
    assert load_idx(ip, lp, limit=2).x.shape == (2, 1, 4, 3)


def test_read_idx_other_dtypes(tmp_path: Path) -> None:
    arr = np.arange(6, dtype=np.int32).reshape(2, 3) - 3
    p = tmp_path / "a.idx"
    p.write_bytes(idx_bytes(arr, code=0x0C))
    out = read_idx(p)
    assert out.dtype == np.int32 and out.tolist() == arr.tolist()


def test_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nothere\.gz: IDX file not found"):
        read_idx(tmp_path / "nothere.gz")


def test_idx_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "empty"
    p.write_bytes(b"")
    with pytest.raises(DataError, match="empty: empty IDX file"):
        read_idx(p)


def test_idx_truncated_gzip(tmp_path: Path) -> None:
    ip, _, _, _ = write_idx_pair(tmp_path, n=50)
    data = ip.read_bytes()
    ip.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated gzip file"):
        read_idx(ip)


def test_idx_corrupt_gzip(tmp_path: Path) -> None:
    ip, _, _, _ = write_idx_pair(tmp_path, n=50)
    data = bytearray(ip.read_bytes())
    data[-6] ^= 0xFF  # the CRC / size trailer no longer matches
    ip.write_bytes(bytes(data))
    with pytest.raises(DataError, match="corrupt gzip file"):
        read_idx(ip)


def test_idx_bad_magic(tmp_path: Path) -> None:
    p = tmp_path / "x.idx"
    p.write_bytes(b"PK\x03\x04" + bytes(20))
    with pytest.raises(DataError, match="bad IDX magic number 0x504b0304"):
        read_idx(p)


def test_idx_unknown_type_code(tmp_path: Path) -> None:
    p = tmp_path / "x.idx"
    p.write_bytes(bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 5]))
    with pytest.raises(DataError, match="unknown IDX type code 0x07"):
        read_idx(p)


def test_idx_zero_dimensions(tmp_path: Path) -> None:
    p = tmp_path / "x.idx"
    p.write_bytes(bytes([0, 0, 0x08, 0]))
    with pytest.raises(DataError, match="declares 0 dimensions"):
        read_idx(p)


def test_idx_truncated_header(tmp_path: Path) -> None:
    p = tmp_path / "x.idx"
    p.write_bytes(bytes([0, 0, 0x08, 3, 0, 0, 0, 2]))
    with pytest.raises(DataError, match="truncated IDX header"):
        read_idx(p)


@pytest.mark.parametrize(("cut", "word"), [(-1, "truncated"), (1, "trailing bytes")])
def test_idx_size_mismatch(tmp_path: Path, cut: int, word: str) -> None:
    data = idx_bytes(np.zeros((3, 2, 2), np.uint8))
    data = data[:cut] if cut < 0 else data + bytes(cut)
    p = tmp_path / "x.idx"
    p.write_bytes(data)
    with pytest.raises(
        DataError, match=rf"size mismatch: header declares shape \(3, 2, 2\).*{word}"
    ):
        read_idx(p)


def test_idx_label_count_mismatch(tmp_path: Path) -> None:
    ip, lp, _, _ = write_idx_pair(tmp_path, n=5)
    lp.write_bytes(gzip.compress(idx_bytes(np.zeros(4, np.uint8))))
    with pytest.raises(DataError, match=r"4 labels but .* holds 5 images"):
        load_idx(ip, lp)


def test_idx_images_wrong_rank(tmp_path: Path) -> None:
    ip, lp, _, _ = write_idx_pair(tmp_path, n=5)
    ip.write_bytes(idx_bytes(np.zeros((5, 12), np.uint8)))
    with pytest.raises(DataError, match=r"images must have 3 dimensions .* \(5, 12\)"):
        load_idx(ip, lp)


def test_idx_float_labels_rejected(tmp_path: Path) -> None:
    ip, lp, _, _ = write_idx_pair(tmp_path, n=5)
    lp.write_bytes(idx_bytes(np.zeros(5, np.float32), code=0x0D))
    with pytest.raises(DataError, match="labels must be integers"):
        load_idx(ip, lp)


def test_idx_nan_images(tmp_path: Path) -> None:
    ip, lp, _, _ = write_idx_pair(tmp_path, n=3)
    img = np.zeros((3, 2, 2), np.float32)
    img[1, 0, 0] = np.nan
    ip.write_bytes(idx_bytes(img, code=0x0D))
    with pytest.raises(DataError, match="row 1 holds NaN or infinite values"):
        load_idx(ip, lp)


# --------------------------------------------------------------------------- Fashion-MNIST


@pytest.fixture(scope="module")
def fashion_test() -> Dataset:
    return load_fashion_mnist(part="test", limit=3000)


def test_fashion_mnist_real_files(fashion_test: Dataset) -> None:
    ds = fashion_test
    assert ds.name == "fashion-mnist"
    assert ds.x.shape == (3000, 1, 28, 28) and ds.x.dtype == np.float32
    assert ds.x.min() == 0.0 and ds.x.max() == 1.0
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert set(np.unique(ds.y).tolist()) == set(range(10))
    # Checked against the raw bytes, read independently of the reader.
    raw = gzip.decompress(Path(FASHION_MNIST_ROOT, "t10k-images-idx3-ubyte.gz").read_bytes())
    first = np.frombuffer(raw, np.uint8, count=784, offset=16).reshape(28, 28)
    np.testing.assert_array_equal(np.round(ds.x[0, 0] * 255).astype(np.uint8), first)
    labels = gzip.decompress(Path(FASHION_MNIST_ROOT, "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert ds.y[:20].tolist() == list(labels[8:28])


def test_fashion_mnist_parts_and_limit() -> None:
    train = load_dataset("fashion-mnist", part="train", limit=1000)
    both = load_dataset("fashion-mnist", limit=1000)  # part="all": train first
    np.testing.assert_array_equal(train.x, both.x)
    np.testing.assert_array_equal(train.y, both.y)


def test_fashion_mnist_bad_params(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="part must be one of train, test, all"):
        load_fashion_mnist(part="validation")
    with pytest.raises(ConfigError, match="limit must be a positive integer"):
        load_fashion_mnist(limit=0)
    with pytest.raises(DataError, match="Fashion-MNIST directory not found"):
        load_fashion_mnist(root=tmp_path / "nope")
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\[\.gz\]: Fashion-MNIST file not"):
        load_fashion_mnist(root=tmp_path, part="test")


# --------------------------------------------------------------------------- CSV


def test_spambase_ships_with_the_package() -> None:
    ds = load_dataset("spambase")  # no path: the copy inside the package
    assert ds.meta["path"] == str(shipped_spambase())
    assert ds.name == "spambase"
    assert ds.name == "spambase"
    assert ds.x.shape == (4601, 57) and ds.x.dtype == np.float32
    assert ds.class_names == ("nonspam", "spam")
    assert np.bincount(ds.y).tolist() == [2788, 1813]
    assert ds.meta["label_column"] == "type"


def test_spambase_shipped_file_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # one feature value changed in a copy of the shipped file: the digest catches it
    raw = gzip.decompress(shipped_spambase().read_bytes()).decode()
    damaged = tmp_path / "spambase.csv.gz"
    damaged.write_bytes(gzip.compress(raw.replace("0.64", "0.65", 1).encode()))
    monkeypatch.setattr(tabular, "shipped_spambase", lambda: damaged)
    with pytest.raises(DataError, match="shipped Spambase data is damaged"):
        load_dataset("spambase")


def test_spambase_user_copy(tmp_path: Path) -> None:
    # a user's own CSV through path=: the same data as the shipped copy
    copy = tmp_path / "spam.csv"
    copy.write_bytes(gzip.decompress(shipped_spambase().read_bytes()))
    assert hashlib.sha256(copy.read_bytes()).hexdigest() == tabular.SPAMBASE_SHA256
    mine, shipped = load_dataset("spambase", path=copy), load_dataset("spambase")
    np.testing.assert_array_equal(mine.x, shipped.x)
    np.testing.assert_array_equal(mine.y, shipped.y)


def write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def test_csv_string_and_numeric_labels(tmp_path: Path) -> None:
    p = write(tmp_path, "t.csv", "a,b,kind\n1,2,dog\n3,4.5,cat\n5,6,dog\n")
    ds = load_csv(p)
    assert ds.name == "t" and ds.class_names == ("cat", "dog") and ds.y.tolist() == [1, 0, 1]
    np.testing.assert_array_equal(ds.x, [[1, 2], [3, 4.5], [5, 6]])
    q = write(tmp_path, "n.csv", "label,a,b\n2,1,1\n0,2,2\n2.0,3,3\n")
    ds = load_dataset("csv", path=q, label_column="label")
    assert ds.y.tolist() == [2, 0, 2] and ds.class_names == ("0", "1", "2")
    assert load_csv(q, label_column=0).y.tolist() == [2, 0, 2]


def test_csv_gzip(tmp_path: Path) -> None:
    p = tmp_path / "t.csv.gz"
    p.write_bytes(gzip.compress(b"a,y\n1,x\n2,z\n"))
    assert load_csv(p).y.tolist() == [0, 1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty CSV file"),
        ("a,b,y\n", "header but no data rows"),
        ("a,b,y\n1,2,x\n1,oops,z\n", r"line 3, column 'b': non-numeric value 'oops'"),
        ("a,b,y\n1,2,x\n1,,z\n", r"line 3, column 'b': non-numeric value ''"),
        ("a,b,y\n1,nan,x\n", r"line 2, column 'b': NaN or infinite value"),
        ("a,b,y\n1,2,x\ninf,2,x\n", r"line 3, column 'a': NaN or infinite value"),
        ("a,b,y\n1,2,x\n1,2\n", "line 3 has 2 fields but the header has 3"),
        ("y\n1\n", "at least one feature column"),
        ("a,y\n1,0.5\n", r"line 2, column 'y': numeric labels must be whole numbers"),
        ("a,y\n1,-1\n", r"line 2, column 'y': negative label"),
        ("a,y\n1,\n", r"line 2, column 'y': empty label"),
    ],
)
def test_csv_bad_inputs(tmp_path: Path, text: str, message: str) -> None:
    p = write(tmp_path, "bad.csv", text)
    with pytest.raises(DataError, match=message) as info:
        load_csv(p)
    assert "bad.csv" in str(info.value)


def test_csv_missing_file_and_column(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.csv: CSV file not found"):
        load_csv(tmp_path / "missing.csv")
    p = write(tmp_path, "t.csv", "a,b\n1,2\n")
    with pytest.raises(DataError, match="no column named 'kind'"):
        load_csv(p, label_column="kind")
    with pytest.raises(DataError, match="label_column 5 out of range"):
        load_csv(p, label_column=5)


def test_csv_binary_file(tmp_path: Path) -> None:
    p = tmp_path / "bin.csv"
    p.write_bytes(b"a,b\n\xff\xfe,1\n")
    with pytest.raises(DataError, match="not a UTF-8 text file"):
        load_csv(p)


# --------------------------------------------------------------------------- npz


def test_npz_round_trip_and_keys(tmp_path: Path) -> None:
    p = tmp_path / "d.npz"
    np.savez(p, x=np.arange(12).reshape(4, 3), y=np.array([0, 1, 1, 2]))
    ds = load_dataset("npz", path=p)
    assert ds.name == "d" and ds.x.dtype == np.float32 and ds.x.shape == (4, 3)
    assert ds.y.tolist() == [0, 1, 1, 2]
    q = tmp_path / "e.npz"
    np.savez(q, inputs=np.ones((2, 2, 2)), targets=np.array([1.0, 0.0]))
    ds = load_npz(q, x_key="inputs", y_key="targets")
    assert ds.x.shape == (2, 2, 2) and ds.y.tolist() == [1, 0]


def test_npz_missing_key(tmp_path: Path) -> None:
    p = tmp_path / "d.npz"
    np.savez(p, data=np.ones((2, 2)), y=np.zeros(2, int))
    with pytest.raises(DataError, match=r"d\.npz: missing key 'x' \(the archive holds: data, y\)"):
        load_npz(p)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.ones(3), "y": np.zeros(3, int)}, r"'x' must have shape \(n, features...\)"),
        ({"x": np.ones((3, 2)), "y": np.zeros((3, 1), int)}, r"'y' must have shape \(n,\)"),
        ({"x": np.ones((3, 2)), "y": np.zeros(2, int)}, "3 inputs in 'x' but 2 labels in 'y'"),
        ({"x": np.ones((0, 2)), "y": np.zeros(0, int)}, "'x' holds no inputs"),
        ({"x": np.array([[1.0, np.inf]]), "y": np.zeros(1, int)}, "row 0 holds NaN or infinite"),
        ({"x": np.array([["a", "b"]]), "y": np.zeros(1, int)}, "'x' must be numeric"),
        ({"x": np.ones((2, 2)), "y": np.array([0.5, 1.0])}, "'y' must hold whole-number labels"),
        ({"x": np.ones((2, 2)), "y": np.array([0, -2])}, "'y' holds a negative label"),
    ],
)
def test_npz_bad_arrays(tmp_path: Path, arrays: dict[str, np.ndarray], message: str) -> None:
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=message) as info:
        load_npz(p)
    assert "bad.npz" in str(info.value)


def test_npz_not_an_archive(tmp_path: Path) -> None:
    p = tmp_path / "junk.npz"
    p.write_bytes(b"this is not a zip file at all")
    with pytest.raises(DataError, match=r"junk\.npz: not a readable npz archive"):
        load_npz(p)
    e = tmp_path / "empty.npz"
    e.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.npz: empty npz file"):
        load_npz(e)
    with pytest.raises(DataError, match="npz file not found"):
        load_npz(tmp_path / "none.npz")
    obj = tmp_path / "obj.npz"
    np.savez(obj, x=np.array([{"a": 1}], dtype=object), y=np.zeros(1, int))
    with pytest.raises(DataError, match="cannot read arrays"):
        load_npz(obj)


# --------------------------------------------------------------------------- CIFAR-10


def write_cifar(root: Path, n_train: int = 2, n_test: int = 3) -> None:
    """A tiny CIFAR-10 directory in the real layout (bytes keys, protocol 2)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for j, name in enumerate(batches):
        n = n_test if name == "test_batch" else n_train
        batch = {
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
            b"labels": [(j + i) % 10 for i in range(n)],
            b"batch_label": name.encode(),
        }
        (root / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [f"c{i}".encode() for i in range(10)], b"num_vis": 3072}
    (root / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


def test_cifar10_tiny_batches(tmp_path: Path) -> None:
    root = tmp_path / "cifar-10-batches-py"
    write_cifar(root)
    ds = load_dataset("cifar10", root=root)
    assert ds.x.shape == (13, 3, 32, 32) and ds.x.dtype == np.float32
    assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0
    assert ds.class_names[:2] == ("c0", "c1")
    raw = pickle.loads((root / "data_batch_1").read_bytes())
    np.testing.assert_allclose(ds.x[0], raw[b"data"][0].reshape(3, 32, 32) / 255.0, atol=1e-7)
    assert ds.y[:2].tolist() == raw[b"labels"]
    test = load_cifar10(root=root, part="test")
    assert len(test.y) == 3 and test.y.tolist() == [5, 6, 7]
    assert len(load_cifar10(root=root, limit=3).y) == 3


def test_cifar10_refuses_foreign_objects(tmp_path: Path) -> None:
    root = tmp_path / "c"
    write_cifar(root)

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pwned",))

    (root / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataError, match=r"test_batch: not a CIFAR batch pickle .*refusing"):
        load_cifar10(root=root, part="test")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty CIFAR batch file"),
        (
            pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]})[:-30],
            "corrupt or truncated",
        ),
        (pickle.dumps([1, 2]), "a CIFAR batch must be a dict"),
        (pickle.dumps({b"labels": [1]}), "CIFAR batch has no 'data' field"),
        (
            pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [1, 2]}),
            "uint8 of shape",
        ),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}), "2 images but 1"),
        (pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]}), r"in \[0, 9\]"),
    ],
)
def test_cifar10_bad_batches(tmp_path: Path, content: bytes, message: str) -> None:
    root = tmp_path / "c"
    write_cifar(root)
    (root / "test_batch").write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        load_cifar10(root=root, part="test")
    assert "test_batch" in str(info.value)


def test_cifar10_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="CIFAR-10 directory not found"):
        load_cifar10(root=tmp_path / "none")
    root = tmp_path / "c"
    write_cifar(root)
    (root / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3: CIFAR-10 batch not found"):
        load_cifar10(root=root, part="train")
    with pytest.raises(ConfigError, match="part must be one of"):
        load_cifar10(root=root, part="dev")
