from pathlib import Path

import orjson
import pytest

from agentmill.backends.base import Completion
from agentmill.cache import ResponseCache
from agentmill.errors import UserError
from agentmill.records import Usage
from agentmill.store import FailureLog, JsonlWriter, RunStore, iter_jsonl, repair_torn_tail


def test_torn_last_line_is_cut_and_kept_aside(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    p.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": 3, "b": "tor')
    assert [n for n, _ in iter_jsonl(p)] == [1, 2]  # readers never see the torn line
    w = JsonlWriter(p)
    assert w.repaired == len(b'{"a": 3, "b": "tor')
    w.append(b'{"a": 4}')
    w.close()
    assert [orjson.loads(line)["a"] for _, line in iter_jsonl(p)] == [1, 2, 4]
    assert (tmp_path / "r.jsonl.torn").read_bytes() == b'{"a": 3, "b": "tor\n'


def test_repair_is_a_no_op_on_clean_files(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    p.write_bytes(b'{"a": 1}\n')
    assert repair_torn_tail(p) == 0 and p.read_bytes() == b'{"a": 1}\n'
    one = tmp_path / "one.jsonl"
    one.write_bytes(b'{"no newline at all"')
    assert repair_torn_tail(one) == len(b'{"no newline at all"') and one.read_bytes() == b""


def test_failure_log_does_not_repeat_the_same_failure(tmp_path: Path) -> None:
    log = FailureLog(tmp_path / "f.jsonl")
    log.add("source", "x:3", "invalid_json", "bad")
    log.add("source", "x:3", "invalid_json", "bad")
    log.close()
    again = FailureLog(tmp_path / "f.jsonl")  # a resumed run re-reads the same bad line
    again.add("source", "x:3", "invalid_json", "bad")
    again.add("rollout", "t#0", "http_500", "boom")
    again.close()
    lines = [orjson.loads(x) for _, x in iter_jsonl(tmp_path / "f.jsonl")]
    assert [(d["stage"], d["key"]) for d in lines] == [("source", "x:3"), ("rollout", "t#0")]


def test_a_run_folder_is_locked_against_a_second_process(tmp_path: Path) -> None:
    first = RunStore(tmp_path / "run")
    with pytest.raises(UserError, match="in use by another agentmill process"):
        RunStore(tmp_path / "run")
    first.close()
    RunStore(tmp_path / "run").close()


def test_corrupt_manifest_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="manifest.json is corrupt"):
        RunStore.read_manifest(tmp_path)


def test_cache_round_trip_and_corrupt_file(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")
    c = Completion(
        text="hi", usage=Usage(prompt_tokens=1, completion_tokens=2), model="m", attempts=3
    )
    assert cache.get("k") is None
    cache.put("k", "teacher", c)
    got = cache.get("k")
    assert got == c and (cache.hits, cache.misses, len(cache)) == (1, 1, 1)
    cache.close()
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(UserError, match="delete it or run with --no-cache"):
        ResponseCache(bad)


def test_a_buffered_writer_writes_whole_lines_once_it_holds_enough(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    writer = JsonlWriter(path, buffer=20)
    writer.append(b'{"a": 1}')  # 9 bytes held
    assert path.read_bytes() == b""
    writer.append(b'{"b": 2}')  # 18 held
    writer.append(b'{"c": 3}')  # 27 >= 20: all three go out in one write
    assert path.read_bytes() == b'{"a": 1}\n{"b": 2}\n{"c": 3}\n'
    writer.append(memoryview(b'x{"d": 4}')[1:])  # a view of a worker's chunk
    writer.close()  # what is held is written at close
    assert path.read_bytes().endswith(b'{"c": 3}\n{"d": 4}\n')
    unbuffered = JsonlWriter(path)
    unbuffered.append(memoryview(b'{"e": 5}'))
    unbuffered.close()
    assert path.read_bytes().endswith(b'{"d": 4}\n{"e": 5}\n')


def test_a_buffered_writer_killed_before_a_flush_loses_only_what_it_held(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    path = tmp_path / "out.jsonl"
    code = (
        "import os, sys\nfrom pathlib import Path\nfrom agentmill.store import JsonlWriter\n"
        "w = JsonlWriter(Path(sys.argv[1]), buffer=64)\n"
        'for i in range(10): w.append(b\'{"i": %d, "pad": "xxxxxxxxxx"}\' % i)\n'
        "os._exit(9)\n"  # killed: no close, no flush
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=False)
    lines = [orjson.loads(line)["i"] for _, line in iter_jsonl(path)]
    assert 0 < len(lines) < 10 and lines == list(range(len(lines)))  # whole lines, in order
    assert path.read_bytes().endswith(b"\n")
