"""Hostile inputs as an outside client sends them: odd directory entries in an indexed folder (symlink
loops, FIFOs, names that are not UTF-8), images whose header claims more pixels than the limit in every
format OpenCV decodes, and JSON bodies sent with another content type.

Inside a folder each is skipped and counted, and the server keeps answering; named directly, each is a
4xx naming the field with nothing written (those single requests, a symlink loop and a header claiming
too many pixels, are rows of the one bad-input table in test_api_bad_inputs.py). Through the real app
(Litestar's TestClient on a real Postgres), the CLI as a subprocess, and decode_image itself for the
header checks (in a subprocess where memory is measured).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import Engine
from tests.conftest import draw_image, make_folder

from simsearch.errors import BadInput
from simsearch.input import decode_image, probe_image

NATIVE = "hostile_native"
DD = "hostile_dd"
SIMSEARCH = shutil.which("simsearch") or "simsearch"


@pytest.fixture(scope="module")
def services(client: TestClient[Litestar]) -> None:
    created = client.post("/api/v1/services", json={"name": NATIVE, "model": "resnet18", "weights": "none", "size": 64})
    assert created.status_code == 201, created.text
    body = {
        "mllib": "torch",
        "parameters": {"input": {"width": 64, "height": 64}, "mllib": {"template": "resnet18", "weights": "none"}},
    }
    assert client.put(f"/services/{DD}", json=body).status_code == 201


def _index_native(client: TestClient[Litestar], item: str) -> httpx.Response:
    return client.post(f"/api/v1/services/{NATIVE}/images", json={"items": [{"data": item}]})


def _index_dd(client: TestClient[Litestar], item: str) -> httpx.Response:
    return client.post("/predict", json={"service": DD, "data": [item], "parameters": {"output": {"index": True}}})


def _non_utf8_name(folder: Path, name: bytes = b"caf\xe9.png") -> bytes:
    """A PNG in `folder` whose file name is Latin-1, not UTF-8 (as old archives and Windows zips make)."""
    path = os.fsencode(folder) + b"/" + name
    ok, encoded = cv2.imencode(".png", draw_image(77))
    assert ok
    with open(path, "wb") as fh:
        fh.write(encoded.tobytes())
    return path


# ---- odd entries in a folder: skipped and counted ------------------------------------------------


def test_a_symlink_loop_in_a_folder_is_skipped_and_counted(
    client: TestClient[Litestar], services: None, api_data: Path
) -> None:
    folder = api_data / "loops"
    make_folder(folder, 2, start=10)
    os.symlink("self", folder / "self")  # a link to itself
    os.symlink("b", folder / "a")
    os.symlink("a", folder / "b")  # a two-link cycle
    answer = _index_native(client, str(folder))
    assert answer.status_code == 201, answer.text
    result = answer.json()
    assert (result["indexed"], result["skipped"]) == (2, 3)
    assert sorted(Path(u).name for u in result["skipped_uris"]) == ["a", "b", "self"]
    dd = _index_dd(client, str(folder))
    assert dd.status_code == 200, dd.text
    assert dd.json()["head"]["skipped"] == 3


def test_a_fifo_in_a_folder_is_skipped_and_counted(
    client: TestClient[Litestar], services: None, api_data: Path
) -> None:
    folder = api_data / "fifo"
    make_folder(folder, 2, start=20)
    os.mkfifo(folder / "pipe.png")  # nobody writes to it: reading it would hang
    answer = _index_native(client, str(folder))
    assert answer.status_code == 201, answer.text
    result = answer.json()
    assert (result["indexed"], result["skipped"], result["skipped_uris"]) == (2, 1, [str(folder / "pipe.png")])


def test_a_dangling_link_and_a_link_to_a_folder_are_skipped_and_counted(
    client: TestClient[Litestar], services: None, api_data: Path
) -> None:
    folder = api_data / "links"
    make_folder(folder, 1, start=30)
    make_folder(api_data / "elsewhere", 1, start=31)
    os.symlink(api_data / "no-such-file.png", folder / "dangling.png")
    os.symlink(api_data / "elsewhere", folder / "folder-link")  # not followed: a cycle could hide behind it
    answer = _index_native(client, str(folder))
    assert answer.status_code == 201, answer.text
    result = answer.json()
    assert (result["indexed"], result["skipped"]) == (1, 2)
    assert sorted(Path(u).name for u in result["skipped_uris"]) == ["dangling.png", "folder-link"]


def test_a_file_name_that_is_not_utf8_is_skipped_and_counted(
    client: TestClient[Litestar], engine: Engine, services: None, api_data: Path
) -> None:
    folder = api_data / "latin1"
    make_folder(folder, 2, start=40)
    _non_utf8_name(folder)
    answer = _index_native(client, str(folder))
    assert answer.status_code == 201, answer.text
    result = answer.json()
    assert (result["indexed"], result["skipped"]) == (2, 1)
    # shown with the bad byte escaped: the JSON stays valid UTF-8 and says which file it was
    assert result["skipped_uris"] == [str(folder) + "/caf\\xe9.png"]
    dd = _index_dd(client, str(folder))
    assert dd.status_code == 200, dd.text
    assert dd.json()["head"]["skipped"] == 1


def test_a_deep_folder_is_walked_without_recursion_errors(
    client: TestClient[Litestar], services: None, api_data: Path
) -> None:
    # 1200 levels (deeper than Python's recursion limit), one character each: the path stays under PATH_MAX
    levels = [str(api_data / "deep")]
    levels += [os.path.join(levels[0], *(["d"] * n)) for n in range(1, 1201)]
    try:
        for level in levels:  # os.makedirs and shutil.rmtree recurse: one level at a time
            os.mkdir(level)
        ok, encoded = cv2.imencode(".png", draw_image(50))
        assert ok
        with open(os.path.join(levels[-1], "x.png"), "wb") as fh:
            fh.write(encoded.tobytes())
        answer = _index_native(client, levels[0])
        assert answer.status_code == 201, answer.text
        assert answer.json()["indexed"] == 1
    finally:
        if os.path.exists(os.path.join(levels[-1], "x.png")):
            os.unlink(os.path.join(levels[-1], "x.png"))
        for level in reversed(levels):  # or pytest's own cleanup of old temporary folders fails on it
            if os.path.isdir(level):
                os.rmdir(level)


def _cli(env: dict[str, str], *args: str | bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SIMSEARCH, *args], env=env, capture_output=True, text=True, errors="replace", timeout=300, check=False
    )


def test_the_cli_skips_and_counts_odd_entries_and_says_why(env: dict[str, str], data_dir: Path) -> None:
    folder = data_dir / "odd"
    make_folder(folder, 2, start=60)
    _non_utf8_name(folder)
    os.symlink("loop", folder / "loop")
    os.mkfifo(folder / "pipe")
    created = _cli(env, "service", "create", "odd", "--model", "resnet18", "--weights", "none", "--size", "64")
    assert created.returncode == 0, created.stderr
    indexed = _cli(env, "index", str(folder), "--service", "odd")
    assert indexed.returncode == 0, indexed.stderr
    assert "indexed 2 images into odd; skipped 3" in indexed.stderr
    for reason in ("not valid UTF-8", "symlink loop", "not a regular file"):
        assert reason in indexed.stderr, indexed.stderr


def test_the_cli_refuses_a_non_utf8_name_given_directly(env: dict[str, str], data_dir: Path) -> None:
    path = _non_utf8_name(data_dir)
    created = _cli(env, "service", "create", "odd", "--model", "resnet18", "--weights", "none", "--size", "64")
    assert created.returncode == 0, created.stderr
    refused = _cli(env, "index", path, "--service", "odd")
    assert refused.returncode == 2, refused.stderr
    assert "data[0]" in refused.stderr
    assert "not valid UTF-8" in refused.stderr
    assert "Traceback" not in refused.stderr


# ---- the pixel limit holds before decoding, in every format OpenCV decodes -------------------------

WIDTH, HEIGHT = 16_000, 15_000  # 240 million pixels: above the limit, and above Pillow's own bomb threshold
LIMIT = 50_000_000


def _small(ext: str) -> bytes:
    """A 128x96 image in the format of `ext`, as OpenCV writes it."""
    image = draw_image(5)
    if ext in (".hdr", ".pfm"):
        ok, encoded = cv2.imencode(ext, image.astype(np.float32) / 255)
    elif ext == ".pgm":
        ok, encoded = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
    else:
        ok, encoded = cv2.imencode(ext, image)
    assert ok, ext
    return encoded.tobytes()


def _png(raw: bytes, w: int, h: int) -> bytes:
    ihdr = raw[12:16] + struct.pack(">II", w, h) + raw[24:29]
    return raw[:16] + ihdr[4:] + struct.pack(">I", zlib.crc32(ihdr)) + raw[33:]


def _jpeg(raw: bytes, w: int, h: int) -> bytes:
    at = raw.index(b"\xff\xc0")
    return raw[: at + 5] + struct.pack(">HH", h, w) + raw[at + 9 :]


def _bmp(raw: bytes, w: int, h: int) -> bytes:
    return raw[:18] + struct.pack("<ii", w, h) + raw[26:]


def _tiff(raw: bytes, w: int, h: int) -> bytes:
    out = bytearray(raw)
    order = "<" if raw[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", raw[4:8])
    (count,) = struct.unpack(order + "H", raw[ifd : ifd + 2])
    for i in range(count):
        at = ifd + 2 + 12 * i
        tag, kind = struct.unpack(order + "HH", raw[at : at + 4])
        if tag in (256, 257):
            value = w if tag == 256 else h
            packed = struct.pack(order + "HH", value, 0) if kind == 3 else struct.pack(order + "I", value)
            out[at + 8 : at + 12] = packed
    return bytes(out)


def _webp(raw: bytes, w: int, h: int) -> bytes:
    if raw[12:16] == b"VP8L":  # lossless: 14 bits of width - 1, then of height - 1, after the 0x2f signature
        (bits,) = struct.unpack("<I", raw[21:25])
        bits = (bits & ~0x0FFFFFFF) | (w - 1) | ((h - 1) << 14)
        return raw[:21] + struct.pack("<I", bits) + raw[25:]
    assert raw[12:16] == b"VP8 "  # lossy: the frame header has 14-bit sizes at offset 26
    return raw[:26] + struct.pack("<HH", w, h) + raw[30:]


def _gif(raw: bytes, w: int, h: int) -> bytes:
    return raw[:6] + struct.pack("<HH", w, h) + raw[10:]


def _sun(raw: bytes, w: int, h: int) -> bytes:
    return raw[:4] + struct.pack(">II", w, h) + raw[12:]


def _text(pattern: bytes, replacement: str) -> Callable[[bytes, int, int], bytes]:
    def patch(raw: bytes, w: int, h: int) -> bytes:
        patched, n = re.subn(pattern, replacement.format(w=w, h=h).encode(), raw, count=1)
        assert n == 1
        return patched

    return patch


def _pam(raw: bytes, w: int, h: int) -> bytes:
    return _text(rb"HEIGHT \d+", "HEIGHT {h}")(_text(rb"WIDTH \d+", "WIDTH {w}")(raw, w, h), w, h)


def _siz(raw: bytes, w: int, h: int) -> bytes:
    """JPEG 2000: the codestream's SIZ marker (what OpenJPEG allocates), the jp2 `ihdr` box left small."""
    at = raw.index(b"\xff\x4f\xff\x51") + 4
    return raw[: at + 4] + struct.pack(">IIII", w, h, 0, 0) + raw[at + 20 :]


