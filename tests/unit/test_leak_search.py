"""The leak search used by tests/integration/test_no_leaks.py finds whole values only."""

from __future__ import annotations

import json

from tests.integration.leaks import LeakSearch, raw_values


def test_whole_values_only() -> None:
    search = LeakSearch(["1.2.3.4", "123-45-6789", "2001:db8::1", "dev-ZX81"])
    assert search.find("ip=1.2.3.4, next") == ["1.2.3.4"]
    assert search.find("at 1.2.3.4.") == ["1.2.3.4"]
    for miss in ("11.2.3.45", "1.2.3.45", "01.2.3.4", "1.2.3.4.5", "v1.2.3.4"):
        assert search.find(miss) == [], miss
    assert search.find('"123-45-6789"') == ["123-45-6789"]
    assert search.find("0123-45-67890") == search.find("x123-45-6789") == []
    assert search.find("[2001:db8::1]") == ["2001:db8::1"]
    assert search.find("2001:db8::12") == []
    assert search.find("token k1.0f3e and dev-ZX81") == ["dev-ZX81"]


def test_escaped_forms_are_found() -> None:
    value = 'dév\n"x"'
    search = LeakSearch([value])
    assert search.find(json.dumps({"v": value})) == [value]
    assert search.find(json.dumps({"v": value}, ensure_ascii=False)) == [value]
    assert search.find(repr(value)) == [value]


def test_bytes_search_for_ciphertexts() -> None:
    search = LeakSearch(["192.0.2.55", "1.2.3"])
    assert search.find_bytes(b"\x00\x01192.0.2.55\xff") == ["192.0.2.55"]
    assert search.find_bytes(b"1.2.3") == []  # too short to be telling in random bytes


def test_raw_values_from_any_shape_of_body() -> None:
    assert raw_values('{"ip": "192.0.2.1", "device_id": "111-22-3333"}') == {
        "192.0.2.1",
        "111-22-3333",
    }
    assert raw_values("{'ip': '2001:db8::5', 'device_id': 'dev-xyz'}") == {"2001:db8::5", "dev-xyz"}
    assert raw_values('[{"device_id": ["abc-def-1"]}]') == {"abc-def-1"}
    assert raw_values("garbage 192.0.2.9 and 123-45-6789 and fe80::1") == {
        "192.0.2.9",
        "123-45-6789",
        "fe80::1",
    }
    assert raw_values('{"ip": "", "device_id": "x"}') == set()
