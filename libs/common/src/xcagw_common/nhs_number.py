"""NHS number validation (Modulus 11): one implementation for every service and the sandbox."""

from __future__ import annotations

# NHS Data Dictionary "NHS NUMBER" / nhs-apis.md §1.8: weights 10..2 over digits 1-9.
_WEIGHTS = range(10, 1, -1)


def normalise_nhs_number(value: str) -> str | None:
    """The 10-digit NHS number with spaces removed, or None when it is not a valid one.

    Valid means exactly 10 ASCII digits after removing spaces and a correct Modulus 11 check
    digit: c = 11 - (sum of digit * weight) mod 11, 11 -> 0, and 10 is never valid.
    """
    digits = value.replace(" ", "")
    if len(digits) != 10 or not digits.isascii() or not digits.isdigit():
        return None
    total = sum(int(d) * w for d, w in zip(digits[:9], _WEIGHTS, strict=True))
    check = 11 - (total % 11)
    if check == 11:
        check = 0
    if check == 10 or check != int(digits[9]):
        return None
    return digits


def is_valid_nhs_number(value: str) -> bool:
    """True when `value` is a valid NHS number (spaces allowed)."""
    return normalise_nhs_number(value) is not None
