"""The CLI's record readers: formats, encodings, and random bytes that must give an answer or a clear error."""

from __future__ import annotations

import pytest

from fewshot.cli.records import decode, label_column, parse_records, read_records, text_column, unique_name
from fewshot.errors import FewShotError, InputError


def test_csv_tsv_jsonl_and_txt(tmp_path):
    (tmp_path / "a.csv").write_text('text,label\n"hello, world",greet\nbye,leave\n')
    assert read_records(str(tmp_path / "a.csv")) == [
        {"text": "hello, world", "label": "greet"},
        {"text": "bye", "label": "leave"},
    ]
    (tmp_path / "a.tsv").write_text("text\tlabel\nhi there\tgreet\n")
    assert read_records(str(tmp_path / "a.tsv"))[0] == {"text": "hi there", "label": "greet"}
    (tmp_path / "a.jsonl").write_text('{"text": "x", "label": 1}\n\n{"text": "y", "label": 2}\n')
    assert [r["label"] for r in read_records(str(tmp_path / "a.jsonl"))] == [1, 2]
    (tmp_path / "a.txt").write_text("one\n\ntwo\n")
    assert read_records(str(tmp_path / "a.txt")) == [{"text": "one"}, {"text": "two"}]


def test_records_split_at_line_ends_only_not_at_unicode_separators(tmp_path):
    import json

    line = json.dumps({"text": "a\u2028b"}, ensure_ascii=False)  # JSON may write U+2028 raw inside a string
    (tmp_path / "sep.jsonl").write_text(line + '\r\n{"text": "c"}\n')
    assert [r["text"] for r in read_records(str(tmp_path / "sep.jsonl"))] == ["a\u2028b", "c"]
    (tmp_path / "sep.txt").write_bytes("one\x85 two\x0cthree\r\nfour\rfive\n".encode("latin-1"))
    texts = [r["text"] for r in read_records(str(tmp_path / "sep.txt"), encoding="latin-1")]
    assert texts == ["one\x85 two\x0cthree", "four", "five"]  # U+0085 (cp1252's ellipsis) and a form feed stay


def test_encodings_byte_order_marks_and_long_fields(tmp_path):
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncafé crème,food\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"latin.csv is not valid utf-8.*--encoding"):
        read_records(str(latin))
    assert read_records(str(latin), encoding="latin-1")[0]["text"] == "café crème"
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufefftext,label\nhi,greet\n".encode())
    assert list(read_records(str(bom))[0]) == ["text", "label"]  # the mark is not part of the first name
    big = tmp_path / "big.csv"
    big.write_text("text,label\n" + '"' + "word " * 60_000 + '",long\n')  # a 300 KB field
    assert len(read_records(str(big))[0]["text"]) == 300_000
    with pytest.raises(InputError, match="unknown encoding"):
        decode(b"x", "f", "no-such-codec")


def test_bad_records_name_the_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "ok"}\n[1, 2]\n')
    with pytest.raises(InputError, match="bad.jsonl line 2: expected a JSON object"):
        read_records(str(p))
    p.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(InputError, match="line 2: not valid JSON"):
        read_records(str(p))
    with pytest.raises(InputError, match="holds no records"):
        parse_records("\n\n", "txt", "empty.txt")
    with pytest.raises(InputError, match="more fields than the header"):
        parse_records("a,b\n1,2,3\n", "csv", "x.csv")
    # a quote that never closes would swallow the rest of the file into one record, with no error
    text = 'text,id\n"hello, there",1\n"never closed,2\nplain,3\nmore,4\n'
    with pytest.raises(InputError, match="x.csv: the record starting on line 3 opens a quote that is never closed"):
        parse_records(text, "csv", "x.csv")
    assert len(parse_records(text.replace('"never', '"never"'), "csv", "x.csv")) == 4
    assert parse_records('t\n"two\nlines"\n', "csv", "x.csv") == [{"t": "two\nlines"}]  # closed on a later line
    with pytest.raises(InputError, match="file.xyz: no such file or folder"):  # a typo, not a format to name
        read_records(str(tmp_path / "file.xyz"))
    (tmp_path / "file.xyz").write_text("a line\n")
    with pytest.raises(InputError, match="cannot tell the format"):
        read_records(str(tmp_path / "file.xyz"))


def test_label_and_text_columns():
    rows = [{"t": "a", "y": "x"}, {"t": "b", "y": ""}]
    with pytest.raises(InputError, match="record 2 has an empty 'y'"):
        label_column(rows, "y", "f.csv")
    with pytest.raises(InputError, match="mixes int and str"):
        label_column([{"y": 1}, {"y": "one"}], "y", "f.jsonl")
    assert label_column([{"y": 1}, {"y": 2.0}], "y", "f.jsonl") == [1, 2.0]
    with pytest.raises(InputError, match="record 1 has an empty or non-text 't'"):
        text_column([{"t": 5}], "t", "f.jsonl")
    with pytest.raises(InputError, match="record 2 has no visible character in 't'"):
        text_column([{"t": "a"}, {"t": "\u200b\u200b"}], "t", "f.jsonl")
    assert unique_name("label", {"label", "label_2"}) == "label_3" and unique_name("p", set()) == "p"


hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


@hypothesis.settings(max_examples=300, deadline=None, derandomize=True)
@hypothesis.given(
    data=st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(lambda t: t.encode("utf-8")),
        st.lists(st.lists(st.text(max_size=8), max_size=4), max_size=6).map(
            lambda rows: "\n".join(",".join(r) for r in rows).encode("utf-8")
        ),
        st.lists(
            st.dictionaries(st.text(max_size=4), st.one_of(st.none(), st.integers(), st.text(max_size=5)), max_size=3),
            max_size=4,
        ).map(lambda rows: "\n".join(__import__("json").dumps(r) for r in rows).encode("utf-8")),
    ),
    fmt=st.sampled_from(["csv", "jsonl", "txt"]),
    encoding=st.sampled_from(["utf-8", "latin-1", "utf-16", "ascii"]),
    column=st.sampled_from(["text", "label", ""]),
)
def test_random_bytes_give_records_or_a_clear_error(data, fmt, encoding, column):
    try:
        rows = parse_records(decode(data, "input", encoding), fmt, "input")
        assert rows and all(isinstance(r, dict) for r in rows)
        if column:
            text_column(rows, column, "input")
            label_column(rows, column, "input")
    except FewShotError as exc:
        assert str(exc) and "input" in str(exc) or "encoding" in str(exc)
