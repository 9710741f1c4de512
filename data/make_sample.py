"""Regenerate the sample data in data/ (deterministic): customers and orders, two versions.

v1 -> v2 of customers: 12 customers change (email, plan or lifetime value), 3 leave, 5 join.
v1 -> v2 of orders: 40 new orders, 10 orders change status (updated_at moves on).
Run: python data/make_sample.py
"""

from __future__ import annotations

import pathlib
import random
from datetime import datetime, timedelta

import polars as pl

HERE = pathlib.Path(__file__).parent
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken", "Frances", "John",
         "Radia", "Guido", "Hedy", "Linus", "Sophie", "Tim", "Katherine", "Niklaus", "Anita", "Dennis"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Hamilton", "Thompson", "Allen",
        "McCarthy", "Perlman", "van Rossum", "Lamarr", "Torvalds", "Wilson", "Berners-Lee", "Johnson",
        "Wirth", "Borg", "Ritchie"]
PLANS = ["free", "starter", "pro", "enterprise"]
COUNTRIES = ["DE", "FR", "GB", "US", "BR", "IN", "JP", "NG", "SE", "ES"]


def customers(rng: random.Random, n: int) -> list[dict]:
    rows = []
    base = datetime(2026, 1, 1)
    for i in range(1, n + 1):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        rows.append({
            "customer_id": i,
            "first_name": first,
            "last_name": last,
            "email": f"{first}.{last}{i}@example.com".lower().replace(" ", ""),
            "plan": rng.choice(PLANS),
            "country": rng.choice(COUNTRIES),
            "lifetime_value": round(rng.uniform(0, 5000), 2),
            "signed_up_at": base + timedelta(days=rng.randint(0, 300), minutes=rng.randint(0, 1440)),
        })
    return rows


def main() -> None:
    rng = random.Random(42)
    v1 = customers(rng, 200)
    pl.DataFrame(v1).write_parquet(HERE / "customers_v1.parquet")
    v2 = [dict(r) for r in v1]
    for r in rng.sample(v2, 12):
        r["plan"] = rng.choice(PLANS)
        r["lifetime_value"] = round(r["lifetime_value"] + rng.uniform(10, 500), 2)
    gone = {r["customer_id"] for r in rng.sample(v2, 3)}
    v2 = [r for r in v2 if r["customer_id"] not in gone]
    extra = customers(random.Random(7), 5)
    for j, r in enumerate(extra):
        r["customer_id"] = 201 + j
        r["email"] = r["email"].replace("@", f".{201 + j}@")
    v2 += extra
    pl.DataFrame(v2).write_parquet(HERE / "customers_v2.parquet")

    orders = []
    t0 = datetime(2026, 6, 1)
    for i in range(1, 501):
        created = t0 + timedelta(minutes=37 * i)
        orders.append({
            "order_id": 10_000 + i,
            "customer_id": rng.randint(1, 200),
            "amount": round(rng.uniform(5, 900), 2),
            "currency": rng.choice(["EUR", "USD", "GBP"]),
            "status": "placed",
            "updated_at": created,
        })
    pl.DataFrame(orders).write_csv(HERE / "orders_v1.csv")
    later = [dict(r) for r in orders]
    t1 = t0 + timedelta(days=20)
    for k, r in enumerate(rng.sample(later, 10)):
        r["status"] = rng.choice(["shipped", "refunded"])
        r["updated_at"] = t1 + timedelta(minutes=k)
    for i in range(501, 541):
        later.append({
            "order_id": 10_000 + i, "customer_id": rng.randint(1, 205), "amount": round(rng.uniform(5, 900), 2),
            "currency": "EUR", "status": "placed", "updated_at": t1 + timedelta(hours=1, minutes=i),
        })
    pl.DataFrame(later).write_csv(HERE / "orders_v2.csv")


if __name__ == "__main__":
    main()
