from __future__ import annotations

import warnings

import pytest

from textreid._deprecation import deprecated, warn_deprecated


def test_function_warns_with_replacement_and_version() -> None:
    @deprecated(since="0.1", removed_in="1.0", replacement="new_fn")
    def old_fn(x: int) -> int:
        return x + 1

    with pytest.warns(
        FutureWarning,
        match=r"old_fn is deprecated since textreid 0\.1 and will be removed in 1\.0; use new_fn instead",
    ):
        assert old_fn(1) == 2


def test_class_warns_on_instantiation_and_keeps_behaviour() -> None:
    @deprecated(since="0.1", removed_in="2.0")
    class Old:
        def __init__(self, v: int) -> None:
            self.v = v

    with pytest.warns(FutureWarning, match="Old is deprecated"):
        obj = Old(3)
    assert obj.v == 3


def test_warning_points_at_the_caller() -> None:
    @deprecated(since="0.1", removed_in="1.0")
    def f() -> None:
        return None

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f()
    assert caught[0].filename == __file__


def test_warn_deprecated_for_arguments() -> None:
    with pytest.warns(FutureWarning, match="argument foo= of bar"):
        warn_deprecated("argument foo= of bar", since="0.1", removed_in="1.0")
