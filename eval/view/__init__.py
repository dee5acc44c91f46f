"""eval.view"""
