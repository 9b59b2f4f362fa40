"""styleforge.utils.runtime: seed lists kept as ranges, shards (checked, cut without expanding), devices; every
error names the setting, not a command-line flag."""

from __future__ import annotations

import pytest

from styleforge.errors import StyleforgeError
from styleforge.utils.runtime import SeedList, check_shard, parse_int_list, parse_shard, resolve_device, shard_items


def test_seed_list_keeps_ranges_as_ranges():
    seeds = parse_int_list("5,0-99999999,7")
    assert len(seeds) == 100_000_002 and str(seeds) == "5,0-99999999,7"
    assert seeds[0] == 5 and seeds[1] == 0 and seeds[-1] == 7 and seeds[100_000_000] == 99_999_999
    part = shard_items(seeds, (2, 3))  # arithmetic: never expanded
    assert isinstance(part, SeedList) and len(part) == 33_333_334 and str(part) == "66666667-99999999,7"
    assert sum(len(shard_items(seeds, (i, 7))) for i in range(7)) == len(seeds)
    assert list(parse_int_list("3,4-6,9")[1:4]) == [4, 5, 6] and SeedList.of([1, 2, 3, 7]) == [1, 2, 3, 7]
    assert str(SeedList.of([1, 2, 3, 7, 8])) == "1-3,7-8"


@pytest.mark.parametrize("shard", [(2, 2), (-1, 3), (0, 0), ("a", 2), (1,)])
def test_every_tool_refuses_a_shard_outside_its_range(shard):
    """One check for every tool (generate, project and align cut their work with shard_items): a shard outside
    0..n-1 is an error about the setting ``shard``, never a silently empty or partial run."""
    with pytest.raises(StyleforgeError) as e:
        shard_items(list(range(10)), shard)
    assert e.value.param == "shard" and str(e.value).startswith("shard ") and "--" not in str(e.value)
    assert check_shard(["1", 3]) == (1, 3) and shard_items(list(range(10)), (2, 3)) == [7, 8, 9]


def test_errors_name_settings_not_flags():
    for bad in (lambda: parse_shard("5/2"), lambda: parse_shard("x"), lambda: parse_int_list("3-1"),
                lambda: resolve_device("tpu")):
        with pytest.raises(StyleforgeError) as e:
            bad()
        assert e.value.param in ("shard", "seeds", "device") and "--" not in str(e.value), str(e.value)
    with pytest.raises(StyleforgeError, match=r"^shard 5/2: out of range"):
        parse_shard("5/2")
