"""An adapter option a source does not take fails before anything is read or written, naming the source,
the closest option and the options it takes (``medsage data ingest --option``, ``sources.N.options``)."""

from __future__ import annotations

import pytest

from medsage.config import ConfigError
from medsage.data_pipeline.cli import main
from medsage.data_pipeline.run import RunConfig


def test_ingest_with_an_option_the_adapter_does_not_take(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["ingest", "--source", "deeplesion", "--root", str(tmp_path), "--out", str(out),
               "--option", "csv=DL_info.csv", "--option", "split=[test]"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "medsage data ingest: --option: source 'deeplesion' takes no option 'csv', 'split'" in err
    assert "did you mean 'splits' for 'split'?" in err and "(its options: csv_name, splits)" in err
    assert "TypeError" not in err and not out.exists()


def test_a_data_recipes_source_options_are_checked_with_the_sources_index(tmp_path):
    sources = [{"name": "deeplesion", "root": str(tmp_path), "options": {"csv_name": "DL_info.csv"}},
               {"name": "roboflow_coco", "root": str(tmp_path), "options": {"split": ["train"], "modality": "MRI"}}]
    with pytest.raises(ConfigError, match=r"recipes/data/x\.yaml: sources\.1\.options: source 'roboflow_coco' takes "
                                          r"no option 'split'; did you mean 'splits' for 'split'\? "
                                          r"\(its options: splits, modality, name") as err:
        RunConfig.from_dict({"out_dir": str(tmp_path / "o"), "sources": sources}, "recipes/data/x.yaml")
    assert "modality" not in str(err.value).split("takes no option")[1].split(";")[0]  # only the unknown one named
    sources[1]["options"] = {"splits": ["train"], "modality": "MRI"}  # what it does take
    cfg = RunConfig.from_dict({"out_dir": str(tmp_path / "o"), "sources": sources}, "recipes/data/x.yaml")
    assert cfg.sources[1].options == {"splits": ["train"], "modality": "MRI"}
