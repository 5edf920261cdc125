"""Text from outside shown as plain text in Streamlit elements that render Markdown.

``st.warning``, ``st.error``, ``st.info``, ``st.success``, ``st.caption``, ``st.markdown``,
``st.title``, ``st.toast`` and widget labels render Markdown (links, images, LaTeX, ``:red[…]``
colours, emoji shortcodes) with no plain-text option. A REST reply body, a WebSocket error, a file's
contents, a dataset or file name, an alert rule's text or any exception message that quotes them
goes through :func:`plain` first: ``st.warning(f"History not loaded: {plain(error)}")``. Then a body
such as ``![x](http://host/pixel.png) [click](…)`` is shown as those characters, and no viewer's
browser fetches or links anything.
"""

from __future__ import annotations

import re

# Every ASCII punctuation character: CommonMark lets each be escaped with a backslash, which shows
# it literally and stops it from opening any construct (links, images, emphasis, code, HTML, math
# with '$', directives such as ':red[…]', shortcodes such as ':smile:', headings, lists, tables).
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
# GitHub-style autolinks ('http://…', 'www.…', 'a@b.example') are found in the text after
# escapes are undone, so escaping cannot stop them: an invisible WORD JOINER breaks the pattern.
_WORD_JOINER = "\u2060"
_AUTOLINK = re.compile(r"(?i)(?<=:)|(?=@)|(?<=\bwww)(?=\.)")
_WHITESPACE = re.compile(r"\s+")


def plain(text: object) -> str:
    """``text`` (any object: its ``str``) escaped so Streamlit's Markdown shows it literally, on one line.

    Runs of whitespace (newlines included: they could start a heading, list or code block) become
    one space; every ASCII punctuation character is backslash-escaped; a WORD JOINER (U+2060,
    invisible) is put after each ``:``, before each ``@`` and after a ``www`` that precedes a
    dot, so no autolink forms. Only for text inside Markdown: do not pass it to ``st.text``,
    ``st.code`` or a dataframe, which show the backslashes.
    """
    flat = _WHITESPACE.sub(" ", str(text).replace(_WORD_JOINER, "")).strip()
    return _PUNCTUATION.sub(r"\\\1", _AUTOLINK.sub(_WORD_JOINER, flat))


def unescaped(shown: str) -> str:
    """What a viewer reads for ``shown`` (a :func:`plain` result): backslashes and word joiners removed.

    For tests and for checking a message: ``unescaped(plain(s)) == " ".join(s.split())`` (for an
    ``s`` holding no word joiner: :func:`plain` drops those it is given).
    """
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", shown).replace(_WORD_JOINER, "")
