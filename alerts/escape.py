"""Text from outside made inert in robot messages: it is shown, never acted on.

Every value put into a WeCom or DingTalk message — a device's event `detail`, names of
institutions and auto-registered devices, zones, rooms, people's notes — passes through
`inert`. Markdown control characters and `@` become their full-width forms (`＊ ＿ ＃ ［ ］ （ ）
｀ ＞ ＜ ＠`), which both robots show as text and never parse; line breaks, control and
invisible format characters (bidi overrides, zero-width joiners) become one space or go, so a
value stays on its line, after our label, where no heading, quote or list can start (so `-`,
`+` and `=` of device ids stay as they are); `://` is broken so
that no link is made of it; and the value is cut to a length. Full-width forms rather than
backslashes: neither robot documents backslash escapes, and a reader of Chinese text reads the
full-width forms as what they are.
"""

from __future__ import annotations

import unicodedata

MAX_CHARS = 120  # one line of a phone screen, twice; a device's detail is 500 at most

_FULL_WIDTH = str.maketrans(
    {
        "*": "＊",
        "_": "＿",
        "#": "＃",
        "[": "［",
        "]": "］",
        "(": "（",
        ")": "）",
        "`": "｀",
        ">": "＞",
        "<": "＜",
        "@": "＠",
        "~": "～",
        "|": "｜",
        "!": "！",
        "&": "＆",
        "\\": "＼",
        "「": "『",  # our own quotes stay ours
        "」": "』",
    }
)
_DROPPED = frozenset({"Cf", "Cs", "Co", "Cn"})  # format (bidi, zero-width), surrogates, unassigned
_SPACED = frozenset({"Cc", "Zl", "Zp"})  # control characters and line or paragraph separators


def inert(value: object, limit: int = MAX_CHARS) -> str:
    """The value as one line of plain text that no robot formats or mentions with."""
    text = "".join(
        " " if unicodedata.category(c) in _SPACED else c
        for c in str(value)
        if unicodedata.category(c) not in _DROPPED
    )
    text = " ".join(text.split()).translate(_FULL_WIDTH).replace("://", "：//")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def quoted(value: object, limit: int = MAX_CHARS) -> str:
    """Inert text in corner brackets: visibly someone else's words."""
    return f"「{inert(value, limit)}」"
