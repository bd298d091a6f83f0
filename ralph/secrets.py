"""Recognising secrets so that none is accepted in a recipe, echoed in a message, or kept in an
answer that goes through the `redact_secrets` filter."""

from __future__ import annotations

import re
from urllib.parse import quote, quote_plus

_KINDS = {
    "anthropic": r"\bsk-ant-[A-Za-z0-9_\-]{8,}",
    "openai": r"\bsk-(?:proj-|svcacct-)?[A-Za-z0-9_\-]{16,}",
    "aws": r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    # fine-grained tokens too: github_pat_, 22 characters, _, 59; a long first part keeps a
    # snake_case name that starts github_pat_ from counting
    "github": r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}"
    r"|github_pat_(?=[A-Za-z0-9_]{22})[A-Za-z0-9]{16,}[A-Za-z0-9_]*)",
    "slack": r"\bxox[abprs]-[A-Za-z0-9\-]{10,}",
    "google": r"\bAIza[0-9A-Za-z_\-]{35}",
    "jwt": r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*",
    # a whole PEM block, or one cut off before its END line (an answer out of tokens): the
    # base64 lines that came, each of 16 characters at least (a shorter last one is no key), so
    # that the marker alone, as text about keys has it, is not a secret; `\n` as JSON writes it
    "private_key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----(?:[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"
    r"|(?:(?:\s|\\n)+[A-Za-z0-9+/=]{16,})+)",
    "bearer": r"(?i:\bbearer)\s+[A-Za-z0-9._~+/\-]{16,}=*",
    "url_password": r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)",
}
_SECRET = re.compile("|".join(f"(?P<{kind}>{pattern})" for kind, pattern in _KINDS.items()))

# matched against the last words of a key name, normalised to lower_snake_case
_SECRET_FIELD = re.compile(
    r"(?:^|_)(?:api_?key|(?:secret|private|access)_key|authorization|password|passwd|passphrase"
    r"|secret|token)$"
)
# a `<word>_token` that counts or marks tokens of text, not one that grants access
_TEXT_TOKENS = frozenset({"per", "bos", "eos", "pad", "unk", "sep", "cls", "mask", "stop"})


def is_secret_field(name: str) -> bool:
    """A key that holds a credential whatever its value (`api_key`, `Authorization`, ...)."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower().replace("-", "_")
    if _SECRET_FIELD.search(words) is None:
        return False
    *_, qualifier, last = ["", *words.split("_")]
    return last != "token" or qualifier not in _TEXT_TOKENS


def looks_like_secret(text: str) -> bool:
    return _SECRET.search(text) is not None


def find_secret(text: str) -> int | None:
    """Where the first secret in `text` starts, if there is one."""
    match = _SECRET.search(text)
    return None if match is None else match.start()


def count_secrets(text: str) -> int:
    return sum(1 for _ in _SECRET.finditer(text))


class _KnownSecrets:
    """The keys this process has read: a key of no known shape (a self-hosted server's token,
    an Azure key) is still masked wherever an API echoes it back. A key of a known shape keeps
    its kind's label, so a message reads the same whichever way its key was found."""

    def __init__(self) -> None:
        self.labels: dict[str, str] = {}
        self.pattern: re.Pattern[str] | None = None
        self.keys: dict[str, str] = {}  # each key read, and its label

    def add(self, value: str) -> None:
        if len(value) < MIN_KNOWN_LENGTH or value in self.labels:
            return
        shape = _SECRET.fullmatch(value)
        label = f"[REDACTED:{shape.lastgroup if shape else 'key'}]"
        # as an API may echo it: whole, URL-encoded (a query string, a Location header)
        for form in {value, quote(value, safe=""), quote_plus(value)}:
            self.labels[form] = label
        longest_first = sorted(self.labels, key=len, reverse=True)
        self.pattern = re.compile("|".join(re.escape(v) for v in longest_first))
        self.keys[value] = label

    def mask(self, text: str) -> str:
        if self.pattern is None:
            return text
        text = self.pattern.sub(lambda match: self.labels[match.group(0)], text)
        for key, label in self.keys.items():  # a message cut short inside the key
            text = _mask_prefixes(text, key, label)
        return text


def _mask_prefixes(text: str, key: str, label: str) -> str:
    """Each prefix of `key` of at least half of it (and 12 characters) in `text` as `label`:
    what an API that shortens what it echoes shows of a key. Found, then extended character by
    character (a regex of nested optional groups recursed once a character, past a limit that
    a 1,000-character token reaches)."""
    shortest = min(len(key), max(12, len(key) // 2))
    head = key[:shortest]
    parts: list[str] = []
    start = 0
    while (found := text.find(head, start)) >= 0:
        end = found + shortest
        while end < len(text) and end - found < len(key) and text[end] == key[end - found]:
            end += 1
        parts += [text[start:found], label]
        start = end
    return "".join(parts) + text[start:] if parts else text


MIN_KNOWN_LENGTH = 8  # a shorter "key" would mask ordinary words in messages
_known = _KnownSecrets()


def remember_secret(value: str) -> None:
    """From now on `redact` masks `value` too (keys are remembered as they are read)."""
    _known.add(value)


def redact(text: str) -> str:
    """Each secret replaced by `[REDACTED:<kind>]`; used on every message shown to a user."""
    return _SECRET.sub(_replacement, _known.mask(text))


def _replacement(match: re.Match[str]) -> str:
    kind = match.lastgroup or "secret"
    if kind == "bearer":
        return f"{match.group(0).split()[0]} [REDACTED:bearer]"
    if kind == "url_password":
        return f"{match.group(0).split(':', 1)[0]}:[REDACTED:url_password]"
    return f"[REDACTED:{kind}]"
