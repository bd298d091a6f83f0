"""Output paths that cannot escape `--out`, atomic writes, and the ordered `<task>.jsonl`."""

from __future__ import annotations

import datetime
import json
import math
import os
import stat
import threading
from pathlib import Path
from types import MappingProxyType

import pytest

from ralph.run.outputs import OrderedJsonl, OutputPathError, safe_output_path, write_atomic


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@pytest.mark.parametrize(
    "rendered", ["a.md", "deep/er/a.md", "./a.md", "x/../a.md", " spaced.md ", "a..b.md"]
)
def test_relative_paths_land_under_the_out_dir(out: Path, rendered: str) -> None:
    target = safe_output_path(out, rendered)
    assert target.is_relative_to(out.resolve())
    assert target.name == rendered.strip().rsplit("/", 1)[-1]


@pytest.mark.parametrize(
    "rendered",
    ["../a.md", "../../etc/passwd", "x/../../a.md", "..", "/etc/passwd", "/tmp/a.md"],
)
def test_paths_that_leave_the_out_dir_are_refused(out: Path, rendered: str) -> None:
    with pytest.raises(OutputPathError, match="output path"):
        safe_output_path(out, rendered)


@pytest.mark.parametrize("rendered", ["", "   ", ".", "./", "x/.."])
def test_empty_paths_and_the_out_dir_itself_are_refused(out: Path, rendered: str) -> None:
    with pytest.raises(OutputPathError):
        safe_output_path(out, rendered)


def test_a_symlink_out_of_the_out_dir_is_refused(out: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "link").symlink_to(elsewhere)
    with pytest.raises(OutputPathError, match="leaves the output directory"):
        safe_output_path(out, "link/a.md")
    (out / "file-link.md").symlink_to(elsewhere / "victim.md")
    with pytest.raises(OutputPathError):
        safe_output_path(out, "file-link.md")


def test_a_symlink_within_the_out_dir_resolves_to_its_target(out: Path) -> None:
    (out / "real").mkdir()
    (out / "alias").symlink_to(out / "real")
    assert safe_output_path(out, "alias/a.md") == (out / "real" / "a.md").resolve()


def test_an_out_dir_reached_through_a_symlink_works(tmp_path: Path, out: Path) -> None:
    via = tmp_path / "via"
    via.symlink_to(out)
    assert safe_output_path(via, "a.md") == out.resolve() / "a.md"


@pytest.mark.parametrize("rendered", ["a\x00b.md", "loop/a.md"])
def test_unusable_paths_are_an_output_error_not_a_crash(out: Path, rendered: str) -> None:
    (out / "loop").symlink_to(out / "loop")
    with pytest.raises(OutputPathError):
        safe_output_path(out, rendered)


def test_a_name_longer_than_file_systems_take_is_refused_before_anything_is_sent(
    out: Path,
) -> None:
    assert safe_output_path(out, "d/" + "n" * 255).name == "n" * 255
    with pytest.raises(OutputPathError, match="has a name of 256 bytes; file systems take"):
        safe_output_path(out, "d/" + "n" * 256)
    with pytest.raises(OutputPathError, match="a name of 256 bytes"):
        safe_output_path(out, "é" * 128 + "/x.md")  # bytes, not characters


def test_write_atomic_takes_the_longest_name_a_file_system_does(out: Path) -> None:
    target = out / ("n" * 255)
    write_atomic(target, "text")
    assert target.read_text() == "text"


def test_write_atomic_writes_through_a_symlink_and_keeps_it(out: Path) -> None:
    (out / "real.json").write_text("old")
    (out / "link.json").symlink_to("real.json")
    write_atomic(out / "link.json", "new")
    assert (out / "link.json").is_symlink()
    assert (out / "real.json").read_text() == "new"


def test_write_atomic_writes_into_a_fifo_instead_of_replacing_it(out: Path) -> None:
    fifo = out / "pipe.json"
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()
    write_atomic(fifo, "through the pipe")
    reader.join(timeout=10)
    assert received == ["through the pipe"]
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_write_atomic_to_a_folder_names_the_folder(out: Path) -> None:
    (out / "summary").mkdir()
    with pytest.raises(IsADirectoryError) as caught:
        write_atomic(out / "summary", "text")
    assert caught.value.filename == str(out / "summary")
    assert not list(out.rglob("*.tmp"))


def test_write_atomic_creates_folders_and_leaves_no_temp_file(out: Path) -> None:
    target = out / "a" / "b" / "answer.md"
    write_atomic(target, "héllo\n")
    assert target.read_text("utf-8") == "héllo\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["answer.md"]


def test_write_atomic_replaces_content_whole(out: Path) -> None:
    target = out / "answer.md"
    target.write_text("an old and much longer answer\n" * 100)
    write_atomic(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in out.iterdir()] == ["answer.md"]


def test_write_atomic_gives_outputs_ordinary_permissions(out: Path) -> None:
    write_atomic(out / "atomic.md", "x")
    (out / "plain.md").write_text("x")
    mode = stat.S_IMODE((out / "atomic.md").stat().st_mode)
    assert mode == stat.S_IMODE((out / "plain.md").stat().st_mode)


