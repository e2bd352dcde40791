"""NHS number check (Modulus 11), as PDS and GP Connect apply it."""

from __future__ import annotations


def is_valid_nhs_number(value: str) -> bool:
    """True when `value` is 10 digits (spaces ignored) with a correct Modulus 11 check digit.

    NHS Data Dictionary "NHS NUMBER": weights 10..2 over digits 1-9; 11 - (sum mod 11); 11 -> 0;
    10 means the number can never be valid.
    """
    digits = value.replace(" ", "")
    if len(digits) != 10 or not digits.isascii() or not digits.isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(digits[:9], range(10, 1, -1), strict=True))
    check = 11 - (total % 11)
    if check == 11:
        check = 0
    return check != 10 and check == int(digits[9])
