"""The demo: the whole continuous-delivery loop on one machine (`cd4ml demo`, benchmarks/loop.py)."""
