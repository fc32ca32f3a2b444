"""DigestSet: 16-byte digests in 65,536 buckets of concatenated 14-byte rests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evo_engine.search.digests import DigestSet

# Few distinct bytes and few buckets: entries of one bucket share runs of bytes, so a rest
# often occurs inside the bucket across two entries, which is not membership.
_digest = st.tuples(
    st.sampled_from([b"\x00\x00", b"\x00\x01", b"\xff\xff"]),
    st.lists(st.sampled_from([0, 1]), min_size=14, max_size=14),
).map(lambda t: t[0] + bytes(t[1]))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.booleans(), _digest), max_size=60))
def test_behaves_as_a_set_of_digests(ops: list[tuple[bool, bytes]]) -> None:
    model: set[bytes] = set()
    s = DigestSet()
    for add, d in ops:
        if add:
            s.add(d)
            model.add(d)
        assert (d in s) == (d in model)
        assert len(s) == len(model)
    assert sorted(s) == sorted(model)
    assert s == model and DigestSet(model) == s


def test_a_match_across_two_entries_is_not_membership() -> None:
    head = b"\x00\x00"
    s = DigestSet([head + b"A" * 7 + b"B" * 7, head + b"C" * 7 + b"D" * 7])
    assert head + b"B" * 7 + b"C" * 7 not in s  # the bucket holds it at offset 7
    # A rest found first across the entries, then aligned further on, is there.
    t = DigestSet([head + b"\x01" + b"\x02" * 13, head + b"\x02" * 14])
    assert head + b"\x02" * 14 in t and len(t) == 2
    assert head + b"\x02" * 13 + b"\x01" not in t
    t.add(head + b"\x02" * 14)
    assert len(t) == 2


def test_only_16_byte_digests_are_accepted() -> None:
    s = DigestSet()
    with pytest.raises(ValueError, match="16 bytes"):
        s.add(b"short")
    assert b"short" not in s and "text" not in s
