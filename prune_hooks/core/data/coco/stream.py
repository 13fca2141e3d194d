"""A COCO file read as a stream of top-level members, its ``images`` and ``annotations`` entry by entry
(a COCO-size file is never held whole), and slices of it read back by position."""

from __future__ import annotations

import contextlib
import json
import re
from array import array
from typing import Any, Iterator

import numpy as np

from ...errors import PruneHooksError
from ...io import no_gc, open_text

__all__ = ["JsonObjectStream", "file_members", "file_slices"]


_BLANK = re.compile(r"[ \t\n\r]*")  # JSON's whitespace


class JsonObjectStream:
    """The members of a file holding one JSON object, read in windows: the members named in ``arrays``
    element by element, every other member whole. A COCO file's ``images`` and ``annotations`` are
    never held as one parsed list (a parsed annotation costs ~1 KB of Python objects: 8.6 M of them
    would not fit a 24 GB machine)."""

    WINDOW = 1 << 22  # characters read at a time
    MARGIN = 1 << 12  # an element ending closer than this to the window's end may be cut: the general path

    def __init__(self, f: Any, src: str) -> None:
        self.f, self.src = f, src
        self.buf, self.pos, self.eof = "", 0, False
        self.base = 0  # the file position (in characters) of buf[0]
        self.decode = json.JSONDecoder().raw_decode

    def _more(self) -> bool:
        if self.eof:
            return False
        chunk = self.f.read(max(self.WINDOW, len(self.buf) - self.pos))  # grows for one long value
        if not chunk:
            self.eof = True
            return False
        self.base += self.pos
        self.buf, self.pos = self.buf[self.pos :] + chunk, 0
        return True

    def _peek(self) -> str:
        """The next non-blank character, '' at the end of the file."""
        while True:
            self.pos = _BLANK.match(self.buf, self.pos).end()
            if self.pos < len(self.buf) or not self._more():
                return self.buf[self.pos : self.pos + 1]

    def _expect(self, chars: str) -> str:
        ch = self._peek()
        if not ch or ch not in chars:
            raise json.JSONDecodeError(f"expected one of {chars!r}", self.buf, self.pos)
        self.pos += 1
        return ch

    def _value(self) -> Any:
        self._peek()
        while True:
            try:
                value, end = self.decode(self.buf, self.pos)
            except json.JSONDecodeError:
                if self._more():
                    continue  # the value runs past the window
                raise
            if end > len(self.buf) - 64 and self._more():
                continue  # a number cut by the window ("1." of "1.5") decodes: read on and decode again
            self.pos = end
            return value

    def members(self, arrays: tuple[str, ...], spans: dict[str, array] | None = None) -> Iterator[tuple[str, Any]]:
        """(key, value) in file order; for a key of ``arrays`` whose value is a list, value is an
        iterator over its elements, valid until the next member is asked for. With ``spans``, each
        element's [start, end) file position (characters) is appended to ``spans[key]``."""
        if self._peek() != "{":
            value = self._value()  # not an object: whatever it is, report its type
            raise PruneHooksError(
                f"{self.src}: not a COCO file: top level must be an object, got {type(value).__name__}"
            )
        self.pos += 1
        if self._peek() == "}":
            self.pos += 1
        else:
            while True:
                key = self._value()
                if not isinstance(key, str):
                    raise json.JSONDecodeError("expected a member name", self.buf, self.pos)
                self._expect(":")
                if key in arrays and self._peek() == "[":
                    self.pos += 1
                    elements = self._elements(None if spans is None else spans.setdefault(key, array("q")))
                    yield key, elements
                    for _ in elements:  # what the caller left unread
                        pass
                else:
                    yield key, self._value()
                if self._expect(",}") == "}":
                    break
        if self._peek():
            raise json.JSONDecodeError("extra data after the object", self.buf, self.pos)

    def _elements(self, spans: array | None) -> Iterator[Any]:
        if self._peek() == "]":
            self.pos += 1
            return
        decode, blank = self.decode, _BLANK.match
        while True:
            # Fast path: elements that end well inside the window, with no per-element method calls
            # (~1 M elements in a COCO file). Anything else — an element near or across the window's end,
            # bad JSON — goes through the general path from the element's start.
            buf, pos, done = self.buf, self.pos, False
            limit = len(buf) - self.MARGIN
            window_spans: list[int] = []  # in this window; ~3x faster than appending file positions to spans
            record = window_spans.append
            while pos < limit:
                start = blank(buf, pos).end()
                try:
                    value, stop = decode(buf, start)
                except json.JSONDecodeError:
                    break
                end = blank(buf, stop).end()
                if end >= limit:
                    break
                sep = buf[end]
                if sep != "," and sep != "]":
                    break
                record(start)
                record(stop)
                self.pos = pos = end + 1
                yield value
                if sep == "]":
                    done = True
                    break
            if spans is not None and window_spans:
                spans.frombytes((np.array(window_spans, np.int64) + self.base).tobytes())
            if done:
                return
            self._peek()
            start = self.base + self.pos
            value = self._value()
            if spans is not None:
                spans.extend((start, self.base + self.pos))
            yield value
            if self._expect(",]") == "]":
                return


@contextlib.contextmanager
def file_members(path: str, spans: dict[str, array] | None = None) -> Iterator[Iterator[tuple[str, Any]]]:
    """The top-level members of the annotation file ``path``, ``images`` and ``annotations`` element by
    element (``JsonObjectStream.members``); bad JSON is one PruneHooksError naming the file."""
    with open_text(path, "annotation file") as f, no_gc():
        try:
            yield JsonObjectStream(f, path).members(("images", "annotations"), spans)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise PruneHooksError(f"annotation file {path} is not valid JSON: {e}") from None


def file_slices(f: Any, src: str, spans: list[list[int]]) -> Iterator[str]:
    """The text of each [start, end) of the open text file ``f``; ``spans`` ascending, not overlapping."""
    buf, base, window = "", 0, JsonObjectStream.WINDOW
    for start, end in spans:
        while end > base + len(buf):
            chunk = f.read(max(window, len(buf)))
            if not chunk:
                raise PruneHooksError(f"annotation file {src} ended early: it changed while it was read")
            cut = min(start - base, len(buf))
            buf, base = buf[cut:] + chunk, base + cut
        yield buf[start - base : end - base]
