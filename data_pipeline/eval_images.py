"""The evaluation images a leak check must protect: image files, and images embedded in parquet.

MMMU ships its images only inside parquet (``image_1`` ... ``image_7``), and the Hugging Face copies
of VQA-RAD and PathVQA do too (``image``): a folder walk finds no file there. Each parquet column
holding ``{bytes, path}`` structs is read row group by row group, and each image is written once
under ``cache_dir`` named by the SHA-1 of its bytes, so it is hashed like any file and a reported
pair points at an image one can open. An eval folder that yields no image at all is a warning: the
leak check would protect nothing from it.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path


class NoEvalImagesWarning(UserWarning):
    """An evaluation folder with no image file and no image inside its parquet files."""


def _image_columns(schema) -> list[str]:
    import pyarrow as pa

    return [f.name for f in schema if pa.types.is_struct(f.type)
            and "bytes" in [c.name for c in f.type] and pa.types.is_binary(f.type.field("bytes").type)]


def parquet_images(path: Path, cache_dir: Path) -> list[str]:
    """Every embedded image of one parquet file, written out once under ``cache_dir``."""
    import pyarrow.parquet as pq

    from medsage.io import atomic_write_bytes

    pf = pq.ParquetFile(path)
    columns = _image_columns(pf.schema_arrow)
    out = []
    for group in range(pf.num_row_groups) if columns else ():
        table = pf.read_row_group(group, columns=columns)
        for column in columns:
            for cell in table.column(column).to_pylist():
                data = cell.get("bytes") if isinstance(cell, dict) else None
                if not data:
                    continue
                target = cache_dir / f"{hashlib.sha1(data).hexdigest()[:20]}.img"
                if not target.exists():
                    atomic_write_bytes(target, data)
                out.append(str(target.resolve()))
    return out


def collect_eval_images(folders: list[str | Path], cache_dir: str | Path) -> list[str]:
    """Image files under ``folders`` plus the images inside their parquet files, sorted, no repeats."""
    from medsage.data_pipeline.dedup import list_images

    found: set[str] = set()
    for folder in folders:
        files = list_images([folder])
        embedded = [p for pq_file in sorted(Path(folder).rglob("*.parquet"))
                    for p in parquet_images(pq_file, Path(cache_dir))]
        if not files and not embedded:
            warnings.warn(f"evaluation folder {folder} yields no image (no image file, no image inside a parquet "
                          f"file): the leak check protects nothing from it", NoEvalImagesWarning, stacklevel=2)
        found.update(files, embedded)
    return sorted(found)
