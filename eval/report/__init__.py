"""eval.report"""
