"""The retrieve's instance writer counts exactly what the import of a series sees."""
from cno_annotate.pacs.retrieve import _Writer

SERIES = "1.2.3.4"


def test_an_instance_arriving_after_its_series_ended_is_neither_written_nor_counted(tmp_path):
    seen = []
    writer = _Writer(tmp_path, lambda received, expected: seen.append(received), expected=2)
    writer.open()
    writer(SERIES, "1.2.3.4.1", b"first")
    writer.close()  # the fetch of the series returned (cancelled); its import runs next
    writer(SERIES, "1.2.3.4.2", b"late")  # a C-MOVE storage thread that outlived the cancel
    assert writer.received == 1 and seen == [1]
    assert sorted(p.name for p in (tmp_path / SERIES).iterdir()) == ["1.2.3.4.1.dcm"]


def test_instances_are_written_again_once_the_next_series_opens(tmp_path):
    writer = _Writer(tmp_path, None, expected=2)
    writer.open()
    writer(SERIES, "1.2.3.4.1", b"a")
    writer.close()
    writer.open()
    writer(SERIES, "1.2.3.4.2", b"b")
    assert writer.received == 2 and len(list((tmp_path / SERIES).glob("*.dcm"))) == 2
