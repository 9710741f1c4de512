"""Python ``re.search`` patterns translated to DuckDB's RE2, keeping Python's meaning.

Great Expectations' pandas engine matches regexes with ``Series.str.contains`` (Python
``re.search``). DuckDB's ``regexp_matches`` is also a search, but RE2 reads a few escapes
differently: ``\\d``/``\\w``/``\\s`` are ASCII-only in RE2 and Unicode-aware in Python, and
Python's ``$`` also matches before a trailing newline. We rewrite those so the two engines
agree, and give up (return ``None``) on what RE2 cannot do the same way: lookarounds,
back-references, ``\\b``, and flags other than ``i`` and ``s``.

>>> to_re2(r"^\\d+$")
'^\\\\p{Nd}+(?:\\\\n?\\\\z)'
"""

from __future__ import annotations

# Every code point Python's ``\s`` matches on str patterns (checked exhaustively in the tests).
_PY_SPACE = (
    r"\t\n\x0b\x0c\r\x1c-\x1f \x{85}\x{a0}\x{1680}\x{2000}-\x{200a}"
    r"\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"
)
# Python's ``\w``: str.isalnum() or "_"; Unicode letters and numbers.
_PY_WORD = r"\p{L}\p{N}_"
_PY_DIGIT = r"\p{Nd}"

_UNSUPPORTED_GROUPS = ("(?=", "(?!", "(?<=", "(?<!", "(?#", "(?>", "(?P=", "(?(")


def to_re2(pattern: str) -> str | None:
    """Return an RE2 pattern that searches like Python's ``re.search(pattern)``, or None.

    >>> to_re2(r"(?<=a)b") is None
    True
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    class_start = -1
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= n:
                return None
            nxt = pattern[i + 1]
            i += 2
            if nxt == "d":
                out.append(_PY_DIGIT)
            elif nxt == "D":
                if in_class:
                    return None
                out.append(r"\P{Nd}")
            elif nxt == "w":
                out.append(_PY_WORD if in_class else f"[{_PY_WORD}]")
            elif nxt == "W":
                if in_class:
                    return None
                out.append(f"[^{_PY_WORD}]")
            elif nxt == "s":
                out.append(_PY_SPACE if in_class else f"[{_PY_SPACE}]")
            elif nxt == "S":
                if in_class:
                    return None
                out.append(f"[^{_PY_SPACE}]")
            elif nxt in "bBG" or nxt.isdigit() and nxt != "0" or nxt == "N":
                return None  # word boundaries (ASCII in RE2), back-references, named chars
            elif nxt == "Z":
                out.append(r"\z")
            elif nxt in "uU":
                width = 4 if nxt == "u" else 8
                hexdigits = pattern[i : i + width]
                if len(hexdigits) != width:
                    return None
                out.append(r"\x{" + hexdigits + "}")
                i += width
            else:
                out.append("\\" + nxt)
            continue
        if in_class:
            # a "]" right after "[" or "[^" is a literal in Python
            if ch == "]" and i > class_start:
                in_class = False
            elif ch == "[" and pattern[i + 1 : i + 2] == ":":
                return None  # Python has no POSIX classes; RE2 would read one
            out.append(ch)
            i += 1
            continue
        if ch == "[":
            in_class = True
            j = i + 1
            if pattern[j : j + 1] == "^":
                j += 1
            class_start = j  # a "]" at this position is a literal
            out.append(pattern[i:j])
            i = j
            continue
        if ch == "(" and pattern[i + 1 : i + 2] == "?":
            if pattern.startswith(_UNSUPPORTED_GROUPS, i):
                return None
            if not pattern.startswith(("(?:", "(?P<"), i):
                # inline flags: only i and s mean the same in both engines
                j = i + 2
                while j < n and pattern[j] not in ":)":
                    if pattern[j] not in "is-":
                        return None
                    j += 1
        if ch == "{" and pattern[i + 1 : i + 2] == ",":
            return None  # Python reads {,n} as a quantifier, RE2 as literal text
        if ch == "$":
            out.append(r"(?:\n?\z)")  # Python's $ also matches before a final newline
            i += 1
            continue
        if ch in "*+?}" and pattern[i + 1 : i + 2] == "+":
            return None  # possessive quantifiers
        out.append(ch)
        i += 1
    if in_class:
        return None
    return "".join(out)
