"""lipsync_mouthwarp: the mouth-warp lip sync behind the common lip-sync interface.

A per-item engine: each clip is face-tracked frame by frame (the tracker's
state runs through the clip) and warped on the CPU, so throughput scales with
the instance count; the dynamic batcher only hands an idle instance what is
already queued.
"""

from __future__ import annotations

import numpy as np

from engines.mouthwarp.config import MouthWarpConfig
from engines.mouthwarp.openness import mouth_openness
from engines.mouthwarp.tracker import FaceTracker
from engines.mouthwarp.warp import MouthWarp
from serving.interfaces import LIPSYNC
from serving.model import PerItemModel
from serving.placement import Placement
from serving.specs import Item, scalar


class MouthWarpServed(PerItemModel):
    name = "lipsync_mouthwarp"
    interface = LIPSYNC
    max_batch_size = 4
    instances = 2

    def __init__(self, config: object, placement: Placement) -> None:
        super().__init__(config, placement)
        self.warp = MouthWarpConfig()
        self.engine = MouthWarp(self.warp)

    def infer_item(self, item: Item) -> Item:
        frames = np.asarray(item["FRAMES"], dtype=np.uint8)
        rate = int(scalar(item, "SAMPLE_RATE"))
        fps = float(scalar(item, "FPS"))
        boxes = FaceTracker(self.warp).track(frames)
        openness = mouth_openness(np.asarray(item["AUDIO"], dtype=np.float32), rate, fps,
                                  frames.shape[0], self.warp)
        rendered = self.engine.warp_clip(frames, openness, boxes)
        return {"FRAMES": rendered, "FACE_FRAMES": np.int64(sum(box is not None for box in boxes))}


SERVED = MouthWarpServed
