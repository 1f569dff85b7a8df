"""The public API is what ``configdrive.__all__`` names: sorted, and every name exists."""

from __future__ import annotations

import configdrive


def test_all_is_sorted_and_complete() -> None:
    names = configdrive.__all__
    assert names == sorted(names)
    for name in names:
        assert hasattr(configdrive, name), name
    public = {n for n in dir(configdrive) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(names), public - set(names)
