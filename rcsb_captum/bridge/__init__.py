from .bridge import Bridge
from .masks import random_freeform_masks
from .network import ADMUNet, adm_config_from_create_model
from .schedule import BridgeSchedule, space_indices
from .training import bridge_from_checkpoint, load_images, train_bridge

__all__ = [
    "ADMUNet",
    "Bridge",
    "BridgeSchedule",
    "adm_config_from_create_model",
    "bridge_from_checkpoint",
    "load_images",
    "random_freeform_masks",
    "space_indices",
    "train_bridge",
]
