"""launch.demo"""
