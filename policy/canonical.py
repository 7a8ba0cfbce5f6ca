"""RFC 8785 JSON Canonicalization Scheme (JCS) for the values a memorandum holds.

``canonical_json(value)`` gives the one byte string that is signed and hashed.
Any two programs that follow RFC 8785 produce the same bytes for the same JSON
value, whatever the key order or whitespace of the text they read it from:

* no whitespace between tokens;
* object members sorted by their names compared as UTF-16 code units
  (RFC 8785 §3.2.3), which is not Python's ``str`` order: U+1F600 (surrogates
  D83D DE00) sorts *before* U+FB33, although its code point is larger;
* strings escaped as ECMAScript ``JSON.stringify`` does (RFC 8785 §3.2.2.2):
  ``\\b \\t \\n \\f \\r \\" \\\\``, other characters below U+0020 as ``\\u00xx``
  (lowercase hex), everything else, ``/`` and non-ASCII included, as literal UTF-8;
* the output is UTF-8.

Only the JSON values a memorandum holds are accepted: ``dict`` (``str`` keys),
``list``, ``str``, ``int``, ``bool`` and ``None``. Everything else is refused
with :class:`CanonicalizationError` naming where it is (``$.rules[0].quota``):

* floats, NaN and infinities included: our documents have none, and refusing
  them spares us ECMAScript's number formatting (RFC 8785 §3.2.2.3);
* integers beyond ±(2**53 − 1): I-JSON (RFC 7493) numbers are IEEE 754
  doubles, in which larger integers are not all exact;
* strings with lone surrogates (not Unicode, so not I-JSON), tuples, sets,
  bytes, dates and any other Python object.

Strings are kept exactly as given: no Unicode normalization (RFC 8785 §3.1).
"""

from __future__ import annotations

from creditexchange.errors import CanonicalizationError

__all__ = ["MAX_SAFE_INTEGER", "CanonicalizationError", "canonical_json"]

MAX_SAFE_INTEGER = 2**53 - 1
"""The largest integer I-JSON carries exactly (ECMAScript ``Number.MAX_SAFE_INTEGER``)."""

_ESCAPES: dict[int, str] = {code: f"\\u{code:04x}" for code in range(0x20)}
_ESCAPES.update(
    {
        ord("\b"): "\\b",
        ord("\t"): "\\t",
        ord("\n"): "\\n",
        ord("\f"): "\\f",
        ord("\r"): "\\r",
        ord('"'): '\\"',
        ord("\\"): "\\\\",
    }
)


def canonical_json(value: object) -> bytes:
    """Return the RFC 8785 canonical form of ``value`` as UTF-8 bytes.

    Raises :class:`CanonicalizationError` for anything that is not a JSON value
    of the kinds listed in the module docstring.
    """
    parts: list[str] = []
    _write(value, parts, "$")
    return "".join(parts).encode("utf-8")


def _quote(text: str, where: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalizationError(
            f"{where}: string has a lone surrogate {text[exc.start]!r} at index {exc.start}; "
            "I-JSON strings must be valid Unicode"
        ) from None
    return '"' + text.translate(_ESCAPES) + '"'


def _utf16_order(key: str, where: str) -> bytes:
    """Big-endian UTF-16 bytes compare exactly as the sequences of 16-bit code units."""
    try:
        return key.encode("utf-16-be")
    except UnicodeEncodeError as exc:
        raise CanonicalizationError(
            f"{where}: object key has a lone surrogate {key[exc.start]!r} at index {exc.start}; "
            "I-JSON strings must be valid Unicode"
        ) from None


def _write(value: object, parts: list[str], where: str) -> None:
    # bool before int: True and False are ints in Python.
    if value is None:
        parts.append("null")
    elif value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    elif isinstance(value, str):
        parts.append(_quote(value, where))
    elif isinstance(value, int):
        number = int(value)
        if not -MAX_SAFE_INTEGER <= number <= MAX_SAFE_INTEGER:
            raise CanonicalizationError(
                f"{where}: integer {number} is outside ±(2**53 − 1), "
                "so it is not exactly representable in I-JSON"
            )
        parts.append(str(number))
    elif isinstance(value, float):
        raise CanonicalizationError(
            f"{where}: {value!r} is a float; floats (NaN and infinities included) are refused "
            "because memoranda carry none — write the number as an integer or a string"
        )
    elif isinstance(value, dict):
        members: list[tuple[bytes, str, object]] = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalizationError(
                    f"{where}: object key {key!r} is a {type(key).__name__}, not a string"
                )
            members.append((_utf16_order(key, where), key, item))
        members.sort(key=lambda member: member[0])
        parts.append("{")
        for i, (_, key, item) in enumerate(members):
            if i:
                parts.append(",")
            parts.append(_quote(key, where))
            parts.append(":")
            _write(item, parts, f"{where}.{key}")
        parts.append("}")
    elif isinstance(value, list):
        parts.append("[")
        for i, item in enumerate(value):
            if i:
                parts.append(",")
            _write(item, parts, f"{where}[{i}]")
        parts.append("]")
    else:
        raise CanonicalizationError(
            f"{where}: a {type(value).__name__} is not a JSON value "
            "(only dict, list, str, int, bool and None are)"
        )