def test_a_failed_write_leaves_the_old_file_and_no_temp(out: Path) -> None:
    target = out / "answer.md"
    target.write_text("old")
    with pytest.raises(UnicodeEncodeError):
        write_atomic(target, "half \udcff")  # a lone surrogate cannot be encoded
    assert target.read_text() == "old"
    assert [p.name for p in out.iterdir()] == ["answer.md"]


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def test_jsonl_lines_follow_item_order_whatever_order_they_finish_in(out: Path) -> None:
    target = out / "task.jsonl"
    jsonl = OrderedJsonl(target)
    for index in range(5):
        jsonl.expect(index)  # taken in item order
    for index in (3, 1, 4, 0, 2):  # finished in any
        jsonl.add(index, {"index": index, "answer": f"a{index}"})
    jsonl.close()
    assert [r["index"] for r in _records(target)] == [0, 1, 2, 3, 4]


def test_jsonl_skips_items_without_a_record(out: Path) -> None:
    target = out / "task.jsonl"
    jsonl = OrderedJsonl(target)
    for index in range(3):
        jsonl.expect(index)
    jsonl.add(2, {"index": 2})
    jsonl.add(1, None)  # never started
    jsonl.add(0, {"index": 0, "answer": "ünï"})
    jsonl.close()
    assert _records(target) == [{"index": 0, "answer": "ünï"}, {"index": 2}]


def test_jsonl_writes_what_is_held_back_behind_a_gap_on_close(out: Path) -> None:
    target = out / "task.jsonl"
    jsonl = OrderedJsonl(target)
    for index in range(6):
        jsonl.expect(index)
    jsonl.add(5, {"index": 5})
    jsonl.add(0, {"index": 0})
    jsonl.add(2, {"index": 2})  # 1, 3 and 4 never came: a limit stopped the run
    jsonl.close()
    assert [r["index"] for r in _records(target)] == [0, 2, 5]


def test_a_shards_lines_are_written_as_they_come_not_held_to_the_end(out: Path) -> None:
    # a shard takes every other index: none waits for the indexes other shards take
    jsonl = OrderedJsonl(out / "task.jsonl")
    for index in range(1, 2000, 2):
        jsonl.expect(index)
        jsonl.add(index, {"index": index, "text": "x" * 100})
    assert (out / "task.jsonl.part").stat().st_size > 50_000
    jsonl.close()
    assert len(_records(out / "task.jsonl")) == 1000


def test_jsonl_is_published_on_close_only(out: Path) -> None:
    target = out / "task.jsonl"
    part = out / "task.jsonl.part"
    jsonl = OrderedJsonl(target)
    jsonl.add(0, {"index": 0})
    assert not target.exists()
    assert part.exists()
    jsonl.close()
    assert _records(target) == [{"index": 0}]
    assert not part.exists()
    jsonl.close()  # closing twice is harmless
    assert _records(target) == [{"index": 0}]


def test_jsonl_keeps_the_previous_run_until_close(out: Path) -> None:
    target = out / "task.jsonl"
    target.write_text('{"index": 0, "answer": "old"}\n')
    jsonl = OrderedJsonl(target)
    jsonl.add(0, {"index": 0, "answer": "new"})
    assert _records(target) == [{"index": 0, "answer": "old"}]
    jsonl.close()
    assert _records(target) == [{"index": 0, "answer": "new"}]
    assert sorted(p.name for p in out.iterdir()) == ["task.jsonl"]


def test_jsonl_records_with_odd_values_are_still_lines(out: Path) -> None:
    target = out / "nested" / "task.jsonl"
    jsonl = OrderedJsonl(target)
    jsonl.add(0, {"index": 0, "when": Path("x"), "text": "two\nlines"})
    jsonl.close()
    assert _records(target) == [{"index": 0, "when": "x", "text": "two\nlines"}]


ODD = {
    "when": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
    "day": datetime.date(2024, 1, 2),
    "nan": math.nan,
    "inf": -math.inf,
    "text": "café",
    "inline": MappingProxyType({"x": math.inf}),
}


@pytest.mark.parametrize(
    "extra",
    [{}, {"big": 2**70}, {"keys": {1: "one"}}, {"lone": "\ud800"}],
    ids=["orjson", "big-int", "int-key", "surrogate"],
)
def test_jsonl_lines_read_the_same_whichever_serialiser_wrote_them(
    out: Path, extra: dict[str, object]
) -> None:
    """orjson writes most lines; those it refuses go through the json module, which must
    write what orjson would: compact, UTF-8, NaN and infinities as null, dates as str()."""
    target = out / "task.jsonl"
    jsonl = OrderedJsonl(target)
    jsonl.add(0, {**ODD, **extra})
    jsonl.close()
    raw = target.read_text("utf-8")
    assert raw.startswith('{"when":"2024-01-02 03:04:05+00:00","day":"2024-01-02","nan":null,')
    assert '"text":"café"' in raw and '"inline":{"x":null}' in raw
    record = json.loads(raw)
    assert record["inf"] is None and record["day"] == "2024-01-02"
    if extra:
        assert record == json.loads(json.dumps({**_plain_odd(), **extra}))


def _plain_odd() -> dict[str, object]:
    return {
        **ODD,
        "when": str(ODD["when"]),
        "day": "2024-01-02",
        "nan": None,
        "inf": None,
        "inline": {"x": None},
    }
