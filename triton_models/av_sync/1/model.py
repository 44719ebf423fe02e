"""av_sync: the mouth-opening signal of delivered frames and the dub's level per frame, for QC.

QC asks whether the lips in the *output* move with the dub. This model measures both
sides on the same per-frame clock: the mouth darkness in the tracked face's lip gap
(``engines.mouthwarp.measure_mouth_signal``, NaN where no face is found) and the RMS
level of the audio over each frame's span (``frame_levels_db``). The offset search runs
in the QC handler over a whole chunk, since one request carries only a bounded slice
of frames.
"""

from __future__ import annotations

import numpy as np

from engines.batching import Item, scalar, triton_model_class
from engines.interfaces import AV_SYNC_INPUTS, AV_SYNC_OUTPUTS
from engines.mouthwarp import FaceTracker, MouthWarpConfig, frame_levels_db, measure_mouth_signal


class AvSyncServed:
    name = "av_sync"
    max_batch_size = 4
    inputs = AV_SYNC_INPUTS
    outputs = AV_SYNC_OUTPUTS

    def __init__(self, parameters: dict[str, str]) -> None:
        self.config = MouthWarpConfig()

    def infer_items(self, items: list[Item]) -> list[Item]:
        results = []
        for item in items:
            frames = np.asarray(item["FRAMES"], dtype=np.uint8)
            rate = int(scalar(item, "SAMPLE_RATE"))
            fps = float(scalar(item, "FPS"))
            # A fresh tracker per slice: requests are independent (any instance may serve them).
            boxes = FaceTracker(self.config).track(frames)
            mouth = measure_mouth_signal(frames, boxes, self.config)
            levels = frame_levels_db(np.asarray(item["AUDIO"], dtype=np.float32), rate, fps, frames.shape[0])
            results.append({
                "MOUTH_SIGNAL": mouth.astype(np.float32),
                "AUDIO_LEVEL_DB": levels.astype(np.float32),
                "FACE_FRAMES": np.array([sum(box is not None for box in boxes)], dtype=np.int64),
            })
        return results


SERVED_CLASS = AvSyncServed


def build_served_model(parameters: dict[str, str]) -> AvSyncServed:
    return AvSyncServed(parameters)


TritonPythonModel = triton_model_class(build_served_model)
