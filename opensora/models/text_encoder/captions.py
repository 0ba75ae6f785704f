"""Caption cleaning applied to prompts before T5 tokenisation, the kind the Open-Sora releases used.

Web captions carry URLs, markup, shop boilerplate, file names and ids that a text encoder should
not spend tokens on. The steps below strip them; like the release, the whole pass runs twice,
because removing one piece (a tag, a URL) can expose another (stray punctuation, spaces).
"""

from __future__ import annotations

import html
import re
import urllib.parse

# Every dash-like code point becomes "-", every curly or angled quote a straight one.
_DASHES = "\u00ad\u058a\u05be\u1400\u1806\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u2e17\u2e1a\u2e3a\u2e3b"
_DASHES += "\u301c\u3030\u30a0\ufe31\ufe32\ufe58\ufe63\uff0d"
_DOUBLE_QUOTES = "\u201c\u201d\u201e\u201f\u00ab\u00bb\u2033\u301d\u301e\uff02"
_SINGLE_QUOTES = "\u2018\u2019\u201a\u201b\u2032\u0060\u00b4"
_PUNCTUATION_MAP = str.maketrans({**dict.fromkeys(_DASHES, "-"), **dict.fromkeys(_DOUBLE_QUOTES, '"')})
_PUNCTUATION_MAP.update(str.maketrans(dict.fromkeys(_SINGLE_QUOTES, "'")))

# CJK strokes, enclosed letters, compatibility blocks, extension A, hexagrams and unified ideographs.
_CJK = "\u31c0-\u31ef\u31f0-\u31ff\u3200-\u32ff\u3300-\u33ff\u3400-\u4dbf\u4dc0-\u4dff\u4e00-\u9fff"
_FILE_TYPES = "png|jpe?g|gif|bmp|webp|svg|tiff?|eps|pdf|apk|mp4|mov|avi|mkv|webm"
_TOP_DOMAINS = "com|net|org|edu|gov|io|co|ru|uk|de|it"
_JUNK_SYMBOLS = r"[#®•©™&@·º½¾¿¡§~()\[\]{}|\\/*]"

# (pattern, replacement), applied in order to lowercased text.
_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"<person>"), "person"),
    (re.compile(r"\b(?:https?://|ftp://|www\.)\S+"), " "),
    (re.compile(rf"\b[\w.-]+\.(?:{_TOP_DOMAINS})(?:/\S*)?\b"), " "),
    (re.compile(r"<[^<>]{0,200}>"), " "),
    (re.compile(r"@[\w.-]+"), " "),
    (re.compile(f"[{_CJK}]+"), ""),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"), " "),
    (re.compile(r"\\n"), " "),
    (re.compile(rf"\S+\.(?:{_FILE_TYPES})\b"), " "),
    (re.compile(r"#\d+\b"), " "),
    (re.compile(r"\b\d{6,}\b"), " "),
    (re.compile(r"\b\d+(?:\.\d+)?\s*[x×х]\s*\d+(?:\.\d+)?\b"), " "),
    (re.compile(r"\b[a-z]{1,3}\d{3,15}\b"), " "),
    (re.compile(r"\b\d*[a-z]+\d+[a-z]+\d+\w*\b"), " "),
    (re.compile(r"\bfree\s+shipping\b|\bclick\s+here\b|\bpage\s+\d+\b"), " "),
    (re.compile(r"\b\d{1,2}:\d{2}\s*$"), " "),
    (re.compile(_JUNK_SYMBOLS), " "),
    (re.compile(r'"{2,}'), '"'),
    (re.compile(r"'{2,}"), "'"),
    (re.compile(r"\.{2,}"), "."),
    (re.compile(r"([!?,;:\-])\1+"), r"\1"),
    (re.compile(r"\s+([.,!?;:])"), r"\1"),
    (re.compile(r"\s+"), " "),
]
_GLUE = re.compile(r"[-_]")
_QUOTED = re.compile(r"""^(["'])(.+)\1$""")
_LEADING_JUNK = re.compile(r"^[\s'_,\-:;.]+")
_TRAILING_JUNK = re.compile(r"[\s'_,\-:;+]+$")
_DOTTED_WORD = re.compile(r"^\.\S+$")


def clean_caption(text: str) -> str:
    """A caption without URLs, markup, mentions, CJK, ids, file names and stray punctuation; lowercased."""
    return _clean_once(_clean_once(text))


def _clean_once(text: str) -> str:
    text = urllib.parse.unquote_plus(str(text))
    # Twice: scraped captions are often escaped twice ("&amp;quot;").
    text = html.unescape(html.unescape(text)).strip().lower()
    text = text.translate(_PUNCTUATION_MAP)
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    if len(_GLUE.findall(text)) > 3:
        # Slugs such as "red-car-at-night_hd" read better as words.
        text = _GLUE.sub(" ", text)
    return _trim(text)


def _trim(text: str) -> str:
    text = " ".join(text.split())
    text = _QUOTED.sub(r"\2", text)
    text = _LEADING_JUNK.sub("", text)
    text = _TRAILING_JUNK.sub("", text)
    return _DOTTED_WORD.sub("", text).strip()
