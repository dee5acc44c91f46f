"""data_pipeline.synthesis.synthesizers"""
