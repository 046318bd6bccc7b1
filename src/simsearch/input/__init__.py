"""Input: strings naming files, directories or base64 bytes -> sources -> decoded RGB pixels."""

from simsearch.input.decode import Decoded, decode_image, probe_image
from simsearch.input.sources import Source, iter_sources

__all__ = ["Decoded", "Source", "decode_image", "iter_sources", "probe_image"]
