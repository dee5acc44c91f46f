"""medsage.launch"""
