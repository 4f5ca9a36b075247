import io

from rich.console import Console

from service.cli.tables import Column, cut_middle, fit, print_table

JOB = "job_019ad0b1c2d3e4f5a6b7c8d9"
MODEL = "mdl_019ad0b1c2d3e4f5a6b7c8d9"
COLUMNS = [Column("id", id=True), Column("status"), Column("epoch", drop=3),
           Column("loss", drop=2, max_width=8), Column("model", id=True, drop=5),
           Column("created", drop=1)]
ROW = [JOB, "succeeded", "10000/10000", "5.90144e+07", MODEL, "12-02 07:34"]


def _printed(width: int, rows: list[list[str]]) -> list[str]:
    out = io.StringIO()
    print_table("jobs", COLUMNS, rows, Console(file=out, width=width))
    return out.getvalue().splitlines()


def test_ids_stay_whole_on_one_line_and_columns_go_instead():
    for width in (80, 60, 40):
        lines = _printed(width, [ROW, ROW])
        assert max(len(line) for line in lines) <= width
        assert sum(JOB in line for line in lines) == 2, (width, lines)
    assert MODEL not in "".join(_printed(80, [ROW]))  # the first to go
    assert MODEL in "".join(_printed(120, [ROW]))


def test_values_are_cut_at_the_end_and_ids_in_the_middle_only_as_a_last_resort():
    shown, cells = fit(COLUMNS, [ROW], 200)
    assert cells[0][3] == "5.90144\u2026"  # max_width 8
    shown, cells = fit(COLUMNS, [ROW], 24)
    assert [c.header for c in shown] == ["id", "status"]
    assert cells[0][0] == cut_middle(JOB, 13) and cells[0][0].startswith("job_0")
    assert cells[0][0].endswith(JOB[-6:])
    assert cut_middle("abcdefghij", 5) == "ab\u2026ij" and cut_middle("abc", 5) == "abc"
