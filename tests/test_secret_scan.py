"""The secret scanner itself: a leak it cannot read is a leak it reports as absent."""

import itertools
import sys
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from secret_scan import SecretScanner  # noqa: E402

PASSWORD = "pgPw/!+0123456789abcdef"


def _pdf_with_a_compressed_page(text: bytes, last_byte: int, end_of_line: bytes) -> bytes:
    """A PDF whose page stream is ``text`` deflated, padded with a counter until the stream's last
    byte (an Adler-32 byte: the low byte of the sum of the data's bytes) is ``last_byte``."""
    for n in range(256):
        stream = zlib.compress(text + b" " + bytes([n]))
        if stream[-1] == last_byte:
            return b"%PDF-1.3\n4 0 obj\n<</Filter /FlateDecode>>\nstream\n" + stream + end_of_line + b"endstream\nendobj\n"
    raise AssertionError(f"no padding byte makes the stream end in {last_byte}")


def test_a_compressed_pdf_stream_is_read_even_when_its_data_ends_in_a_carriage_return():
    # fpdf2 ends a stream's data with b"\n"; the PDF standard also allows b"\r\n"
    for last_byte, end_of_line in itertools.product((ord("\r"), ord("\n"), ord("x")), (b"\n", b"\r\n")):
        pdf = _pdf_with_a_compressed_page(b"BT (postgresql://postgres:pgPw%2F%21%2B0123456789abcdef@db) Tj ET",
                                          last_byte, end_of_line)
        scanner = SecretScanner({"postgres_password": PASSWORD})
        scanner.text("s3 object", "s3://b/connection.pdf", pdf)
        assert [(h.secret, h.encoding, h.where) for h in scanner.hits] == [
            ("postgres_password", "url-encoded", "s3://b/connection.pdf (zlib 0)")], (last_byte, end_of_line)
