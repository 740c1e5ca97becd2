#!/usr/bin/env python3
"""Write a sipp injection file of N users: field0 user, field1 password.

Usage: gen-users.py N [--password secret] [--prefix u] [--start 1] > users.csv
User names are PREFIX + zero-padded index (u00001 ...), sequential order.
"""
import argparse

p = argparse.ArgumentParser()
p.add_argument("n", type=int)
p.add_argument("--password", default="secret")
p.add_argument("--prefix", default="u")
p.add_argument("--start", type=int, default=1)
a = p.parse_args()
width = max(5, len(str(a.start + a.n - 1)))
print("SEQUENTIAL")
for i in range(a.start, a.start + a.n):
    print(f"{a.prefix}{i:0{width}d};{a.password};")
