from .tianchi import load_tianchi_json, register_tianchi_aluminum, register_tianchi_fabric
from .tianchi_categories import ALUMINUM_CATEGORIES, FABRIC_CATEGORIES
from . import builtin  # registers the builtin datasets  # noqa: F401
from . import surface  # registers DAGM / KolektorSDD(2) / Severstal (SegDecNet)  # noqa: F401

__all__ = [k for k in globals().keys() if not k.startswith("_")]
