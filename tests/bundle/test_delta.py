"""Catalogue deltas: typed rows from CSV/JSONL, and every malformed delta refused whole with a clear reason."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from edgerec_sdk.bundle.delta import DELTA_FORMAT, make_delta, parse_delta, read_items_file
from edgerec_sdk.errors import CatalogueError


def wire(columns: dict[str, str], upsert: list[dict[str, object]], delete: list[str] = ()) -> bytes:  # type: ignore[assignment]
    return orjson.dumps({"format": DELTA_FORMAT, "columns": columns, "upsert": upsert, "delete": list(delete)})


def test_csv_rows_are_typed_and_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "items.csv"
    src.write_text("id,title,price,in_stock,attributes,color,weight\n"
                   "B1,Red nail lacquer,9.5,true,gloss|red,red,120\n"
                   "B2,Blue shampoo,,no,,,80.5\n")
    rows = read_items_file(src)
    assert rows[0] == {"id": "B1", "title": "Red nail lacquer", "price": 9.5, "in_stock": True,
                       "attributes": ["gloss", "red"], "color": "red", "weight": 120}
    assert rows[1]["price"] is None and rows[1]["in_stock"] is False and rows[1]["weight"] == 80.5
    delta = make_delta(rows, deletes=["B9"])
    assert delta.columns["weight"] == "number" and delta.columns["color"] == "str"
    back = parse_delta(delta.to_bytes())
    assert back.upserts == delta.upserts and back.deletes == ("B9",)


def test_jsonl_keeps_json_types(tmp_path: Path) -> None:
    src = tmp_path / "items.jsonl"
    src.write_text('{"id": "B1", "title": "gel", "vegan": true, "size_ml": 30}\n\n{"id": "B2", "vegan": null}\n')
    delta = make_delta(read_items_file(src))
    assert dict(delta.columns) == {"size_ml": "number", "title": "str", "vegan": "bool"}


@pytest.mark.parametrize(("raw", "match"), [
    (wire({"title": "str"}, [{"title": "no id"}]), "row 1 has no id"),
    (wire({"title": "str"}, [{"id": "", "title": "empty id"}]), "row 1 has no id"),
    (wire({"colour": "datetime"}, []), "unknown type 'datetime'"),
    (wire({"title": "str"}, [{"id": "a"}, {"id": "a"}]), "appears twice"),
    (wire({}, [{"id": "a"}], ["a"]), "appears twice"),
    (wire({"price": "str"}, []), "always number"),
    (wire({"price": "number"}, [{"id": "a", "price": "cheap"}]), "column 'price' is number"),
    (wire({}, [{"id": "a", "color": "red"}]), "no declared type"),
    (b"[1, 2]", "must be an object"),
    (b"{not json", "not JSON"),
])
def test_malformed_deltas_are_refused(raw: bytes, match: str) -> None:
    with pytest.raises(CatalogueError, match=match) as info:
        parse_delta(raw)
    assert info.value.reason == "bad_delta"


def test_delta_over_the_cap_is_refused_before_parsing(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="over the cap") as info:
        parse_delta(b" " * 2048, max_bytes=1024)
    assert info.value.reason == "too_large"
    big = tmp_path / "big.csv"
    with open(big, "wb") as f:  # sparse: 100 MB on paper, nothing on disk
        f.truncate(100 * 1024 * 1024)
    with pytest.raises(CatalogueError, match="over the cap") as info:
        read_items_file(big)
    assert info.value.reason == "too_large"


def test_csv_cells_that_do_not_parse_name_line_and_column(tmp_path: Path) -> None:
    src = tmp_path / "items.csv"
    src.write_text("id,price\nB1,cheap\n")
    with pytest.raises(CatalogueError, match="line 2: column 'price'"):
        read_items_file(src)
    src.write_text("id,title\n,nameless\n")
    with pytest.raises(CatalogueError, match="row 1 has no id"):
        make_delta(read_items_file(src))
    with pytest.raises(CatalogueError, match="unknown type 'date'"):
        read_items_file(src, column_types={"title": "date"})
