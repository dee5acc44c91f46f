"""plugins.engines"""
