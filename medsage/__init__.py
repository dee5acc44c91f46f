"""medsage: structured medical visual reasoning (LVKC)."""
__version__ = "0.1.0"
