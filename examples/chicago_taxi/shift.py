"""Writes a shifted copy of a taxi CSV: the data a drift check is there to catch.

Fares are multiplied by ``--fare-factor`` (1.5: a fare increase) and every ``--every``-th
trip's payment type becomes ``--new-payment`` (a payment type the model never saw). Every
other value is copied as it is, so only these two columns move.

    python -m examples.chicago_taxi.shift examples/chicago_taxi/data/sample.csv -o shifted.csv
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Sequence


def shift(
    source: str,
    output: str,
    *,
    fare_factor: float = 1.5,
    new_payment: str = "Mobile Wallet",
    every: int = 5,
) -> int:
    """Copies ``source`` to ``output`` with the fares and payment types shifted.

    Returns:
        The number of trips written.

    Raises:
        ValueError: for ``every`` below 1, an output that is the source, or a source
            without a fare or payment_type column.
        OSError: for a source that cannot be read or an output that cannot be written.
    """
    if every < 1:
        raise ValueError(f"--every must be 1 or more, got {every}")
    if os.path.exists(output) and os.path.samefile(source, output):
        raise ValueError(f"{output}: is the source; give another file to write")
    with (
        open(source, newline="", encoding="utf-8") as f,
        open(output, "w", newline="", encoding="utf-8") as out,
    ):
        reader = csv.reader(f)
        writer = csv.writer(out, lineterminator="\n")
        header = next(reader, [])
        missing = [c for c in ("fare", "payment_type") if c not in header]
        if missing:
            raise ValueError(f"{source}: has no {' or '.join(missing)} column")
        fare, payment = header.index("fare"), header.index("payment_type")
        writer.writerow(header)
        n = 0
        for n, row in enumerate(reader, start=1):
            # A malformed row is copied as it is, for the pipeline to reject with its line.
            if len(row) == len(header):
                try:
                    if row[fare]:
                        row[fare] = f"{float(row[fare]) * fare_factor:.2f}"
                except ValueError:
                    pass
                if n % every == 0:
                    row[payment] = new_payment
            writer.writerow(row)
    return n


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a taxi CSV file")
    parser.add_argument("-o", "--output", required=True, help="the shifted CSV to write")
    parser.add_argument("--fare-factor", type=float, default=1.5)
    parser.add_argument("--new-payment", default="Mobile Wallet")
    parser.add_argument("--every", type=int, default=5, help="one trip in EVERY gets it")
    args = parser.parse_args(argv)
    try:
        n = shift(
            args.source,
            args.output,
            fare_factor=args.fare_factor,
            new_payment=args.new_payment,
            every=args.every,
        )
    except OSError as exc:
        print(f"error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.output}: {n:,} trips, fares x{args.fare_factor:g}, "
        f"payment type {args.new_payment!r} on one in {args.every}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
