"""The report of a Tianchi conversion: every reason a box, mask, image or annotation file is changed,
dropped or skipped (:data:`ALL_REASONS`), the counting of them (:class:`_Log`: strict mode raises
:class:`TianchiFormatError` on a problem, lenient mode counts it), and :func:`format_report`."""
from collections import OrderedDict

__all__ = [
    "ALL_REASONS",
    "BOX_REASONS",
    "CONVERTER_VERSION",
    "FATAL_REASONS",
    "FILE_REASONS",
    "IMAGE_REASONS",
    "MASK_REASONS",
    "NOTE_REASONS",
    "TianchiFormatError",
    "format_report",
]

CONVERTER_VERSION = "1.1"  # 1.1: optional "segmentation" masks
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
MAX_EXAMPLES = 5

# reason -> human-readable line of the report. Box reasons drop one annotation box each; image
# reasons drop one image; file reasons skip an annotation file; notes change nothing or fix geometry.
# Strict mode (the default) stops at the first problem: every box reason but image_dropped and
# duplicate, every image and file reason, defect_image_without_annotations and bad_mask; lenient
# mode counts them. FATAL_REASONS stop both modes. The other reasons are only counted.
BOX_REASONS = OrderedDict([
    ("not_an_object", "annotation entries that are not JSON objects"),
    ("missing_key", "annotation entries missing a required key"),
    ("bad_bbox", "annotation entries with a bbox that is not 4 finite numbers"),
    ("bad_points", "LabelMe shapes with < 2 points or non-numeric points"),
    ("unknown_class", "annotation entries with an unknown class name"),
    ("image_not_found", "annotation entries naming an image not found on disk"),
    ("annotation_on_normal_image", "annotation entries naming an image in a normal/ folder"),
    ("image_dropped", "boxes of images dropped for an image problem (see image reasons)"),
    ("degenerate", "degenerate boxes dropped (x2 <= x1 or y2 <= y1: zero or negative width/height)"),
    ("outside_image", "boxes dropped as entirely outside the image"),
    ("duplicate", "exact duplicate boxes dropped (same image, class and coordinates)"),
])
IMAGE_REASONS = OrderedDict([
    ("duplicate_image_name", "images dropped: same file name found twice (kept the first)"),
    ("missing_template", "images dropped: template_<prefix> image missing"),
    ("unreadable_image", "images dropped: image or template does not decode (missing, truncated, corrupt)"),
    ("template_size_mismatch", "images dropped: template size differs from the image"),
    ("missing_annotation", "images dropped: no LabelMe JSON and not in a normal folder"),
    ("bad_annotation_file", "images dropped: LabelMe JSON malformed / not a LabelMe object"),
])
FILE_REASONS = OrderedDict([
    ("annotation_file_empty", "annotation files holding an empty list (no box for any image)"),
])
# an annotation file that cannot be read would leave every image it labels without boxes: an error
# in both modes
FATAL_REASONS = OrderedDict([
    ("annotation_file_malformed", "annotation file unreadable or malformed JSON"),
    ("annotation_file_not_list", "annotation file whose top level is not a list"),
])
NOTE_REASONS = OrderedDict([
    ("clipped", "boxes clipped to the image (kept)"),
    ("mask_of_clipped_box", "masks of clipped boxes (kept unchanged)"),
    ("defect_image_without_annotations", "defect images without any annotation entry (kept, no boxes)"),
    ("defect_image_all_boxes_dropped", "defect images whose boxes were all dropped (kept, no boxes)"),
    ("annotated_image_in_normal_folder", "images in a normal folder with LabelMe shapes (kept as defect)"),
    ("labelme_size_mismatch", "LabelMe imageWidth/imageHeight differ from the image (image size used)"),
    ("unrelated_json_ignored", "JSON files without an image beside them that are not LabelMe (ignored)"),
])
# mask reasons drop one mask each (never its box)
MASK_REASONS = OrderedDict([
    ("bad_mask", "masks dropped as invalid (box kept): not RLE / polygons, wrong size, bad counts"),
    ("empty_mask", "masks dropped: no foreground pixel / zero-area polygons (box kept)"),
    ("mask_of_dropped_box", "masks dropped with their box (see box reasons)"),
])
ALL_REASONS = OrderedDict(
    list(BOX_REASONS.items()) + list(IMAGE_REASONS.items()) + list(FILE_REASONS.items())
    + list(MASK_REASONS.items()) + list(NOTE_REASONS.items())
)


