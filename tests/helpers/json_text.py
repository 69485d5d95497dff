"""Hypothesis strategies for JSON text written in every legal way: the elements a scan of
an array must give back exactly as written (tests of json_items and Fast.put_json)."""

from __future__ import annotations

from hypothesis import strategies as st

VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats(allow_nan=False,
                                                                         allow_infinity=False)
    | st.sampled_from(["}, {", ", ", "},{", ",", 'a\\"b', "]"]) | st.text(max_size=5)
    | st.text('\\"[]{},: é', max_size=6),  # runs of backslashes before quotes, UTF-8
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["a", "}, {", ", "]), inner, max_size=3),
    max_leaves=8,
)
SEPARATORS = st.sampled_from([(", ", ": "), (",", ":"), (" , ", " :"), (",\n ", ": ")])
