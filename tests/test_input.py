from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from tests.conftest import draw_image, write_image

from simsearch.errors import BadInput
from simsearch.input import decode_image, iter_sources, probe_image


def test_directories_are_walked_recursively_in_sorted_order(data_dir: Path) -> None:
    for rel in ["b/2.png", "a/z.png", "a/sub/1.png", "c.png"]:
        write_image(data_dir / rel, draw_image(1))
    uris = [s.uri for s in iter_sources([str(data_dir)], roots=[data_dir])]
    assert uris == [str(data_dir / p) for p in ["a/sub/1.png", "a/z.png", "b/2.png", "c.png"]]


def test_paths_outside_the_roots_are_refused(data_dir: Path, tmp_path: Path) -> None:
    outside = write_image(tmp_path / "outside.png", draw_image(2))
    with pytest.raises(BadInput, match=r"outside the allowed data roots") as info:
        iter_sources([str(outside)], roots=[data_dir])
    assert info.value.field == "data[0]"


def test_dotdot_traversal_is_refused(data_dir: Path, tmp_path: Path) -> None:
    write_image(tmp_path / "secret.png", draw_image(3))
    with pytest.raises(BadInput, match="outside"):
        iter_sources([str(data_dir / ".." / "secret.png")], roots=[data_dir])


def test_symlink_out_of_a_root_is_not_followed(data_dir: Path, tmp_path: Path) -> None:
    target = write_image(tmp_path / "elsewhere.png", draw_image(4))
    os.symlink(target, data_dir / "link.png")
    write_image(data_dir / "real.png", draw_image(5))
    link, real = iter_sources([str(data_dir)], roots=[data_dir])
    assert (Path(real.uri).name, real.path) == ("real.png", (data_dir / "real.png").resolve())
    # the link is a source that is never read: skipped and counted, like a file that is not an image
    assert (Path(link.uri).name, link.path, link.skip_reason) == ("link.png", None, "a link to outside the data roots")
    with pytest.raises(BadInput, match=r"link\.png: a link to outside the data roots"):
        link.read()
    with pytest.raises(BadInput, match="outside"):
        iter_sources([str(data_dir / "link.png")], roots=[data_dir])


def test_base64_is_stored_under_its_sha256() -> None:
    buffer = io.BytesIO()
    Image.fromarray(draw_image(6)).save(buffer, format="PNG")
    raw = buffer.getvalue()
    [source] = iter_sources([base64.b64encode(raw).decode()], roots=[])
    assert source.uri.startswith("sha256:")
    assert len(source.uri) == 7 + 64
    assert source.read(max_bytes=1 << 20) == raw


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        pytest.param("/no/such/file.jpg", "no such file", id="missing-path"),
        pytest.param("not base64 !!", "Could not read image", id="garbage"),
        pytest.param("http://example.org/a.jpg", "URL fetching is disabled", id="url"),
        pytest.param("file:///etc/passwd", "file:// URLs are refused", id="file-url"),
    ],
)
def test_unusable_items_name_the_field(item: str, reason: str, data_dir: Path) -> None:
    good = write_image(data_dir / "good.png", draw_image(7))
    with pytest.raises(BadInput, match=reason) as info:
        iter_sources([str(good), item], roots=[data_dir])
    assert info.value.field == "data[1]"


def test_empty_data_is_refused() -> None:
    with pytest.raises(BadInput, match="missing data"):
        iter_sources([], roots=[])


def test_decode_gives_rgb_and_size() -> None:
    rgb = draw_image(8, size=(40, 60))
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    decoded = decode_image(buffer.getvalue(), max_pixels=10_000)
    assert (decoded.width, decoded.height) == (60, 40)
    np.testing.assert_array_equal(decoded.rgb, rgb)


def test_exif_orientation_is_applied() -> None:
    rgb = np.zeros((30, 80, 3), np.uint8)
    rgb[:, :40] = (255, 0, 0)
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif, quality=95)
    decoded = decode_image(buffer.getvalue(), max_pixels=10_000)
    assert (decoded.width, decoded.height) == (30, 80)
    assert decoded.rgb[5, 15, 0] > 200
    assert decoded.rgb[-5, 15, 0] < 60


def test_pixel_limit_is_checked_from_the_header() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (200, 100)).save(buffer, format="PNG")
    with pytest.raises(BadInput, match="20000 pixels, the limit is 19999"):
        probe_image(buffer.getvalue()[:1024], max_pixels=19_999)
    with pytest.raises(BadInput, match="limit"):
        decode_image(buffer.getvalue(), max_pixels=19_999)


@pytest.mark.parametrize("raw", [b"", b"hello", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40], ids=["empty", "text", "cut"])
def test_corrupt_bytes_are_bad_input(raw: bytes) -> None:
    with pytest.raises(BadInput, match="image"):
        decode_image(raw, max_pixels=1000)


RGBE = b"\x80\x80\x80\x81"  # one Radiance pixel
RGB = b"\x10\x10\x10"  # one 8-bit RGB pixel


@pytest.mark.parametrize(
    ("raw", "size"),
    [
        # Radiance: OpenCV reads header lines into a 128-byte buffer, so a 127-byte line's newline reads as
        # the blank line that ends the header, and the next line is the size
        pytest.param(
            b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n" + b"#" * 127 + b"\n-Y 2 +X 3\n\n-Y 1 +X 1\n" + RGBE * 6,
            (3, 2),
            id="hdr-long-line",
        ),
        # PxM: the byte after a number is swallowed, so "3#" is 3 and the # starts no comment
        pytest.param(b"P6\n3#2\n255\n" + b"\x10" * 18, (3, 2), id="pxm-swallowed-byte"),
        pytest.param(b"P6 # a comment\n3 2\n255\n" + b"\x10" * 18, (3, 2), id="pxm-comment"),
        # PAM: a value may start on the next line
        pytest.param(b"P7\nWIDTH \n3\nHEIGHT 2\nDEPTH 3\nMAXVAL 255\nENDHDR\n" + RGB * 6, (3, 2), id="pam-wrapped"),
        pytest.param(b"PF\n3 2\n-1\n" + b"\0" * 72, (3, 2), id="pfm"),
    ],
)
def test_header_sizes_are_read_as_opencv_reads_them(raw: bytes, size: tuple[int, int]) -> None:
    """Headers whose oddities a reader could take differently from OpenCV: the size must be OpenCV's."""
    from simsearch.input.header import header_size

    decoded = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None
    assert (decoded.shape[1], decoded.shape[0]) == size
    assert header_size(raw) == size
