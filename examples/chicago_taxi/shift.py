"""Writes a shifted copy of a taxi CSV: the data a drift check is there to catch.

Fares are multiplied by ``--fare-factor`` (1.5: a fare increase) and every ``--every``-th
trip's payment type becomes ``--new-payment`` (a payment type the model never saw). Every
other value is copied as it is, so only these two columns move.

    python -m examples.chicago_taxi.shift examples/chicago_taxi/data/sample.csv -o shifted.csv
"""

from __future__ import annotations

import argparse
import csv
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
    """
    with (
        open(source, newline="", encoding="utf-8") as f,
        open(output, "w", newline="", encoding="utf-8") as out,
    ):
        reader = csv.DictReader(f)
        writer = csv.DictWriter(out, fieldnames=reader.fieldnames or [], lineterminator="\n")
        writer.writeheader()
        n = 0
        for n, row in enumerate(reader, start=1):
            if row["fare"]:
                row["fare"] = f"{float(row['fare']) * fare_factor:.2f}"
            if n % every == 0:
                row["payment_type"] = new_payment
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
    n = shift(
        args.source,
        args.output,
        fare_factor=args.fare_factor,
        new_payment=args.new_payment,
        every=args.every,
    )
    print(
        f"{args.output}: {n:,} trips, fares x{args.fare_factor:g}, "
        f"payment type {args.new_payment!r} on one in {args.every}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
