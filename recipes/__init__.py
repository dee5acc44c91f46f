"""medsage.recipes"""
