"""STOP / DGL / CLIP4Clip-meanP text-video retrieval models on a frozen OpenAI CLIP."""

from models.model_config import ModelConfig, add_model_args
from models.video_text_model import VideoTextModel, build_model

__all__ = ["ModelConfig", "VideoTextModel", "add_model_args", "build_model"]
