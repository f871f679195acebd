"""CSV layout: the spec's options and the bytes that delimit records."""

from __future__ import annotations

import codecs
import dataclasses

__all__ = ["CsvOptions", "Dialect"]


@dataclasses.dataclass
class CsvOptions:
    """How CSV files are laid out.

    Attributes:
        delimiter: Field separator, one ASCII character.
        quote_char: Quote character, or None for no quoting. Doubled quotes inside a quoted
            value stand for one quote; a quote inside an unquoted value is a literal quote.
        escape_char: Escape character (makes the next character literal), or None.
        header: Whether the first record (after ``skip_rows``) holds the column names.
        column_names: Names of the file's columns when ``header`` is false; defaults to the
            schema's order.
        null_values: Field values read as null (for every column type).
        encoding: Text encoding; must keep ``\\n`` a single byte (utf-8, latin-1, cp1252...).
        skip_rows: Lines skipped at the start of each file, before the header.
        max_record_bytes: Largest record read; a longer one is rejected as one error record
            (``record_too_large``), and so is a quote not closed within this many bytes
            (``unterminated_quote``). Bounds a reader's memory.
    """

    delimiter: str = ","
    quote_char: str | None = '"'
    escape_char: str | None = None
    header: bool = True
    column_names: list[str] | None = None
    null_values: list[str] = dataclasses.field(default_factory=lambda: [""])
    encoding: str = "utf-8"
    skip_rows: int = 0
    max_record_bytes: int = 16 << 20

    def validate(self) -> None:
        """Checks the options; raises ValueError saying how to fix them."""
        for name in ("delimiter", "quote_char", "escape_char"):
            value = getattr(self, name)
            if value is not None and (len(value) != 1 or not value.isascii()):
                raise ValueError(f"csv.{name} must be a single ASCII character, got {value!r}")
            if value in ("\n", "\r"):
                raise ValueError(f"csv.{name} cannot be a newline, got {value!r}")
        specials = [c for c in (self.delimiter, self.quote_char, self.escape_char) if c]
        if len(set(specials)) != len(specials):
            raise ValueError(
                "csv.delimiter, csv.quote_char and csv.escape_char must differ, got "
                f"{self.delimiter!r}, {self.quote_char!r} and {self.escape_char!r}"
            )
        if self.skip_rows < 0:
            raise ValueError(f"csv.skip_rows must be >= 0, got {self.skip_rows}")
        if self.max_record_bytes < 1024:
            raise ValueError(
                f"csv.max_record_bytes must be at least 1024, got {self.max_record_bytes}"
            )
        try:
            codec = codecs.lookup(self.encoding)
        except LookupError:
            raise ValueError(f"csv.encoding {self.encoding!r} is not a known encoding") from None
        if "\n".encode(codec.name) != b"\n":
            raise ValueError(
                f"csv.encoding {self.encoding!r} is not supported: use an encoding in which a"
                " newline is one byte (utf-8, latin-1, cp1252, ...)"
            )
        if self.column_names is not None and len(set(self.column_names)) != len(self.column_names):
            raise ValueError(f"csv.column_names has duplicates: {self.column_names}")


@dataclasses.dataclass(frozen=True)
class Dialect:
    """The bytes that delimit records."""

    delimiter: int
    quote: int | None
    escape: int | None

    @classmethod
    def of(cls, opts: CsvOptions) -> Dialect:
        return cls(
            delimiter=ord(opts.delimiter),
            quote=ord(opts.quote_char) if opts.quote_char else None,
            escape=ord(opts.escape_char) if opts.escape_char else None,
        )
