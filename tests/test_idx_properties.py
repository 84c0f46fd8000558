"""The IDX reader, given any bytes at all: arrays that match the header, or a DataError."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mnist_gluon.data import IDX_TYPES, decompressed, parse_idx
from mnist_gluon.errors import DataError


def check(raw: bytes) -> None:
    try:
        array = parse_idx(raw, "f")
    except DataError as error:
        assert str(error).startswith("f ")
        return
    dtype, ndim = IDX_TYPES[raw[2]], raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    assert array.shape == dims and array.dtype == dtype.newbyteorder("=")
    assert array.tobytes() == np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim).astype(
        array.dtype).tobytes()


@given(st.binary(max_size=300))
def test_any_bytes_give_a_matching_array_or_a_data_error(raw):
    check(raw)


@st.composite
def idx_like(draw):
    """Bytes with a plausible IDX header and a body that may or may not fit it."""
    code = draw(st.sampled_from(sorted(IDX_TYPES)))
    dims = draw(st.lists(st.integers(0, 6), min_size=1, max_size=4))
    header = bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    size = int(np.prod(dims)) * IDX_TYPES[code].itemsize
    body_size = draw(st.one_of(st.just(size), st.integers(0, size + 8)))
    return header + draw(st.binary(min_size=body_size, max_size=body_size))


@settings(max_examples=300)
@given(idx_like())
def test_headers_with_any_body_give_a_matching_array_or_a_data_error(raw):
    check(raw)


@given(st.binary(max_size=200))
def test_bytes_that_look_gzipped_decompress_or_give_a_data_error(tail):
    try:
        decompressed(b"\x1f\x8b" + tail, "f.gz")
    except DataError as error:
        assert "is a damaged gzip file" in str(error)
