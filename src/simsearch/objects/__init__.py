"""Object search: sources -> decode -> detect -> [crop -> extract] -> store boxes and vectors; search per
object; rank whole images by their objects (in SQL, sql/functions/rank_images.sql).

A detector service finds the boxes. Their vectors come either from the detector itself (the box-head
feature of the Faster R-CNN family: DeepDetect's `rois`) or from an extractor service applied to each
crop (DeepDetect's chain: detect -> crop -> extract). Each box is stored once, as the detector's ROI;
each service that embeds it stores an embedding pointing at it.
"""

from simsearch.objects.find import find_objects
from simsearch.objects.plan import plan
from simsearch.objects.search import rank_images, search_objects
from simsearch.objects.types import Detection, FoundObject, ObjectImage, ObjectReport, Plan
from simsearch.objects.write import index_objects

__all__ = [
    "Detection",
    "FoundObject",
    "ObjectImage",
    "ObjectReport",
    "Plan",
    "find_objects",
    "index_objects",
    "plan",
    "rank_images",
    "search_objects",
]