class TianchiFormatError(ValueError):
    """
    Bad Tianchi input. ``str(e)`` is ``"<file>: entry <i> (<name>): <problem>"`` (the entry part only
    when the problem is one entry of a file). Attributes: ``file``, ``entry``, ``name``, ``problem``,
    ``reason`` (the report key it is counted under in lenient mode).
    """

    def __init__(self, file, problem, entry=None, name=None, reason=None):
        self.file, self.problem, self.entry, self.name, self.reason = file, problem, entry, name, reason
        super().__init__(_describe(file, problem, entry, name))


def _where(file, entry=None, name=None):
    where = str(file)
    if entry is not None:
        where += f": entry {entry}"
    if name is not None:
        where += f" ({name})"
    return where


def _describe(file, problem, entry=None, name=None):
    return f"{_where(file, entry, name)}: {problem}"


class _Log:
    """Counts reasons; raises on problems in strict mode."""

    def __init__(self, strict):
        self.strict = strict
        self.counts = OrderedDict()
        self.examples = OrderedDict()

    def count(self, reason, message=None, n=1):
        assert reason in ALL_REASONS, reason
        self.counts[reason] = self.counts.get(reason, 0) + n
        if message is not None:
            ex = self.examples.setdefault(reason, [])
            if len(ex) < MAX_EXAMPLES:
                ex.append(message)

    def problem(self, reason, file, problem, entry=None, name=None):
        """Bad input: raise (strict) or count under ``reason`` and carry on (lenient)."""
        if self.strict:
            raise TianchiFormatError(file, problem, entry, name, reason)
        self.count(reason, _describe(file, problem, entry, name))


def _new_report(dataset, strict, roots, image_root):
    return OrderedDict([
        ("dataset", dataset), ("mode", "strict" if strict else "lenient"), ("roots", roots),
        ("image_root", image_root), ("images_found", OrderedDict([("defect", 0), ("normal", 0)])),
        ("annotation_files", []), ("boxes_in", 0), ("masks_in", 0),
    ])


def format_report(report):
    """The report dict of :func:`convert_fabric` / :func:`convert_aluminum` as text, one reason a line."""
    r = report
    found = r["images_found"]
    lines = [
        f"tianchi {r['dataset']} ({r['mode']}): roots {', '.join(r['roots'])}",
        f"  images found: {found['defect'] + found['normal']} "
        f"(defect {found['defect']}, normal {found['normal']})",
        f"  annotation files read: {len(r['annotation_files'])}; boxes in: {r['boxes_in']}",
        f"  boxes written: {r['boxes_written']} = boxes in {r['boxes_in']} - dropped "
        f"{sum(r['boxes_dropped'].values())}",
        "  boxes per class: " + ", ".join(f"{k} {v}" for k, v in r["boxes_per_class"].items()),
        f"  masks in: {r['masks_in']}; annotations written with a mask: {r['masks_written']} of "
        f"{r['boxes_written']} (= masks in {r['masks_in']} - dropped {sum(r['masks_dropped'].values())})",
        "  images written: " + ", ".join(
            f"{p} {n} (normal {r['normal_images_written'][p]}, boxes {r['boxes_written_per_split'][p]}) "
            f"-> {r['outputs'][p]}" for p, n in r["images_written"].items()),
    ]
    if r["issues"]:
        lines.append("  changed / dropped / skipped, by reason:")
        for reason, n in r["issues"].items():
            lines.append(f"    {n:6d}  {ALL_REASONS[reason]} [{reason}]")
            for ex in r["examples"].get(reason, [])[:3]:
                lines.append(f"            e.g. {ex}")
    else:
        lines.append("  nothing changed or dropped")
    for path in r.get("stale_outputs_removed", []):
        lines.append(f"  removed {path}: a validation split of an earlier run, which this split (no --val-size) "
                     "would overlap")
    return "\n".join(lines)
