"""medsage.data_pipeline"""
