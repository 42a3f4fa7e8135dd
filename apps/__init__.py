"""The Python apps the course's servers serve (labs, tests and benchmarks)."""
