"""av_sync: the mouth-opening signal of delivered frames and the dub's level per frame, for QC.

QC asks whether the lips in the *output* move with the dub. This model measures both
sides on the same per-frame clock: the mouth darkness in the tracked face's lip gap
(``engines.mouthwarp.measure.measure_mouth_signal``, NaN where no face is found) and the RMS
level of the audio over each frame's span (``frame_levels_db``). The offset search runs
in the QC handler over a whole chunk, since one request carries only a bounded slice
of frames.

A per-item engine (face tracking runs through each slice), so throughput scales with
the instance count; the dynamic batcher only hands an idle instance what is already
queued.
"""

from __future__ import annotations

import numpy as np

from engines.mouthwarp.config import MouthWarpConfig
from engines.mouthwarp.measure import frame_levels_db, measure_mouth_signal
from engines.mouthwarp.tracker import FaceTracker
from serving.interfaces import AV_SYNC
from serving.model import PerItemModel
from serving.placement import Placement
from serving.specs import Item, scalar


class AvSyncServed(PerItemModel):
    name = "av_sync"
    interface = AV_SYNC
    max_batch_size = 4
    instances = 2

    def __init__(self, config: object, placement: Placement) -> None:
        super().__init__(config, placement)
        self.warp = MouthWarpConfig()

    def infer_item(self, item: Item) -> Item:
        frames = np.asarray(item["FRAMES"], dtype=np.uint8)
        rate = int(scalar(item, "SAMPLE_RATE"))
        fps = float(scalar(item, "FPS"))
        # A fresh tracker per slice: requests are independent (any instance may serve them).
        boxes = FaceTracker(self.warp).track(frames)
        mouth = measure_mouth_signal(frames, boxes, self.warp)
        levels = frame_levels_db(np.asarray(item["AUDIO"], dtype=np.float32), rate, fps, frames.shape[0])
        return {
            "MOUTH_SIGNAL": mouth.astype(np.float32),
            "AUDIO_LEVEL_DB": levels.astype(np.float32),
            "FACE_FRAMES": np.int64(sum(box is not None for box in boxes)),
        }


SERVED = AvSyncServed
