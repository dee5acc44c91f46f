"""plugins.self_check"""
