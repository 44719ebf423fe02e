"""face_tracker: the main face's box in every frame of a clip, for stages that crop faces.

The mouth-warp engine's tracker (``engines.mouthwarp.tracker``): the Haar
frontal-face cascade every few frames, template matching between, boxes
smoothed over the clip; NaN rows where there is no face (a face that leaves
and comes back is detected again). It works on frames downscaled to 320 px on
the longer side, so callers send frames that small and scale the boxes up.

A per-item engine (the tracker's state runs through each clip), so throughput
scales with the instance count; the dynamic batcher only hands an idle
instance what is already queued.
"""

from __future__ import annotations

import numpy as np

from engines.mouthwarp.config import MouthWarpConfig
from engines.mouthwarp.tracker import FaceTracker
from serving.interfaces import FACE_TRACK
from serving.model import PerItemModel
from serving.placement import Placement
from serving.specs import Item


class FaceTrackerServed(PerItemModel):
    name = "face_tracker"
    interface = FACE_TRACK
    max_batch_size = 4
    instances = 2

    def __init__(self, config: object, placement: Placement) -> None:
        super().__init__(config, placement)
        self.tracker = FaceTracker(MouthWarpConfig())

    def infer_item(self, item: Item) -> Item:
        boxes = self.tracker.track(np.asarray(item["FRAMES"], dtype=np.uint8))
        rows = [list(box) if box is not None else [np.nan] * 4 for box in boxes]
        return {"BOXES": np.asarray(rows, dtype=np.float32).reshape(len(boxes), 4)}


SERVED = FaceTrackerServed
