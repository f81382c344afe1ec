"""STOP / DGL / CLIP4Clip-meanP text-video retrieval models on a frozen OpenAI CLIP.

Build models through the factory: `create_model(config, clip)` for a new one, `load_trained(path)` for trained
weights of any layout. `ContrastiveLoss` is the training objective.
"""

from models.checkpoints import CheckpointError
from models.factory import ModelInputs, TrainedModel, build_model, create_model, load_trained
from models.loss import ContrastiveLoss, cosine_similarity
from models.model_config import ModelConfig, add_model_args
from models.video_text_model import VideoTextModel

__all__ = ["CheckpointError", "ContrastiveLoss", "ModelConfig", "ModelInputs", "TrainedModel", "VideoTextModel",
           "add_model_args", "build_model", "cosine_similarity", "create_model", "load_trained"]
