"""Category tables of the two Tianchi defect datasets used by RDDN.

The order is the order of the RDDN paper's tables (Table II for fabric, Table I for aluminum);
COCO category ids are ``index + 1`` in that order. Each entry: ``(english_name, chinese_name)``.
"""

# Tianchi 2019 Guangdong fabric, round 2 (RDDN "Fabric", Table II order)
FABRIC_CATEGORIES = [
    ("stained", "沾污"),
    ("broken figures", "错花"),
    ("water mark", "水印"),
    ("knots", "花毛"),
    ("seam allowance", "缝头"),
    ("joining stencil mark", "缝头印"),
    ("insect", "虫粘"),
    ("broken hole", "破洞"),
    ("pleats", "褶子"),
    ("flaw", "织疵"),
    ("misprinting", "漏印"),
    ("wax spot", "蜡斑"),
    ("color shade", "色差"),
    ("crease mark", "网折"),
    ("others", "其他"),
]

# Tianchi 2018 Guangdong aluminum, round 2 (RDDN "Aluminum", Table I order)
ALUMINUM_CATEGORIES = [
    ("non-conductive", "不导电"),
    ("flow mark", "喷流"),
    ("abrasion mark", "擦花"),
    ("color mismatch", "杂色"),
    ("orange peel", "桔皮"),
    ("bubble", "漆泡"),
    ("leakage", "漏底"),
    ("dirty spot", "脏点"),
    ("corner leakage", "角位漏底"),
    ("pit", "起坑"),
]

DATASET_CATEGORIES = {"fabric": FABRIC_CATEGORIES, "aluminum": ALUMINUM_CATEGORIES}


def category_names(dataset):
    """English class names of ``dataset`` ('fabric' or 'aluminum'), in contiguous-id order."""
    return [en for en, _ in DATASET_CATEGORIES[dataset]]


def name_to_category_id(dataset):
    """Map English *and* Chinese names (and case/space variants of English) to COCO ids (1-based)."""
    table = {}
    for i, (en, zh) in enumerate(DATASET_CATEGORIES[dataset]):
        for key in (en, en.lower(), en.replace(" ", "_"), en.replace(" ", "-"), zh):
            table[key] = i + 1
    return table
