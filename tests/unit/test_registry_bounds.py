"""What a registry file may cost to read: aliases are counted as what they stand for, a refusal
lists a bounded number of errors, and a file is read no further than the size bound even when
it has no size (a pipe). (Found in review.)"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tracker.cli import app
from tracker.registry import (
    MAX_ERRORS_LISTED,
    MAX_FILE_BYTES,
    MAX_NODES,
    RegistryError,
    load,
    parse,
)


def merges(levels: int) -> str:
    """Each level merges the one below twice: 644 bytes took 16.5 s and 560 MB before."""
    lines = ["l0: &l0 {a0: 1, b0: 2}"]
    lines += [f"l{i}: &l{i} {{<<: [*l{i - 1}, *l{i - 1}]}}" for i in range(1, levels)]
    return "\n".join(lines)


def aliases(width: int, levels: int) -> str:
    """Lists of aliases to the list below, under `agencies`, which validation walks."""
    lines = ["agencies:", f"- &a0 [{', '.join(['1'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"- &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    return "\n".join(lines)


@pytest.mark.parametrize(("text", "line"), [(merges(22), 19), (aliases(200, 4), 4)])
def test_aliases_that_grow_the_document_are_refused_before_it_is_built(
    text: str, line: int
) -> None:
    assert len(text) < 4096
    started = time.monotonic()
    with pytest.raises(RegistryError) as info:
        parse(text, "bomb.yaml")
    assert time.monotonic() - started < 1.0
    [(where, reason)] = info.value.errors
    assert where.startswith(f"line {line},"), where
    assert f"more than {MAX_NODES} nodes" in reason


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    with pytest.raises(RegistryError) as info:
        parse("agencies: &a [1, *a]", "loop.yaml")
    assert "an alias inside its own anchor" in info.value.errors[0][1]


def test_anchors_used_as_meant_still_read_as_written_out() -> None:
    text = load()[1]
    data = yaml.safe_load(text)
    # Regions of one provider list share one list object, which safe_dump writes as an anchor
    # and aliases; the second facility is written as a merge of the first with its own keys.
    shared: dict[tuple[str, ...], list[str]] = {}
    for region in data["regions"]:
        region["providers"] = shared.setdefault(tuple(region["providers"]), region["providers"])
    anchored = yaml.safe_dump(data, sort_keys=False)
    assert "&id" in anchored and "*id" in anchored
    first, second = data["facilities"][:2]
    assert set(first) == set(second)
    block = yaml.safe_dump([second], sort_keys=False)
    assert block in anchored
    anchored = anchored.replace("facilities:\n- id:", "facilities:\n- &first\n  id:", 1)
    anchored = anchored.replace(block, "- <<: *first\n  " + block[2:], 1)
    assert "<<: *first" in anchored
    assert parse(anchored, "anchored.yaml").version == parse(text, "plain.yaml").version


def test_a_refusal_lists_a_bounded_number_of_errors() -> None:
    # A 2 MiB body of repeated mistakes answered 113 MB of errors.
    data = yaml.safe_load(load()[1])
    data["agencies"] += [{"id": f"a{i}", "name": "x", "sector": "finance", "bad": i}
                         for i in range(5000)]  # fmt: skip
    text = yaml.safe_dump(data, sort_keys=False)
    with pytest.raises(RegistryError) as info:
        parse(text, "many.yaml")
    assert info.value.total >= 5000
    assert len(info.value.errors) == MAX_ERRORS_LISTED + 1
    assert info.value.errors[-1] == (
        "...", f"{info.value.total - MAX_ERRORS_LISTED} more error(s) not listed: fix these "
        "and check again")  # fmt: skip
    assert len(str(info.value)) < 20_000


def test_a_long_path_or_reason_is_cut() -> None:
    with pytest.raises(RegistryError) as info:
        parse(f"? {'k' * 100_000}\n: 1", "long.yaml")  # `?`: a key of any length
    assert any(p.startswith("kkk") for p, _ in info.value.errors)
    assert all(len(p) <= 520 and len(r) <= 520 for p, r in info.value.errors)


def test_a_pipe_is_read_no_further_than_the_bound(tmp_path: Path) -> None:
    # The bound was st_size, which a pipe does not have: it was read whole.
    fifo = tmp_path / "registry.fifo"
    os.mkfifo(fifo)
    written: list[int] = []

    def feed() -> None:
        chunk = b"# " + b"x" * 65_534 + b"\n"
        try:
            with fifo.open("wb") as f:
                for _ in range(64):  # 4 MiB
                    f.write(chunk)
                    written.append(len(chunk))
        except BrokenPipeError:
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    with pytest.raises(RegistryError) as info:
        load(fifo)
    writer.join(timeout=10)
    assert info.value.errors == [("file", f"over {MAX_FILE_BYTES} bytes")]
    assert sum(written) < 4 * 1024 * 1024


def test_a_file_with_windows_newlines_is_stored_as_text_mode_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "crlf.yaml"
    path.write_bytes(load()[1].replace("\n", "\r\n").encode())
    registry, text = load(path)
    assert "\r" not in text and text == load()[1]
    assert registry.version == load()[0].version


def test_registry_check_shows_the_count_and_the_first_errors(tmp_path: Path) -> None:
    data = yaml.safe_load(load()[1])
    data["agencies"] += [{"id": f"a{i}", "bad": i} for i in range(300)]
    path = tmp_path / "many.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = CliRunner().invoke(app, ["registry", "check", str(path)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith(f"{path}:")]
    assert len(lines) == MAX_ERRORS_LISTED + 1
    assert "more error(s) not listed" in lines[-1]
    assert "refused, " in result.output and " error(s):" in result.output
