"""Keys this process read are masked wherever text echoes them: whole, URL-encoded, cut short."""

from __future__ import annotations

import pytest

from ralph.secrets import redact, remember_secret

KEY = "Zq9+tok/en=SELFHOSTED-7731x"  # no known shape: masked only because it was read


@pytest.fixture(autouse=True)
def read_key() -> None:
    remember_secret(KEY)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"bad key {KEY}", "bad key [REDACTED:key]"),
        ("bad key Zq9%2Btok%2Fen%3DSELFHOSTED-7731x", "bad key [REDACTED:key]"),  # a query
        (
            "to http://x.example/?k=Zq9+tok/en=SELFHOSTED-773",
            "to http://x.example/?k=[REDACTED:key]",
        ),
        ("bad key Zq9+tok/en=SELFHOSTED-77...", "bad key [REDACTED:key]..."),  # cut short
        ("the key starts Zq9+tok/en=", "the key starts Zq9+tok/en="),  # too little to tell
    ],
)
def test_a_read_key_is_masked_however_it_is_echoed(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_a_key_of_a_known_shape_keeps_its_label_in_every_form() -> None:
    shaped = "sk-proj-abcdefghijklmnopqrstuvwxyz012345"
    remember_secret(shaped)
    assert redact(f"key={shaped[:30]}") == "key=[REDACTED:openai]"


def test_a_long_token_is_masked_whole_and_cut_short() -> None:
    """An Azure AD token or an STS session token runs to thousands of characters."""
    token = "eyJ0eXAiOiJKV1Qi" + "Ab3-_" * 400
    remember_secret(token)
    assert redact(f"bad token {token}!") == "bad token [REDACTED:key]!"
    assert redact(f"bad token {token[:1500]}...") == "bad token [REDACTED:key]..."
