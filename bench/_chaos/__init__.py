"""Helpers of `./run bench chaos` (bench/chaos.py): the seeded plan, the platform it runs on, the
fault injector, the traffic driver and the end-of-run checks."""
