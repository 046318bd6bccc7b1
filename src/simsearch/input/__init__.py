"""Input: strings naming files, directories, base64 bytes or URLs -> sources -> decoded RGB pixels (and crops)."""

from simsearch.input.crop import NO_CROP, Crop, crop_box
from simsearch.input.decode import Decoded, decode_image, probe_image
from simsearch.input.fetch import UrlPolicy, fetch_url
from simsearch.input.intake import Intake
from simsearch.input.sources import Source, is_utf8, iter_sources, under_roots

__all__ = [
    "NO_CROP",
    "Crop",
    "Decoded",
    "Intake",
    "Source",
    "UrlPolicy",
    "crop_box",
    "decode_image",
    "fetch_url",
    "is_utf8",
    "iter_sources",
    "probe_image",
    "under_roots",
]
