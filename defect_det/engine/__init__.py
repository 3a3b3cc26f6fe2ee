from .trainer import DefectTrainer, create_ddp_model

__all__ = ["DefectTrainer", "create_ddp_model"]
