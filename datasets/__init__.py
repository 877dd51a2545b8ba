"""Video datasets in the published layout root/{train,test}/<video>."""
from datasets.frames_dataset import DatasetError, DatasetRepeater, FramesDataset, list_videos, video_id

__all__ = ["DatasetError", "DatasetRepeater", "FramesDataset", "list_videos", "video_id"]