def _avif(raw: bytes, w: int, h: int) -> bytes:
    at = raw.index(b"ispe") + 8
    return raw[:at] + struct.pack(">II", w, h) + raw[at + 8 :]


def _exr(w: int, h: int) -> bytes:
    """An OpenEXR header by hand (OpenCV's EXR codec is off by default, so it cannot write one)."""

    def attribute(name: str, kind: str, value: bytes) -> bytes:
        return name.encode() + b"\0" + kind.encode() + b"\0" + struct.pack("<i", len(value)) + value

    window = struct.pack("<iiii", 0, 0, w - 1, h - 1)
    header = attribute("dataWindow", "box2i", window) + attribute("displayWindow", "box2i", window)
    return b"\x76\x2f\x31\x01" + struct.pack("<I", 2) + header + b"\0" + b"\0" * 64


PATCHES: dict[str, Callable[[bytes, int, int], bytes]] = {
    ".png": _png,
    ".jpg": _jpeg,
    ".bmp": _bmp,
    ".tiff": _tiff,
    ".webp": _webp,
    ".gif": _gif,
    ".ras": _sun,
    ".ppm": _text(rb"\d+ \d+\n", "{w} {h}\n"),
    ".pgm": _text(rb"\d+ \d+\n", "{w} {h}\n"),
    ".pam": _pam,
    ".pfm": _text(rb"\d+ \d+\n", "{w} {h}\n"),
    ".hdr": _text(rb"-Y \d+ \+X \d+", "-Y {h} +X {w}"),
    ".jp2": _siz,
    ".avif": _avif,
}


