"""Card numbers never enter the log: the one guard, for every text an event carries.

A full card number (PAN) is "a run of 12-19 digits, with nothing but non-letters
between them, that passes the Luhn check" (15-19 in identifiers: SKUs, receipts, shift
ids): `4111 1111 1111 1111`, `4111.1111.1111.1111`, `4111/1111/1111/1111`, with double
spaces, no-break spaces or zero-width characters between the groups. The API's models
refuse such text (422, never echoed), and every event body is checked on decode, so an
event from the network with a card number in any text field is refused like any
invalid event, wherever it was written.

Text fields also refuse control characters (NUL, escape sequences): nothing a till,
a report or a terminal should ever be handed.

    >>> contains_card_number("receipt 4111\u00a01111\u00a01111\u00a01111")
    True
    >>> contains_card_number("SKU-4111111111111111")   # in a SKU too
    True
    >>> contains_card_number("s1-t1-000123")   # a letter ends a run: 6 digits here
    False
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "contains_card_number",
    "control_character",
    "could_hold_either",
    "luhn_ok",
    "safe_to_show",
]

MIN_PAN_DIGITS = 12
MAX_PAN_DIGITS = 19
# Identifiers (SKUs, receipts, shift ids) often are long numbers: EAN-13 and GTIN-14
# barcodes, numeric store and till names in generated receipts. Card numbers in use are
# 15-19 digits; a shorter run in an identifier is taken for what it says it is.
MIN_PAN_DIGITS_IN_IDS = 15


# Fast necessary conditions (C speed: this runs on every text of every event decoded):
# 12 digits with no ASCII letter between them. Non-ASCII letters are left to the exact
# check, so the prefilters never miss a number the exact check would find.
# `_runs` counts what `str.isdigit` does: `\d` (decimal digits) and these 128 more
# (superscripts, circled and parenthesised digits, ...: `⁴¹¹¹ ¹¹¹¹ ¹¹¹¹ ¹¹¹¹`), all the
# characters that are digits but not decimal (tests/core/test_pan_screen.py lists them).
OTHER_DIGITS = (
    "\u00b2-\u00b3\u00b9\u1369-\u1371\u19da\u2070\u2074-\u2079\u2080-\u2089"
    "\u2460-\u2468\u2474-\u247c\u2488-\u2490\u24ea\u24f5-\u24fd\u24ff\u2776-\u277e"
    "\u2780-\u2788\u278a-\u2792\U00010a40-\U00010a43\U00010e60-\U00010e68"
    "\U00011052-\U0001105a\U0001f100-\U0001f10a"
)
_DIGIT = f"[\\d{OTHER_DIGITS}]"
_MAYBE = re.compile(f"(?:{_DIGIT}[^\\d{OTHER_DIGITS}A-Za-z]*){{12}}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode category Cc, exactly
# Both prefilters in one pass over all of an event's texts joined by a letter (which
# ends a digit run, so no run spans two texts): what matches in one text matches in the
# join, so a join with no match needs no per-text check (~6 µs of a sale's ~8 to decode).
_EITHER = re.compile(f"{_MAYBE.pattern}|{_CONTROL.pattern}")
_JOIN = "Z"


def contains_card_number(text: str, *, identifier: bool = False) -> bool:
    """Whether a whole digit run of `text` (separators allowed) is 12-19 digits long
    (15-19 in an `identifier`) and passes Luhn."""
    if len(text) < MIN_PAN_DIGITS or _MAYBE.search(text) is None:
        return False
    shortest = MIN_PAN_DIGITS_IN_IDS if identifier else MIN_PAN_DIGITS
    return any(shortest <= len(run) <= MAX_PAN_DIGITS and luhn_ok(run) for run in _runs(text))


def could_hold_either(texts: list[str]) -> bool:
    """False when no text of `texts` can hold a card number or a control character (one
    regex pass over them all); True means: check each text exactly."""
    joined = _JOIN.join(texts)
    if joined.isascii() and joined.isprintable():  # C speed, and the common case
        # the regex alone: counting the digits first (ten passes) cost more than it saved
        return len(joined) >= MIN_PAN_DIGITS and _MAYBE.search(joined) is not None
    return _EITHER.search(joined) is not None


def _might_hide_one(run: str) -> bool:
    """Any 12-19 digit stretch of a run passing Luhn: `t1:4111 ...` glues the till's 1 to
    the number. Too eager to refuse input with (it would hit 1 in 4 EAN-13 codes), right
    for deciding what never to repeat in an answer or a log line."""
    for length in range(MIN_PAN_DIGITS, min(len(run), MAX_PAN_DIGITS) + 1):
        for start in range(len(run) - length + 1):
            if luhn_ok(run[start : start + length]):
                return True
    return False


def _runs(text: str) -> list[str]:
    """Maximal digit runs, as digit strings; anything but a letter continues a run
    (spaces, dots, slashes, NBSP, zero-width characters), a letter ends it."""
    runs: list[str] = []
    current: list[str] = []
    for ch in text:
        if ch.isdigit():
            current.append(str(unicodedata.digit(ch, 0)))
        elif ch.isalpha() and current:
            runs.append("".join(current))
            current = []
    if current:
        runs.append("".join(current))
    return runs


def safe_to_show(text: str, limit: int = 80) -> str:
    """`text` fit to echo in an answer or a log line: as it is, unless it holds a card
    number or a control character, then a placeholder (never the text)."""
    if any(_might_hide_one(run) for run in _runs(text)) or control_character(text) is not None:
        return "<withheld: it may hold card data>"
    return text if len(text) <= limit else text[:limit] + "..."


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def control_character(text: str) -> str | None:
    """The first control or format character that is no use in a text field, if any
    (zero-width characters are format characters: harmless here, they only separate)."""
    found = _CONTROL.search(text)
    return None if found is None else f"U+{ord(found.group()):04X}"
