from collections.abc import Callable

from tests.conftest import ROOT, Result


def test_shipped_examples_validate(ralph: Callable[..., Result]) -> None:
    result = ralph("validate", str(ROOT / "examples"))
    assert result.code == 0, result.out
    assert result.out.strip().endswith("0 invalid, 0 errors")
