"""eval.backends"""
