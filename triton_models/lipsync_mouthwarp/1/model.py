"""lipsync_mouthwarp: the mouth-warp lip sync behind the common lip-sync interface."""

from __future__ import annotations

import numpy as np

from engines.batching import Item, scalar, triton_model_class
from engines.interfaces import LIPSYNC_INPUTS, LIPSYNC_OUTPUTS
from engines.mouthwarp import FaceTracker, MouthWarp, MouthWarpConfig, mouth_openness


class MouthWarpServed:
    name = "lipsync_mouthwarp"
    max_batch_size = 4
    inputs = LIPSYNC_INPUTS
    outputs = LIPSYNC_OUTPUTS

    def __init__(self, parameters: dict[str, str]) -> None:
        self.config = MouthWarpConfig()
        self.engine = MouthWarp(self.config)

    def infer_items(self, items: list[Item]) -> list[Item]:
        results = []
        for item in items:
            frames = np.asarray(item["FRAMES"], dtype=np.uint8)
            rate = int(scalar(item, "SAMPLE_RATE"))
            fps = float(scalar(item, "FPS"))
            boxes = FaceTracker(self.config).track(frames)
            openness = mouth_openness(np.asarray(item["AUDIO"], dtype=np.float32), rate, fps,
                                      frames.shape[0], self.config)
            rendered = self.engine.warp_clip(frames, openness, boxes)
            faces = sum(box is not None for box in boxes)
            results.append({"FRAMES": rendered, "FACE_FRAMES": np.array([faces], dtype=np.int64)})
        return results


SERVED_CLASS = MouthWarpServed


def build_served_model(parameters: dict[str, str]) -> MouthWarpServed:
    return MouthWarpServed(parameters)


TritonPythonModel = triton_model_class(build_served_model)
