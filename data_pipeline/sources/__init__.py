"""data_pipeline.sources"""
