"""Dataset formats: importers for COCO, YOLO, Pascal VOC and CityPersons, and the COCO exporter.

>>> report = import_dataset("voc", "VOCdevkit/VOC2012", "data/voc", on_error="skip")
>>> report.imported, report.skipped, report.errors[:3]
>>> export_coco("data/voc", "export/instances.json")   # and export/images/KEY.jpg

Each format module (``coco``, ``yolo``, ``voc``, ``citypersons``) documents its layout and its class mapping,
and only parses: it yields ``records.SourceImage`` records. ``importer.import_dataset`` reads the images,
checks every object with the schema's rules and writes shards, the same way for all of them.
``IMPORTERS[fmt]`` is ``import_dataset`` with the format filled in.
"""

from crosswalk.data.formats.coco import export_coco
from crosswalk.data.formats.importer import IMPORTERS, READERS, ImportReport, import_dataset
from crosswalk.data.formats.records import DatasetImportError

__all__ = ["IMPORTERS", "READERS", "DatasetImportError", "ImportReport", "export_coco", "import_dataset"]
