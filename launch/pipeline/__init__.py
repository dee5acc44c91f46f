"""launch.pipeline"""
