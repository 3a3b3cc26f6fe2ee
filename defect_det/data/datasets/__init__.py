from .tianchi import load_tianchi_json, register_tianchi_aluminum, register_tianchi_fabric
from .tianchi_categories import ALUMINUM_CATEGORIES, FABRIC_CATEGORIES
from . import builtin  # registers the builtin datasets  # noqa: F401
from . import surface  # registers DAGM / KolektorSDD(2) / Severstal (SegDecNet)  # noqa: F401
from .surface import (  # DAGM / KolektorSDD(2) / Severstal loaders, one module per family
    KSDD_NUM_FOLDS,
    SEVERSTAL_SHAPE,
    ksdd_folders,
    load_dagm,
    load_ksdd,
    load_ksdd2,
    load_severstal,
    read_severstal_csv,
    register_all_surface,
    register_dagm,
    register_ksdd,
    register_ksdd2,
    register_severstal,
    rle_decode,
    rle_encode,
    severstal_split,
)

__all__ = [k for k in globals().keys() if not k.startswith("_")]
