"""medsage.eval"""
