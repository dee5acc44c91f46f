"""medsage.plugins"""