@pytest.mark.parametrize("ext", list(PATCHES))
def test_every_format_opencv_decodes_is_sized_from_its_header(ext: str) -> None:
    """A small image decodes at its size; the same bytes claiming 16000x15000 are refused with the real
    pixel count, by the header check (OpenCV, given them, would allocate first and fail on the data)."""
    raw = _small(ext)
    decoded = decode_image(raw, max_pixels=LIMIT)
    assert (decoded.width, decoded.height) == (128, 96)
    big = PATCHES[ext](raw, WIDTH, HEIGHT)
    with pytest.raises(BadInput, match=f"image has {WIDTH * HEIGHT} pixels, the limit is {LIMIT}"):
        decode_image(big, max_pixels=LIMIT)
    with pytest.raises(BadInput, match=f"image has {WIDTH * HEIGHT} pixels"):
        probe_image(big[: 64 << 10], max_pixels=LIMIT)


def test_an_exr_header_is_sized_too() -> None:
    with pytest.raises(BadInput, match=f"image has {WIDTH * HEIGHT} pixels"):
        decode_image(_exr(WIDTH, HEIGHT), max_pixels=LIMIT)


def test_a_30000_square_png_reports_its_real_pixel_count() -> None:
    big = _png(_small(".png"), 30_000, 30_000)
    with pytest.raises(BadInput, match="image has 900000000 pixels"):
        decode_image(big, max_pixels=LIMIT)
    with pytest.raises(BadInput, match="image has 900000000 pixels"):
        probe_image(big[:1024], max_pixels=LIMIT)


