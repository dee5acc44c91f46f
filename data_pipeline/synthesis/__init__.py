"""data_pipeline.synthesis"""
