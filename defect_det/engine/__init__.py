from .trainer import DefectTrainer, cpu_friendly_ddp

__all__ = ["DefectTrainer", "cpu_friendly_ddp"]
