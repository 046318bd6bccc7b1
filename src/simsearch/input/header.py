"""The size an image's header declares, read the way OpenCV's decoder for that format reads it.

OpenCV allocates the whole image from the header before it decodes a byte of pixel data, and its own
ceiling (OPENCV_IO_MAX_IMAGE_PIXELS) is read once per process, so the pixel limit is checked here
first. `image_format` picks the decoder OpenCV would pick (its signature checks, in its order); each
reader follows that decoder's header parsing, quirks included (Radiance's 128-byte line buffer, the
byte PxM's number reader swallows), because a reader that disagrees with the decoder could be shown a
small size while OpenCV allocates a large one. A format OpenCV decodes that is not listed here has no
reader, and is refused rather than decoded unchecked.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from collections.abc import Callable

Size = tuple[int, int]  # (width, height)

_WHITESPACE = b" \t\n\v\f\r"  # C's isspace
_DIGITS = b"0123456789"
# Bounds on the work a header may ask for (each read is plain Python): a text header longer than this,
# or more segments or boxes than this before the size, is refused as unreadable. Real headers are far
# smaller; without them a file of 100 MB of comment lines or padding would hold a worker for seconds.
_TEXT_HEADER = 64 << 10
_MAX_SEGMENTS = 10_000
_LINE_END = re.compile(rb"[\n\r]")
_NOT_FF = re.compile(rb"[^\xff]")


def _line_end(raw: bytes, pos: int) -> int:
    """The position of the next \\n or \\r from `pos`; -1 when there is none."""
    found = _LINE_END.search(raw, pos)
    return found.start() if found else -1


def _bmp(raw: bytes) -> Size | None:
    if len(raw) < 26:
        return None
    (header,) = struct.unpack_from("<I", raw, 14)
    if header == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return struct.unpack_from("<HH", raw, 18)
    if header >= 36:
        width, height = struct.unpack_from("<ii", raw, 18)
        return width, abs(height)  # a negative height is a top-down bitmap
    return None


def _gif(raw: bytes) -> Size | None:
    # the logical screen: OpenCV allocates it, and refuses a frame that does not fit in it
    return struct.unpack_from("<HH", raw, 6) if len(raw) >= 10 else None


def _avif(raw: bytes) -> Size | None:
    """libavif parses the container (the primary item's `ispe`); Pillow asks the same library."""
    try:
        from PIL import AvifImagePlugin

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with AvifImagePlugin.AvifImageFile(io.BytesIO(raw)) as image:
                return image.size
    except Exception:  # any failure to parse the header means: no size
        return None


def _fgets(raw: bytes, pos: int) -> tuple[bytes, int] | None:
    """C's fgets into a 128-byte buffer: at most 127 bytes, up to and including a newline."""
    if pos >= len(raw):
        return None
    newline = raw.find(b"\n", pos, pos + 127)
    end = newline + 1 if newline >= 0 else min(pos + 127, len(raw))
    return raw[pos:end].split(b"\0")[0], end  # C string functions stop at a NUL


_RADIANCE_SIZE = re.compile(rb"-Y\s*([+-]?\d+)\s*\+X\s*([+-]?\d+)")  # sscanf("-Y %d +X %d")


def _hdr(raw: bytes) -> Size | None:
    """OpenCV's RGBE_ReadHeader: a first line, lines up to a blank one, then the resolution line."""
    raw = raw[:_TEXT_HEADER]
    line = _fgets(raw, 0)
    while line is not None:
        line = _fgets(raw, line[1])
        if line is not None and line[0][:1] == b"\n":
            resolution = _fgets(raw, line[1])
            found = _RADIANCE_SIZE.match(resolution[0]) if resolution else None
            return (int(found[2]), int(found[1])) if found else None
    return None


def _jpeg(raw: bytes) -> Size | None:
    """libjpeg's marker reader: skip bytes to an 0xFF, fill 0xFFs and stuffed zeros; the first SOFn is the frame."""
    pos, end = 2, len(raw)
    for _ in range(_MAX_SEGMENTS):
        pos = raw.find(b"\xff", pos)
        if pos < 0:
            return None
        beyond = _NOT_FF.search(raw, pos)  # past the fill bytes
        if beyond is None:
            return None
        pos = beyond.start()
        marker = raw[pos]
        pos += 1
        if marker == 0x00 or 0xD0 <= marker <= 0xD7 or marker == 0x01:  # stuffed zero, RSTn, TEM: no length
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn (not DHT, JPG, DAC)
            if pos + 7 > end:
                return None
            height, width = struct.unpack_from(">HH", raw, pos + 3)
            return width, height
        if marker in (0xD8, 0xD9, 0xDA):  # SOI again, EOI or a scan before any frame: libjpeg fails
            return None
        if pos + 2 > end:
            return None
        (length,) = struct.unpack_from(">H", raw, pos)
        if length < 2:
            return None
        pos += length
    return None


def _webp(raw: bytes) -> Size | None:
    """libwebp's WebPGetFeatures: the VP8X canvas, else the VP8 or VP8L frame (the first chunk)."""
    if len(raw) < 30:
        return None
    chunk = raw[12:16]
    if chunk == b"VP8X":
        return 1 + int.from_bytes(raw[24:27], "little"), 1 + int.from_bytes(raw[27:30], "little")
    if chunk == b"VP8L" and raw[20] == 0x2F:
        (bits,) = struct.unpack_from("<I", raw, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and raw[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", raw, 26)
        return width & 0x3FFF, height & 0x3FFF
    return None


def _sun(raw: bytes) -> Size | None:
    return struct.unpack_from(">II", raw, 4) if len(raw) >= 12 else None


def _pnm_numbers(raw: bytes, pos: int, count: int) -> list[int] | None:
    """OpenCV's PxM ReadNumber, `count` times: whitespace and # comments before the digits, and the one byte
    after them is consumed whatever it is (so `40#` is 40, and the # starts no comment)."""
    raw = raw[:_TEXT_HEADER]
    numbers = []
    for _ in range(count):
        while True:
            if pos >= len(raw):
                return None
            byte = raw[pos]
            if byte in _DIGITS:
                break
            if byte == ord("#"):
                end = _line_end(raw, pos)
                if end < 0:
                    return None
                pos = end + 1
            elif byte in _WHITESPACE:
                pos += 1
            else:
                return None  # OpenCV: "Unexpected code in ReadNumber()"
        start = pos
        while pos < len(raw) and raw[pos] in _DIGITS:
            pos += 1
        if pos >= len(raw):
            return None  # the stream ends inside the number
        numbers.append(int(raw[start:pos]))
        pos += 1
    return numbers


def _pxm(raw: bytes) -> Size | None:
    numbers = _pnm_numbers(raw, 2, 2)
    return (numbers[0], numbers[1]) if numbers else None


_PAM_IDENTIFIERS = (b"HEIGHT", b"WIDTH", b"DEPTH", b"MAXVAL", b"TUPLTYPE", b"ENDHDR")


def _pam_line(raw: bytes, pos: int) -> tuple[bytes, bytes, int] | None:
    """OpenCV's ReadPAMHeaderLine: (identifier, value, next position); b"#" for a comment line.
    The value may start on the next line: the blanks after the identifier include newlines."""
    end = len(raw)
    while pos < end and raw[pos] in _WHITESPACE:
        pos += 1
    if pos >= end:
        return None
    if raw[pos] == ord("#"):
        end = _line_end(raw, pos)
        return (b"#", b"", end + 1) if end >= 0 else None
    start = pos
    while pos < end and pos - start < 8 and raw[pos] not in _WHITESPACE:
        pos += 1
    if pos >= end or raw[pos] not in _WHITESPACE or raw[start:pos] not in _PAM_IDENTIFIERS:
        return None  # an identifier too long, or unknown: OpenCV refuses the header
    identifier, after = raw[start:pos], raw[pos]
    pos += 1
    if after in b"\n\r":
        return identifier, b"", pos
    while pos < end and raw[pos] in _WHITESPACE:
        pos += 1
    start = pos
    while pos < end and pos - start < 255 and raw[pos] not in b"\n\r":
        pos += 1
    if pos >= end or raw[pos] not in b"\n\r":
        return None
    return identifier, raw[start:pos].rstrip(_WHITESPACE), pos + 1


def _pam(raw: bytes) -> Size | None:
    raw = raw[:_TEXT_HEADER]
    if raw[2:3] not in (b"\n", b"\r"):
        return None
    pos, found = 3, dict[bytes, int]()
    while (line := _pam_line(raw, pos)) is not None:
        identifier, value, pos = line
        if identifier == b"ENDHDR":
            return (found[b"WIDTH"], found[b"HEIGHT"]) if b"WIDTH" in found and b"HEIGHT" in found else None
        if identifier in (b"WIDTH", b"HEIGHT"):
            number = re.fullmatch(rb"-?\d*", value)
            if identifier in found or number is None:
                return None  # OpenCV refuses a repeated field and anything but an integer
            found[identifier] = int(value) if value.strip(b"-") else 0
    return None


_ATOI = re.compile(rb"[+-]?\d+")


def _pfm(raw: bytes) -> Size | None:
    """OpenCV's PFM reader: after "PF\\n", each number is the bytes up to one blank, read by atoi."""
    if raw[2:3] != b"\n":
        return None
    pos, numbers = 3, []
    for _ in range(2):
        token = bytearray()
        while len(token) < 2048:
            if pos >= len(raw):
                return None
            byte = raw[pos]
            pos += 1
            if byte in _WHITESPACE:
                break
            token.append(byte)
        digits = _ATOI.match(bytes(token))
        numbers.append(int(digits[0]) if digits else 0)
    return numbers[0], numbers[1]


def _tiff(raw: bytes) -> Size | None:
    """The first directory's ImageWidth (256) and ImageLength (257), in classic or BigTIFF layout."""
    order = "<" if raw[:2] == b"II" else ">"
    big = raw[2:4] in (b"+\0", b"\0+")
    try:
        if big:
            (offset,) = struct.unpack_from(order + "Q", raw, 8)
            (count,) = struct.unpack_from(order + "Q", raw, offset)
            first, step, value_at = offset + 8, 20, 12
        else:
            (offset,) = struct.unpack_from(order + "I", raw, 4)
            (count,) = struct.unpack_from(order + "H", raw, offset)
            first, step, value_at = offset + 2, 12, 8
        sizes: dict[int, int] = {}
        for i in range(min(count, 4096)):
            at = first + i * step
            tag, kind = struct.unpack_from(order + "HH", raw, at)
            if tag in (256, 257):
                formats = {3: "H", 4: "I", 16: "Q"}
                if kind not in formats:
                    return None
                (value,) = struct.unpack_from(order + formats[kind], raw, at + value_at)
                sizes[tag] = max(value, sizes.get(tag, 0))  # a repeated tag: the larger, to be safe
    except struct.error:
        return None
    return (sizes[256], sizes[257]) if 256 in sizes and 257 in sizes else None


def _png(raw: bytes) -> Size | None:
    return struct.unpack_from(">II", raw, 16) if raw[12:16] == b"IHDR" and len(raw) >= 24 else None


def _siz(raw: bytes, pos: int) -> Size | None:
    """A JPEG 2000 codestream's SIZ marker: the image area OpenJPEG allocates."""
    if raw[pos : pos + 4] != b"\xff\x4f\xff\x51" or len(raw) < pos + 24:
        return None
    xsiz, ysiz, xosiz, yosiz = struct.unpack_from(">IIII", raw, pos + 8)
    return xsiz - xosiz, ysiz - yosiz


def _jp2(raw: bytes) -> Size | None:
    """A JP2 file: its boxes up to the codestream box, whose SIZ counts (not the `ihdr` box, which
    OpenJPEG does not allocate from)."""
    if raw.startswith(b"\xff\x4f\xff\x51"):
        return _siz(raw, 0)
    pos = 0
    for _ in range(_MAX_SEGMENTS):
        if pos + 8 > len(raw):
            return None
        length, kind = struct.unpack_from(">I4s", raw, pos)
        header = 8
        if length == 1:
            if pos + 16 > len(raw):
                return None
            (length,) = struct.unpack_from(">Q", raw, pos + 8)
            header = 16
        elif length == 0:
            length = len(raw) - pos
        if kind == b"jp2c":
            return _siz(raw, pos + header)
        if length < header:
            return None
        pos += length
    return None


def _exr(raw: bytes) -> Size | None:
    """OpenEXR's first header: the `dataWindow` attribute (a box2i, inclusive)."""
    pos = 8
    for _ in range(_MAX_SEGMENTS):
        name_end = raw.find(b"\0", pos)
        if name_end < 0:
            return None
        if name_end == pos:
            return None  # the end of the header, without a dataWindow
        kind_end = raw.find(b"\0", name_end + 1)
        if kind_end < 0 or kind_end + 5 > len(raw):
            return None
        (size,) = struct.unpack_from("<i", raw, kind_end + 1)
        value = kind_end + 5
        if raw[pos:name_end] == b"dataWindow" and raw[name_end + 1 : kind_end] == b"box2i" and size == 16:
            if value + 16 > len(raw):
                return None
            xmin, ymin, xmax, ymax = struct.unpack_from("<iiii", raw, value)
            return xmax - xmin + 1, ymax - ymin + 1
        if size < 0:
            return None
        pos = value + size
    return None


def _is_pxm(raw: bytes, kinds: bytes) -> bool:
    return len(raw) >= 3 and raw[0] == ord("P") and raw[1] in kinds and raw[2] in _WHITESPACE


# OpenCV's decoders in its order (loadsave.cpp), each with its signature check and its header reader
_FORMATS: tuple[tuple[str, Callable[[bytes], bool], Callable[[bytes], Size | None]], ...] = (
    ("BMP", lambda raw: raw.startswith(b"BM"), _bmp),
    ("GIF", lambda raw: raw.startswith(b"GIF"), _gif),
    ("AVIF", lambda raw: raw[4:8] == b"ftyp" and raw[8:12] in (b"avif", b"avis"), _avif),
    ("HDR", lambda raw: raw.startswith((b"#?RGBE", b"#?RADIANCE")), _hdr),
    ("JPEG", lambda raw: raw.startswith(b"\xff\xd8\xff"), _jpeg),
    ("WEBP", lambda raw: raw.startswith(b"RIFF") and raw[8:12] == b"WEBP", _webp),
    ("SUN", lambda raw: raw.startswith(b"\x59\xa6\x6a\x95"), _sun),
    ("PXM", lambda raw: _is_pxm(raw, b"123456"), _pxm),
    ("PAM", lambda raw: _is_pxm(raw, b"7"), _pam),
    ("PFM", lambda raw: _is_pxm(raw, b"fF"), _pfm),
    ("TIFF", lambda raw: raw[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+"), _tiff),
    ("PNG", lambda raw: raw.startswith(b"\x89PNG\r\n\x1a\n"), _png),
    ("JPEG2000", lambda raw: raw.startswith((b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")), _jp2),
    ("EXR", lambda raw: raw.startswith(b"\x76\x2f\x31\x01"), _exr),
)


def image_format(raw: bytes) -> str | None:
    """The name of the OpenCV decoder these first bytes go to; None when none of them takes them."""
    for name, matches, _ in _FORMATS:
        if matches(raw):
            return name
    return None


def header_size(raw: bytes) -> Size | None:
    """(width, height) as the decoder of `raw`'s format will read them from its header; None when the
    format is unknown, or the header is cut short, corrupt or declares no positive size."""
    for _, matches, read in _FORMATS:
        if matches(raw):
            try:
                size = read(raw)
            except (struct.error, IndexError, ValueError):
                return None
            return size if size is not None and size[0] > 0 and size[1] > 0 else None
    return None
