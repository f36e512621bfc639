"""Frame folders (training/frames.py): DAVIS-style and plain layouts, several roots with their own
sequence lists, and old run configs that named one root."""

from __future__ import annotations

import shutil

import pytest
from test_training_evaluate import write_fake_davis

from training.frames import DataSource, list_sequences, list_sources
from training.train import TrainConfig


def test_data_source_parsing():
    assert DataSource.parse("../shared/data/davis2016:train") == DataSource("../shared/data/davis2016", ("train",))
    assert DataSource.parse("/data/d:train,val-dev") == DataSource("/data/d", ("train", "val-dev"))
    assert DataSource.parse("/data/plain") == DataSource("/data/plain")
    assert DataSource.parse("./a:b/c") == DataSource("./a:b/c")  # a colon inside a path is not a split
    assert str(DataSource("/d", ("train", "x"))) == "/d:train,x"


def test_several_roots_each_with_its_own_list(tmp_path):
    first = write_fake_davis(tmp_path / "first", sequences=("alpha", "beta", "gamma"), frames=3,
                             splits={"train": ["alpha", "gamma"], "val-dev": ["beta"]})
    second = write_fake_davis(tmp_path / "second", sequences=("delta", "epsilon"), frames=4,
                              splits={"test-dev": ["epsilon"]})
    videos = list_sources([f"{first}:train", f"{second}:test-dev"])
    assert [v.name for v in videos] == ["alpha", "gamma", "epsilon"]
    assert [len(v) for v in videos] == [3, 3, 4]
    # a root without splits contributes every sequence folder
    assert [v.name for v in list_sources([str(second)])] == ["delta", "epsilon"]
    with pytest.raises(FileNotFoundError, match="split file"):
        list_sources([f"{second}:train"])


def test_a_plain_folder_of_frame_folders_is_a_source(tmp_path):
    davis = write_fake_davis(tmp_path / "davis", sequences=("alpha", "beta"), frames=3)
    plain = tmp_path / "plain"
    for name in ("clip-a", "clip-b"):
        shutil.copytree(davis / "JPEGImages" / "240p" / ("alpha" if name == "clip-a" else "beta"), plain / name)
    videos = list_sequences(plain)
    assert [v.name for v in videos] == ["clip-a", "clip-b"] and all(len(v) == 3 for v in videos)
    assert videos[0].read(0).shape == (48, 64, 3)
    with pytest.raises(FileNotFoundError):
        list_sequences(tmp_path / "absent")


def test_a_sequence_name_in_two_roots_is_refused(tmp_path):
    one = write_fake_davis(tmp_path / "one", sequences=("alpha",), frames=3)
    two = write_fake_davis(tmp_path / "two", sequences=("alpha",), frames=3, seed=1)
    with pytest.raises(ValueError, match="alpha"):
        list_sources([str(one), str(two)])


def test_default_training_data_leave_val_dev_unseen():
    config = TrainConfig()
    assert all("val" not in split for source in config.data for split in DataSource.parse(source).splits)
    assert any("davis2017-testdev" in source for source in config.data)


def test_old_run_configs_with_one_root_still_load():
    old = TrainConfig.from_dict({"data_root": "/d/davis2016", "splits": ["train", "val-dev"], "width": 16})
    assert old.data == ["/d/davis2016:train,val-dev"] and old.eval_data == "/d/davis2016" and old.width == 16
    assert TrainConfig.from_dict({"data_root": "/plain"}).data == ["/plain"]
