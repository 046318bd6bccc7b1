from __future__ import annotations

import base64
import io
import os
from pathlib import Path

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
    assert [Path(s.uri).name for s in iter_sources([str(data_dir)], roots=[data_dir])] == ["real.png"]
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
