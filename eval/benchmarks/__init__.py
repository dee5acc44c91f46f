"""eval.benchmarks"""