def test_an_hdr_header_is_read_as_opencv_reads_it() -> None:
    """OpenCV reads the Radiance header in 127-byte pieces: a long line whose remainder is a blank line ends
    its header there, so the next line is the size it allocates, whatever a line-by-line reader thinks."""
    raw = b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n" + b"#" * 127 + b"\n-Y 15000 +X 16000\n\n-Y 1 +X 1\n" + b"\0" * 64
    with pytest.raises(BadInput, match=f"image has {WIDTH * HEIGHT} pixels"):
        decode_image(raw, max_pixels=LIMIT)


def _hdr_10000() -> bytes:
    """A valid 10000x10000 Radiance HDR of one colour, run-length encoded: 6.4 MB."""
    width = 10_000
    runs = b"".join(bytes([128 + n, 90]) for n in [127] * (width // 127) + [width % 127])
    line = bytes([2, 2, width >> 8, width & 0xFF]) + runs * 4
    return b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 10000 +X 10000\n" + line * 10_000


def test_a_large_hdr_is_refused_before_any_decoding(api_data: Path) -> None:
    """Measured in a fresh process: refusing it must not grow the peak memory by the 1.2 GB of floats
    that decoding it takes."""
    path = api_data / "big.hdr"
    path.write_bytes(_hdr_10000())
    script = textwrap.dedent(
        f"""
        import json, resource
        from pathlib import Path
        from simsearch.errors import BadInput
        from simsearch.input import decode_image
        raw = Path({str(path)!r}).read_bytes()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            decode_image(raw, max_pixels={LIMIT})
            reason = None
        except BadInput as exc:
            reason = exc.reason
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"reason": reason, "grown_kib": after - before}}))
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["reason"] == f"image has 100000000 pixels, the limit is {LIMIT} (SIMSEARCH_MAX_PIXELS)"
    assert result["grown_kib"] < 200 << 10, result


# ---- strict JSON on /api/v1 whatever the content type -------------------------------------------


@pytest.fixture(scope="module")
def image_id(client: TestClient[Litestar], services: None, api_data: Path) -> int:
    [path] = make_folder(api_data / "one", 1, start=70)
    answer = _index_native(client, str(path))
    assert answer.status_code == 201, answer.text
    return int(answer.json()["images"][0]["id"])


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", None], ids=["text", "form", "none"]
)
def test_api_v1_decodes_json_strictly_whatever_the_content_type(
    client: TestClient[Litestar], image_id: int, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    body = json.dumps({"image_id": image_id, "k": "3"}).encode()
    answer = client.post(f"/api/v1/services/{NATIVE}/search", content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["field"] == "k"
    good = json.dumps({"image_id": image_id, "k": 3}).encode()
    found = client.post(f"/api/v1/services/{NATIVE}/search", content=good, headers=headers)
    assert found.status_code == 200, found.text
    assert found.json()["results"][0]["image_id"] == image_id
    # the DeepDetect face keeps taking JSON however it is labelled: `curl -d` sends it as a form
    image = base64.b64encode(cv2.imencode(".png", draw_image(80))[1].tobytes()).decode()
    predict = {"service": DD, "data": [image], "parameters": {"output": {"index": True, "search": True}}}
    answer = client.post("/predict", content=json.dumps(predict).encode(), headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["body"]["predictions"][0]["nns"]
