"""Text files in whatever encoding they came in: UTF-8 is read in place, anything else from a UTF-8 copy.

Korean data often arrives in cp949 / EUC-KR (Excel, legacy exports) or UTF-16 (Excel's "Unicode text").
`datasets` reads files as UTF-8 only, so such a file is decoded once into a UTF-8 copy in a temporary
folder of this process; the user's file is never written.
"""

from __future__ import annotations

import atexit
import codecs
import shutil
import tempfile
from pathlib import Path

from user_errors import ConfigError

_CHUNK = 1 << 20
_BOMS = ((codecs.BOM_UTF8, "utf_8_sig"), (codecs.BOM_UTF32_LE, "utf_32"), (codecs.BOM_UTF32_BE, "utf_32"),
         (codecs.BOM_UTF16_LE, "utf_16"), (codecs.BOM_UTF16_BE, "utf_16"))
_copies: dict[Path, tuple[Path, str]] = {}
"""The UTF-8 copy made of each file in this process, and the note saying how it was read."""
_folder: Path | None = None


def _is_plain_utf8(path: Path) -> bool:
    """UTF-8 without a BOM and without NUL bytes (which mean UTF-16 without a BOM)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as handle:
        first = True
        while chunk := handle.read(_CHUNK):
            if (first and chunk.startswith(codecs.BOM_UTF8)) or b"\0" in chunk:
                return False
            first = False
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError:
                return False
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _mostly_hangul(text: str) -> bool:
    wide = [c for c in text if ord(c) > 127]
    return bool(wide) and sum("\uac00" <= c <= "\ud7a3" for c in wide) >= 0.6 * len(wide)


def detect_encoding(data: bytes) -> str | None:
    """The encoding of text that is not plain UTF-8, or None when no encoding fits."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            return name
    if b"\0" not in data:
        # A short Korean text can look like Big5 to a statistical detector: cp949 that decodes to
        # Hangul is taken first, as Korean data is what this tool mostly reads.
        try:
            if _mostly_hangul(data.decode("cp949")):
                return "cp949"
        except UnicodeDecodeError:
            pass
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    return best.encoding if best is not None else None


def readable_text(path: Path, notes: list[str]) -> Path:
    """`path` itself when it is UTF-8, else a UTF-8 copy of it; a note says which encoding was read."""
    if _is_plain_utf8(path):
        return path
    key = path.resolve()
    stat = path.stat()
    if key in _copies and _copies[key][0].stat().st_mtime >= stat.st_mtime:  # the check read it already
        copy, note = _copies[key]
        notes.append(note)
        return copy
    data = path.read_bytes()
    encoding = detect_encoding(data)
    if encoding is None:
        raise ConfigError(f"--data-path {path}: not UTF-8, and no text encoding fits it (is it a text file?); "
                          "save it as UTF-8")
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--data-path {path}: looks like {encoding} but byte {exc.start} does not decode; "
                          "save it as UTF-8") from None
    copy = _copy_folder() / f"{len(_copies)}{path.suffix}"
    copy.write_text(text, encoding="utf-8")
    note = f"--data-path {path}: not UTF-8, read as {encoding} (detected); the file itself is left as it is"
    _copies[key] = (copy, note)
    notes.append(note)
    return copy


def _copy_folder() -> Path:
    global _folder
    if _folder is None:
        _folder = Path(tempfile.mkdtemp(prefix="autoevol-utf8-"))
        atexit.register(shutil.rmtree, _folder, True)
    return _folder
